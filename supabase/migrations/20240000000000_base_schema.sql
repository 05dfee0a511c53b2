-- Migration 20240000000000_base_schema: the base `public.users` table, for
-- `supabase db push` on a fresh project.
--
-- The presence migrations that follow build on `public.users`. On a fresh Supabase
-- project this creates it exactly as supabase/schema.sql does (table, RLS policies,
-- column grants, a profile row per new auth user), so `supabase db push` alone
-- works. When `public.users` already exists (your own table, or schema.sql was run)
-- it changes nothing and says so in a NOTICE: the migrations work on any
-- `public.users` with `id uuid` and `status text`. Without `auth.users` (not a
-- Supabase database) and without `public.users` it stops with an error saying what
-- to create.
--
-- Idempotent: everything happens inside one guard on `public.users`.
--
-- Rollback (supabase/rollbacks/20240000000000_base_schema.sql): keeps public.users,
-- because it holds your users' data; it only says how to drop it. To drop it, after
-- rolling back the other migrations (newest first), run supabase/rollbacks/schema.sql:
--   DROP TRIGGER IF EXISTS on_auth_user_created_presence ON auth.users;
--   DROP FUNCTION IF EXISTS public.handle_new_auth_user();
--   DROP TABLE IF EXISTS public.users;

SET lock_timeout = '5s';
SET statement_timeout = '60s';

DO $base$
BEGIN
    IF to_regclass('public.users') IS NOT NULL THEN
        RAISE NOTICE 'presence: public.users already exists, base schema skipped '
            '(the presence migrations work on a users table with id uuid and status text).';
        RETURN;
    END IF;
    IF to_regclass('auth.users') IS NULL THEN
        RAISE EXCEPTION 'presence: public.users does not exist and there is no auth.users '
            'to build it on (not a Supabase database?): create public.users (id uuid '
            'PRIMARY KEY, status text) first, then apply the presence migrations'
            USING ERRCODE = 'undefined_table';
    END IF;

    -- From here on: supabase/schema.sql, statement for statement (a test compares the
    -- catalogs the two leave behind).
    CREATE TABLE IF NOT EXISTS public.users (
        id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
        status text NOT NULL DEFAULT 'offline'
            CONSTRAINT users_status_check
            CHECK (status IN ('online', 'away', 'busy', 'offline')),
        display_name text
            CONSTRAINT users_display_name_check
            CHECK (char_length(display_name) BETWEEN 1 AND 100),
        avatar_url text
            CONSTRAINT users_avatar_url_check
            CHECK (char_length(avatar_url) <= 2048 AND avatar_url ~ '^https?://'),
        created_at timestamptz NOT NULL DEFAULT now()
    );

    COMMENT ON TABLE public.users IS
        'Application users (one row per auth.users row) with their presence status.';
    COMMENT ON COLUMN public.users.status IS
        'Presence status as last reported: online, away, busy or offline.';

    ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;

    -- Signed-in users may see each other; anonymous visitors see nothing.
    DROP POLICY IF EXISTS users_select_authenticated ON public.users;
    CREATE POLICY users_select_authenticated ON public.users
        FOR SELECT TO authenticated
        USING (true);

    -- Users may edit their own profile columns only; presence columns are written by
    -- the SECURITY DEFINER functions of the migrations (the server clock only).
    DROP POLICY IF EXISTS users_update_own ON public.users;
    CREATE POLICY users_update_own ON public.users
        FOR UPDATE TO authenticated
        USING (id = (SELECT auth.uid()))
        WITH CHECK (id = (SELECT auth.uid()));

    REVOKE ALL ON TABLE public.users FROM anon, authenticated;
    GRANT SELECT ON TABLE public.users TO authenticated;
    GRANT UPDATE (display_name, avatar_url) ON TABLE public.users TO authenticated;
    GRANT ALL ON TABLE public.users TO service_role;

    -- Every new auth user gets a profile row, so a heartbeat always has a row to update.
    CREATE OR REPLACE FUNCTION public.handle_new_auth_user()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
BEGIN
    INSERT INTO public.users (id) VALUES (NEW.id) ON CONFLICT (id) DO NOTHING;
    RETURN NEW;
END;
$$;

    REVOKE EXECUTE ON FUNCTION public.handle_new_auth_user() FROM PUBLIC, anon, authenticated;

    DROP TRIGGER IF EXISTS on_auth_user_created_presence ON auth.users;
    CREATE TRIGGER on_auth_user_created_presence
        AFTER INSERT ON auth.users
        FOR EACH ROW EXECUTE FUNCTION public.handle_new_auth_user();
END;
$base$;
