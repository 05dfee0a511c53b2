-- Rollback of 20240000000001_add_heartbeat. Idempotent. Run the rollbacks of later
-- migrations first. Leaves the pg_cron extension installed (other jobs may use it),
-- and the job's run history in cron.job_run_details.
--
-- Client grants the migration narrowed (a table-wide INSERT/UPDATE of anon or
-- authenticated became the same privilege on the app's own columns) stay narrowed:
-- that is equivalent for every existing column. To restore table-wide access:
--   GRANT INSERT, UPDATE ON TABLE public.users TO authenticated;
--
-- A rollback removes what its migration added, so dropping is its purpose; it runs in
-- a transaction, so the index cannot be dropped CONCURRENTLY.
-- squawk-ignore-file ban-drop-function, ban-drop-table, ban-drop-column, require-concurrent-index-deletion
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM cron.unschedule(jobid) FROM cron.job WHERE jobname = 'mark-inactive-users';
    END IF;
END;
$$;

DROP FUNCTION IF EXISTS public.presence_schedule_sweep();
DROP FUNCTION IF EXISTS public.mark_inactive_users_offline();
DROP FUNCTION IF EXISTS public.presence_prune_job_history(integer);
DROP INDEX IF EXISTS public.users_presence_active_idx;
DROP TABLE IF EXISTS public.presence_config;
ALTER TABLE public.users DROP COLUMN IF EXISTS online_since;
ALTER TABLE public.users DROP COLUMN IF EXISTS last_heartbeat;
ALTER TABLE public.users RESET (fillfactor);

-- On an existing users table the migration added the status check NOT VALID; the
-- check that schema.sql creates is validated and stays.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conrelid = 'public.users'::regclass
          AND conname = 'users_status_check'
          AND NOT convalidated
    ) THEN
        ALTER TABLE public.users DROP CONSTRAINT users_status_check;
    END IF;
END;
$$;

-- The migration adds status only to a table without one, and marks it with its comment.
DO $$
BEGIN
    IF pg_catalog.col_description('public.users'::regclass, (
           SELECT attnum FROM pg_catalog.pg_attribute
           WHERE attrelid = 'public.users'::regclass AND attname = 'status' AND NOT attisdropped
       )) = 'Presence status (online, away, busy, offline); added by presence_sdk migration 20240000000001_add_heartbeat.' THEN
        ALTER TABLE public.users DROP COLUMN status;
    END IF;
END;
$$;
