-- Rollback of supabase/migrations/20240000000000_base_schema.sql. Idempotent.
--
-- Keeps public.users on purpose: it holds your users' data, and on a project with its
-- own users table the migration never created it. Run the other rollbacks (newest
-- first) before this one; to drop the table as well, run supabase/rollbacks/schema.sql
-- after it (destroys the data).
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DO $$
BEGIN
    IF to_regclass('public.users') IS NOT NULL THEN
        RAISE NOTICE 'presence: public.users kept (it holds your data); to drop it, run '
            'supabase/rollbacks/schema.sql (presence-sdk sql --rollback --file schema).';
    END IF;
END;
$$;
