-- Migration 20240000000001_add_heartbeat: heartbeat column, presence settings and the
-- pg_cron sweep that marks silent users offline.
--
-- Adds:
--   * public.users.last_heartbeat (server time of the last heartbeat) and
--     public.users.online_since (start of the current online session);
--   * public.presence_config: the one place that holds the timeout (45 s), the sweep
--     period (20 s) and the suggested client heartbeat interval (15 s);
--   * public.mark_inactive_users_offline(): marks users silent for longer than the
--     timeout offline and returns how many rows it changed;
--   * public.presence_schedule_sweep(): (re)schedules the pg_cron job
--     `mark-inactive-users`, called once below;
--   * the job itself when pg_cron can be used here: '20 seconds' on pg_cron >= 1.5,
--     '* * * * *' (every minute, with a NOTICE) on older pg_cron, and only a NOTICE
--     when pg_cron is not available in this database.
--
-- Idempotent: every statement is guarded (IF NOT EXISTS, OR REPLACE, catalog checks)
-- and cron.schedule() upserts the job by name, so running the file twice leaves one job.
-- Works on a fresh schema.sql and on an existing public.users with `id uuid` and
-- `status text`.
--
-- Rollback (supabase/rollbacks/20240000000001_add_heartbeat.sql):
--   SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'mark-inactive-users';
--     (only when the cron schema exists)
--   DROP FUNCTION IF EXISTS public.presence_schedule_sweep();
--   DROP FUNCTION IF EXISTS public.mark_inactive_users_offline();
--   DROP INDEX IF EXISTS public.users_presence_active_idx;
--   DROP TABLE IF EXISTS public.presence_config;
--   ALTER TABLE public.users DROP COLUMN IF EXISTS online_since,
--                            DROP COLUMN IF EXISTS last_heartbeat;
--   ALTER TABLE public.users RESET (fillfactor);
--   ALTER TABLE public.users DROP CONSTRAINT users_status_check;
--     (only when this migration added it, i.e. it is still NOT VALID)

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- Presence columns. No index on last_heartbeat: it would turn every heartbeat into a
-- non-HOT update (index maintenance + bloat) without speeding up the sweep.
ALTER TABLE public.users ADD COLUMN IF NOT EXISTS last_heartbeat timestamptz;
ALTER TABLE public.users ADD COLUMN IF NOT EXISTS online_since timestamptz;

COMMENT ON COLUMN public.users.last_heartbeat IS
    'Server time (now()) of the last heartbeat or leave; NULL if the user never beat.';
COMMENT ON COLUMN public.users.online_since IS
    'Server time at which the current online session started.';

-- Free space on each page lets a heartbeat write the new row version on the same
-- page (a HOT update). Applies to pages written from now on.
ALTER TABLE public.users SET (fillfactor = 70);

-- Existing tables may have no status check; add it without rescanning old rows.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conrelid = 'public.users'::regclass AND conname = 'users_status_check'
    ) THEN
        ALTER TABLE public.users ADD CONSTRAINT users_status_check
            CHECK (status IN ('online', 'away', 'busy', 'offline')) NOT VALID;
    END IF;
END;
$$;

-- Sweep and "list online" touch only users who are not offline, so they cost in
-- proportion to the online population, not to the whole table.
-- Migrations run in a transaction, so this cannot be CREATE INDEX CONCURRENTLY: it
-- blocks writes to users while it builds. On a big users table, create it first with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS users_presence_active_idx
--       ON public.users (id) WHERE status <> 'offline';
-- outside a transaction; this statement then does nothing.
CREATE INDEX IF NOT EXISTS users_presence_active_idx
    ON public.users (id)
    WHERE status <> 'offline';

-- The single source of the presence timings. One row, enforced by the boolean key.
CREATE TABLE IF NOT EXISTS public.presence_config (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT presence_config_singleton CHECK (singleton),
    timeout_seconds integer NOT NULL DEFAULT 45,
    sweep_interval_seconds integer NOT NULL DEFAULT 20,
    heartbeat_interval_seconds integer NOT NULL DEFAULT 15,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT presence_config_sweep_range CHECK (sweep_interval_seconds BETWEEN 1 AND 59),
    CONSTRAINT presence_config_heartbeat_range CHECK (heartbeat_interval_seconds >= 1),
    CONSTRAINT presence_config_timeout_covers_beats
        CHECK (timeout_seconds >= 2 * heartbeat_interval_seconds)
);

COMMENT ON TABLE public.presence_config IS
    'Presence timings (one row). Change them with public.presence_configure().';

INSERT INTO public.presence_config (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING;

ALTER TABLE public.presence_config ENABLE ROW LEVEL SECURITY;
-- Read-only for the API roles (Supabase's default privileges grant them ALL on new
-- tables): the timings change only through public.presence_configure(), which also
-- re-schedules the sweep.
REVOKE ALL ON TABLE public.presence_config FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_config TO service_role;

-- The sweep: makes the stored status catch up with what reads already derive.
CREATE OR REPLACE FUNCTION public.mark_inactive_users_offline()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE public.users AS u
    SET status = 'offline', online_since = NULL
    FROM public.presence_config AS c
    WHERE u.status <> 'offline'
      AND (u.last_heartbeat IS NULL
           OR u.last_heartbeat < now() - make_interval(secs => c.timeout_seconds));
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION public.mark_inactive_users_offline() IS
    'Marks users silent for longer than presence_config.timeout_seconds offline; returns the number of rows changed.';

-- Schedules (or re-schedules) the sweep job. Returns the schedule used, or NULL when
-- pg_cron cannot be used in this database (with a NOTICE saying what to enable).
CREATE OR REPLACE FUNCTION public.presence_schedule_sweep()
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    cron_version text;
    period integer;
    schedule text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron') THEN
            RAISE NOTICE 'presence: pg_cron is not available on this server; the job mark-inactive-users was not scheduled. Reads stay exact, but stored statuses will not be swept. Enable pg_cron (Supabase: Database > Extensions; self-hosted: install pg_cron, set shared_preload_libraries = ''pg_cron'' and cron.database_name = ''%'', restart), then run: SELECT public.presence_schedule_sweep();',
                pg_catalog.current_database();
            RETURN NULL;
        END IF;
        BEGIN
            -- pg_cron is not relocatable and lives in pg_catalog (its 1.5+ control
            -- file says so; 1.4 names no schema, and with search_path = '' CREATE
            -- EXTENSION would have nowhere to go).
            CREATE EXTENSION IF NOT EXISTS pg_cron WITH SCHEMA pg_catalog;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'presence: pg_cron could not be enabled in database % (%); the job mark-inactive-users was not scheduled. Reads stay exact, but stored statuses will not be swept. pg_cron only runs in the database named by cron.database_name and must be in shared_preload_libraries (Supabase: enable it in Database > Extensions, in database postgres); then run: SELECT public.presence_schedule_sweep();',
                pg_catalog.current_database(), SQLERRM;
            RETURN NULL;
        END;
    END IF;

    SELECT extversion INTO cron_version FROM pg_catalog.pg_extension WHERE extname = 'pg_cron';
    SELECT sweep_interval_seconds INTO period FROM public.presence_config;

    -- extversion is e.g. '1.6' or, for Debian's pg_cron 1.4.2, '1.4-1': compare the
    -- leading major.minor only.
    IF (pg_catalog.regexp_match(cron_version, '^(\d+)\.(\d+)'))::integer[] >= ARRAY[1, 5] THEN
        schedule := period || ' seconds';
    ELSE
        -- Cron syntax has no seconds field (a 6th field is silently ignored, so
        -- '*/20 * * * * *' would run every 20 minutes). Every minute is the best
        -- old pg_cron can do; reads stay exact regardless.
        schedule := '* * * * *';
        RAISE NOTICE 'presence: pg_cron % has no interval schedules (needs >= 1.5); mark-inactive-users runs every minute instead of every % seconds.',
            cron_version, period;
    END IF;

    -- cron.schedule upserts by (jobname, username): re-running never duplicates.
    PERFORM cron.schedule(
        'mark-inactive-users', schedule, 'SELECT public.mark_inactive_users_offline()'
    );
    RETURN schedule;
END;
$$;

COMMENT ON FUNCTION public.presence_schedule_sweep() IS
    'Schedules the pg_cron job mark-inactive-users from presence_config; returns the schedule or NULL if pg_cron is unavailable.';

REVOKE EXECUTE ON FUNCTION public.mark_inactive_users_offline() FROM PUBLIC, anon, authenticated;
REVOKE EXECUTE ON FUNCTION public.presence_schedule_sweep() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.mark_inactive_users_offline() TO postgres, service_role;
GRANT EXECUTE ON FUNCTION public.presence_schedule_sweep() TO postgres;

SELECT public.presence_schedule_sweep();
