-- Rollback of 20240000000001_add_heartbeat. Idempotent. Run the rollbacks of later
-- migrations first. Leaves the pg_cron extension installed (other jobs may use it).
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
DROP INDEX IF EXISTS public.users_presence_active_idx;
DROP TABLE IF EXISTS public.presence_config;
ALTER TABLE public.users DROP COLUMN IF EXISTS online_since;
ALTER TABLE public.users DROP COLUMN IF EXISTS last_heartbeat;
ALTER TABLE public.users RESET (fillfactor);
