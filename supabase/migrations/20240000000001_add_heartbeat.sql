-- Migration 20240000000001_add_heartbeat: heartbeat column, presence settings and the
-- pg_cron sweep that marks silent users offline.
--
-- Adds:
--   * public.users.last_heartbeat (server time of the last heartbeat) and
--     public.users.online_since (start of the current online session); also
--     public.users.status when the table has none (see "app's own status" below);
--   * client write privileges: anon and authenticated may not write the presence
--     columns (status, last_heartbeat, online_since) directly, whatever grants the
--     table had: a table-wide INSERT/UPDATE of theirs is narrowed to the table's other
--     columns, so "update own row" keeps working for the app's own columns;
--   * public.presence_config: the one place that holds the timeout (45 s), the sweep
--     period (20 s) and the suggested client heartbeat interval (15 s), with checks
--     that keep them consistent (sweep <= timeout, timeout >= 2 heartbeats), readable
--     by the API roles (policy presence_config_read), written by the owner only;
--   * public.mark_inactive_users_offline(): marks users whose last heartbeat is at
--     least the timeout old offline (the same boundary reads use) and returns how
--     many rows it changed; it also prunes the job's run history;
--   * public.presence_prune_job_history(max_rows): deletes at most max_rows runs of
--     the job older than a day from cron.job_run_details (pg_cron never does);
--   * public.presence_schedule_sweep(): (re)schedules the pg_cron job
--     `mark-inactive-users`, called once below;
--   * the job itself when pg_cron can be used here: '20 seconds' on pg_cron >= 1.5,
--     '* * * * *' (every minute, with a NOTICE) on older pg_cron, and only a NOTICE
--     when pg_cron is not available in this database.
--
-- The app's own status: presence owns public.users.status (online, away, busy,
-- offline; NULL reads as offline). If the column holds other values (the app's own,
-- e.g. 'active' or 'banned'), this migration stops with an error listing them and
-- changes nothing: rename the app's column (the migration then adds its own status)
-- or map the values, as the error's hint shows.
--
-- Idempotent: every statement is guarded (IF NOT EXISTS, OR REPLACE, catalog checks)
-- and cron.schedule() upserts the job by name, so running the file twice leaves one job.
-- Re-running it on its own after later migrations leaves every grant as it was: it only
-- revokes privileges on objects it creates (and on the presence columns).
-- Works on a fresh schema.sql and on an existing public.users with `id uuid` (and
-- usually `status text`).
--
-- Rollback (supabase/rollbacks/20240000000001_add_heartbeat.sql):
--   SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'mark-inactive-users';
--     (only when the cron schema exists)
--   DROP FUNCTION IF EXISTS public.presence_schedule_sweep();
--   DROP FUNCTION IF EXISTS public.mark_inactive_users_offline();
--   DROP FUNCTION IF EXISTS public.presence_prune_job_history(integer);
--   DROP INDEX IF EXISTS public.users_presence_active_idx;
--   DROP TABLE IF EXISTS public.presence_config;
--   ALTER TABLE public.users DROP COLUMN IF EXISTS online_since,
--                            DROP COLUMN IF EXISTS last_heartbeat;
--   ALTER TABLE public.users RESET (fillfactor);
--   ALTER TABLE public.users DROP CONSTRAINT users_status_check;
--     (only when this migration added it, i.e. it is still NOT VALID)
--   ALTER TABLE public.users DROP COLUMN status;
--     (only when this migration added it: its comment says so)
-- The narrowed client grants stay narrowed (equivalent for the app's existing
-- columns); to give a role table-wide access back:
--   GRANT INSERT, UPDATE ON TABLE public.users TO authenticated;

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- Refuse to take over a status column that holds the app's own values: the sweep
-- would overwrite them with 'offline' and the status check would reject new ones.
-- Skipped when a validated users_status_check already guarantees presence values.
DO $$
DECLARE
    found_values text;
    distinct_count bigint;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute
        WHERE attrelid = 'public.users'::regclass AND attname = 'status' AND NOT attisdropped
    ) OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conrelid = 'public.users'::regclass AND conname = 'users_status_check'
          AND convalidated
    ) THEN
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(
               CASE WHEN pg_catalog.length(v.value) <= 64 THEN pg_catalog.quote_literal(v.value)
                    ELSE pg_catalog.quote_literal(pg_catalog.left(v.value, 64)) || '... ('
                         || pg_catalog.length(v.value) || ' characters)'
               END || ' (' || v.n || CASE WHEN v.n = 1 THEN ' row)' ELSE ' rows)' END,
               ', ' ORDER BY v.n DESC, v.value) FILTER (WHERE v.rank <= 10),
           count(*)
    INTO found_values, distinct_count
    FROM (
        SELECT s.value, s.n, row_number() OVER (ORDER BY s.n DESC, s.value) AS rank
        FROM (
            SELECT u.status::text AS value, count(*) AS n
            FROM public.users AS u
            WHERE u.status::text NOT IN ('online', 'away', 'busy', 'offline')
            GROUP BY u.status::text
        ) AS s
    ) AS v;
    IF distinct_count > 0 THEN
        IF distinct_count > 10 THEN
            found_values := found_values || ' and ' || (distinct_count - 10) || ' more distinct values';
        END IF;
        RAISE EXCEPTION 'presence: public.users.status holds values that are not presence statuses: %; nothing was changed',
            found_values
            USING ERRCODE = '55000',
                  DETAIL = 'presence_sdk owns public.users.status (online, away, busy, offline; NULL reads as offline): its sweep would overwrite these values with offline, and its check would refuse new ones.',
                  HINT = 'Keep your values in a column of your own: ALTER TABLE public.users RENAME COLUMN status TO account_status; (and use that name in your app), then re-run this migration: it adds the presence status column. Or, if they are presence states under other names, map them first, e.g.: UPDATE public.users SET status = ''offline'' WHERE status NOT IN (''online'', ''away'', ''busy'', ''offline'');';
    END IF;
END;
$$;

-- Presence columns. No index on last_heartbeat: it would turn every heartbeat into a
-- non-HOT update (index maintenance + bloat) without speeding up the sweep.
-- status is added only when the table has none (e.g. after the app renamed its own);
-- the comment marks it as ours, so the rollback knows it may drop it.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute
        WHERE attrelid = 'public.users'::regclass AND attname = 'status' AND NOT attisdropped
    ) THEN
        ALTER TABLE public.users ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'offline';
        COMMENT ON COLUMN public.users.status IS
            'Presence status (online, away, busy, offline); added by presence_sdk migration 20240000000001_add_heartbeat.';
    END IF;
END;
$$;
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

-- Presence columns are written only by the SECURITY DEFINER functions, with the
-- server's clock. Tables made in the SQL editor get ALL for the API roles (Supabase's
-- default privileges), which would let a user UPDATE their own row to
-- last_heartbeat = 'infinity'. So a table-wide INSERT/UPDATE of anon, authenticated
-- or PUBLIC becomes the same privilege on the table's other columns, and column grants
-- on the presence columns are revoked. Inserting a status is harmless (without a
-- heartbeat it reads as offline and is swept), so INSERT keeps status: apps that insert
-- their own profile rows keep working. Columns the app adds later need their own
-- GRANT. Idempotent: a second run finds nothing table-wide to narrow.
DO $$
DECLARE
    grant_row record;
    other_columns text;
    update_protected constant text[] := ARRAY['status', 'last_heartbeat', 'online_since'];
    insert_protected constant text[] := ARRAY['last_heartbeat', 'online_since'];
BEGIN
    FOR grant_row IN
        SELECT DISTINCT
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(r.rolname) END AS grantee,
               a.privilege_type AS privilege
        FROM pg_catalog.pg_class AS c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = 'public.users'::regclass
          AND a.privilege_type IN ('INSERT', 'UPDATE')
          AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated'))
        ORDER BY 1, 2
    LOOP
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(att.attname), ', ' ORDER BY att.attnum)
        INTO other_columns
        FROM pg_catalog.pg_attribute AS att
        WHERE att.attrelid = 'public.users'::regclass AND att.attnum > 0 AND NOT att.attisdropped
          AND att.attname <> ALL (
              CASE WHEN grant_row.privilege = 'UPDATE' THEN update_protected ELSE insert_protected END
          );
        -- Revoking the table privilege also revokes that privilege on every column.
        EXECUTE pg_catalog.format('REVOKE %s ON TABLE public.users FROM %s',
            grant_row.privilege, grant_row.grantee);
        IF other_columns IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT %s (%s) ON TABLE public.users TO %s',
                grant_row.privilege, other_columns, grant_row.grantee);
        END IF;
        RAISE NOTICE 'presence: % on public.users for % narrowed to the columns the app owns (%), so clients cannot write presence columns directly',
            grant_row.privilege, grant_row.grantee, coalesce(other_columns, 'none');
    END LOOP;

    FOR grant_row IN
        SELECT DISTINCT
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(r.rolname) END AS grantee,
               a.privilege_type AS privilege,
               att.attname AS column_name
        FROM pg_catalog.pg_attribute AS att
        CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) AS a
        LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
        WHERE att.attrelid = 'public.users'::regclass
          AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated'))
          AND ((a.privilege_type = 'UPDATE' AND att.attname = ANY (update_protected))
               OR (a.privilege_type = 'INSERT' AND att.attname = ANY (insert_protected)))
        ORDER BY 1, 2, 3
    LOOP
        EXECUTE pg_catalog.format('REVOKE %s (%I) ON TABLE public.users FROM %s',
            grant_row.privilege, grant_row.column_name, grant_row.grantee);
    END LOOP;
END;
$$;

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

-- Bounds that presence_configure() also checks, with clearer messages. Added here (not
-- in CREATE TABLE) so that tables made by an older version get them too. The upper
-- bounds keep 2 * heartbeat_interval_seconds far from integer overflow. The table has
-- one row: validating is instant.
DO $$
DECLARE
    wanted record;
BEGIN
    FOR wanted IN
        SELECT * FROM (VALUES
            ('presence_config_heartbeat_max', 'heartbeat_interval_seconds <= 43200',
             'heartbeat_interval_seconds = least(heartbeat_interval_seconds, 43200)'),
            ('presence_config_timeout_range', 'timeout_seconds BETWEEN 2 AND 86400',
             'timeout_seconds = least(greatest(timeout_seconds, 2), 86400)'),
            ('presence_config_sweep_within_timeout', 'sweep_interval_seconds <= timeout_seconds',
             'sweep_interval_seconds = least(sweep_interval_seconds, timeout_seconds)')
        ) AS w (name, expression, repair)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_constraint
            WHERE conrelid = 'public.presence_config'::regclass AND conname = wanted.name
        ) THEN
            BEGIN
                EXECUTE pg_catalog.format(
                    'ALTER TABLE public.presence_config ADD CONSTRAINT %I CHECK (%s)',
                    wanted.name, wanted.expression);
            EXCEPTION WHEN check_violation THEN
                RAISE EXCEPTION 'presence: public.presence_config breaks the rule %: %',
                    wanted.name, wanted.expression
                    USING ERRCODE = '23514',
                          HINT = pg_catalog.format('Fix the timings first, e.g. UPDATE public.presence_config SET %s; then re-run this migration.', wanted.repair);
            END;
        END IF;
    END LOOP;
END;
$$;

ALTER TABLE public.presence_config ENABLE ROW LEVEL SECURITY;

-- Read-only for the API roles (Supabase's default privileges grant them ALL on new
-- tables): the timings change only through public.presence_configure(), which also
-- re-schedules the sweep. The timings are not secret: readers need the timeout to
-- derive presence, and clients read their heartbeat interval before signing in.
-- This file owns every privilege on the table, so re-running it alone changes none.
REVOKE ALL ON TABLE public.presence_config FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_config TO anon, authenticated, service_role;
DROP POLICY IF EXISTS presence_config_read ON public.presence_config;
CREATE POLICY presence_config_read ON public.presence_config
    FOR SELECT TO anon, authenticated, service_role
    USING (true);

-- pg_cron records every run in cron.job_run_details and never deletes any: a sweep
-- every 20 s adds 4,320 rows a day. This deletes the sweep job's runs older than a
-- day, at most max_rows of them per call (the sweep calls it on every run, so a
-- backlog drains in bounded steps). Other jobs' rows are left alone. Returns the
-- number of rows deleted; 0 when pg_cron is not installed in this database.
CREATE OR REPLACE FUNCTION public.presence_prune_job_history(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    deleted integer;
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'presence: max_rows must be between 1 and 1000000 (got %)',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.to_regclass('cron.job_run_details') IS NULL
       OR pg_catalog.to_regclass('cron.job') IS NULL THEN
        RETURN 0;
    END IF;
    -- Dynamic SQL: the function must compile and run where the cron schema is absent.
    EXECUTE $sql$
        DELETE FROM cron.job_run_details AS d
        WHERE d.runid IN (
            SELECT r.runid
            FROM cron.job_run_details AS r
            WHERE r.jobid IN (SELECT j.jobid FROM cron.job AS j WHERE j.jobname = 'mark-inactive-users')
              AND r.start_time < pg_catalog.now() - interval '1 day'
            LIMIT $1
        )
    $sql$ USING max_rows;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

COMMENT ON FUNCTION public.presence_prune_job_history(integer) IS
    'Deletes up to max_rows runs of the job mark-inactive-users older than a day from cron.job_run_details; returns how many.';

-- The sweep: makes the stored status catch up with what reads already derive. A beat
-- exactly `timeout` old is offline here as in every read (reads call a user online
-- only while last_heartbeat > now() - timeout).
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
           OR u.last_heartbeat <= now() - make_interval(secs => c.timeout_seconds));
    GET DIAGNOSTICS changed = ROW_COUNT;
    -- Housekeeping must never make the sweep fail: a failed prune is logged and the
    -- next run tries again (verify reports a history that keeps growing).
    BEGIN
        PERFORM public.presence_prune_job_history();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'presence: could not prune cron.job_run_details: %', SQLERRM;
    END;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION public.mark_inactive_users_offline() IS
    'Marks users whose last heartbeat is presence_config.timeout_seconds old or older offline and prunes the job''s run history; returns the number of users changed.';

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
REVOKE EXECUTE ON FUNCTION public.presence_prune_job_history(integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.mark_inactive_users_offline() TO postgres, service_role;
GRANT EXECUTE ON FUNCTION public.presence_schedule_sweep() TO postgres;
GRANT EXECUTE ON FUNCTION public.presence_prune_job_history(integer) TO postgres;

SELECT public.presence_schedule_sweep();
