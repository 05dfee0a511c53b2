-- Migration 20240000000004_hardening: brings a database set up by presence_sdk 0.1.0
-- to exactly what migrations 20240000000001..03 install today (issue 11's fixes).
--
-- Why this file repeats definitions from 01..03: those files were hardened in place
-- after 0.1.0 shipped them, but `presence-sdk migrate` and `supabase db push` never
-- run a file whose version is already recorded in
-- supabase_migrations.schema_migrations. A database set up with 0.1.0 recorded 01..03
-- with their 0.1.0 text, so it would never receive the fixes. This file carries them
-- as a new version. Every definition below is the same text as in 01..03, so on a
-- fresh install (01..04) it changes nothing; tests compare the catalogs (a 0.1.0
-- database after this file, a fresh 01..03, a fresh 01..04) so the copies cannot
-- drift apart.
--
-- Changes (each a no-op where it is already in place):
--   * client write privileges on public.users: a table-wide INSERT/UPDATE of anon,
--     authenticated or PUBLIC is narrowed to the table's other columns and their
--     column grants on the presence columns are revoked (0.1.0 let users on a
--     hand-made users table forge their own heartbeat);
--   * public.presence_config: the checks presence_config_heartbeat_max,
--     presence_config_timeout_range and presence_config_sweep_within_timeout (timings
--     set by 0.1.0 that break one make this migration stop, change nothing and name
--     the UPDATE that repairs them; then run it again), RLS, SELECT for the API
--     roles and the read policy presence_config_read (owned by 01 since issue 11);
--   * public.presence_prune_job_history(max_rows) (new) and the sweep
--     public.mark_inactive_users_offline() that calls it and takes a beat exactly
--     `timeout` old, as the reads do;
--   * public.presence_heartbeat(text): echoed input cut to 64 characters, a missing
--     presence_config row named as such, asynchronous commit only for the
--     transaction's first write;
--   * public.presence_configure(...): ranges and consistency checked with clear
--     messages;
--   * public.presence_setup_report(): function settings, grants, policies, sign-up
--     trigger and run history for verify (schema_version stays 3: the presence API
--     is the one 01..03 install; verify recognises the 0.1.0 report by its missing
--     sections);
--   * the EXECUTE grants of every function above (none for anon, except that
--     presence_settings() keeps its own).
-- Not repeated: 01's refusal of a status column holding the app's own values (it
-- guards taking the column over, which 0.1.0 already did) and what did not change.
--
-- Re-running: idempotent. Function bodies are those of the last file that ran: after
-- re-running an older file by hand, re-run the newer ones too (or just use
-- `presence-sdk migrate`, which never re-runs a recorded file).
-- Requires 20240000000001..03 (0.1.0's or today's).
--
-- Rollback (supabase/rollbacks/20240000000004_hardening.sql): nothing to undo. Every
-- object and grant here is also created by 01..03, whose rollbacks remove them
-- (20240000000001's drops presence_prune_job_history); the rollback of 04 leaves the
-- database as a fresh 01..03 leaves it. It does not restore 0.1.0's weaker
-- definitions: that would reopen the holes this file closes.

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- Narrowed client grants (from 20240000000001).
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

-- The presence timings' bounds (from 20240000000001), for tables 0.1.0 created.
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
-- The same privileges and policy as 20240000000001 sets (it owns them; 0.1.0 left the
-- SELECT of anon and authenticated and the policy to 20240000000002).
REVOKE ALL ON TABLE public.presence_config FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_config TO anon, authenticated, service_role;
DROP POLICY IF EXISTS presence_config_read ON public.presence_config;
CREATE POLICY presence_config_read ON public.presence_config
    FOR SELECT TO anon, authenticated, service_role
    USING (true);

-- The run history's pruning and the sweep that calls it (from 20240000000001).
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

REVOKE EXECUTE ON FUNCTION public.mark_inactive_users_offline() FROM PUBLIC, anon, authenticated;
REVOKE EXECUTE ON FUNCTION public.presence_prune_job_history(integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.mark_inactive_users_offline() TO postgres, service_role;
GRANT EXECUTE ON FUNCTION public.presence_prune_job_history(integer) TO postgres;

-- The heartbeat and the owner's configure (from 20240000000002).
CREATE OR REPLACE FUNCTION public.presence_heartbeat(new_status text DEFAULT 'online')
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
    beat_at timestamptz := now();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_heartbeat with a signed-in user''s access token.';
    END IF;
    IF new_status IS NULL OR new_status NOT IN ('online', 'away', 'busy') THEN
        -- Echo at most 64 characters: any signed-in user controls this text, and it
        -- goes to the response and the server log.
        RAISE EXCEPTION 'presence: invalid status %',
            CASE WHEN new_status IS NULL THEN 'NULL'
                 WHEN length(new_status) <= 64 THEN quote_literal(new_status)
                 ELSE quote_literal(left(new_status, 64)) || '... (' || length(new_status) || ' characters)'
            END
            USING ERRCODE = '22023',
                  HINT = 'Status must be one of online, away, busy; call presence_leave() to go offline.';
    END IF;

    -- Losing the last heartbeat in a crash is harmless (the next one comes within
    -- seconds), so do not wait for the WAL flush: about doubles throughput. The setting
    -- holds until the end of the transaction and applies to its COMMIT, so it is only
    -- taken when this is the transaction's first write (no transaction id yet), as in
    -- PostgREST's one-call transactions: a caller's earlier writes keep the durability
    -- they asked for. Writes made after this call in the same transaction commit
    -- asynchronously too (see docs/performance.md); beat in a transaction of its own.
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    END IF;

    UPDATE public.users AS u
    SET status = new_status,
        last_heartbeat = beat_at,
        online_since = CASE
            WHEN u.status = 'offline' OR u.online_since IS NULL OR u.last_heartbeat IS NULL
                 OR u.last_heartbeat <= beat_at - make_interval(secs => c.timeout_seconds)
            THEN beat_at
            ELSE u.online_since
        END
    FROM public.presence_config AS c
    WHERE u.id = uid;

    IF NOT FOUND THEN
        -- Only on failure (no cost per beat): the join finds nothing without the
        -- settings row either, and "no users row" would then send people astray.
        IF NOT EXISTS (SELECT 1 FROM public.presence_config) THEN
            RAISE EXCEPTION 'presence: the public.presence_config row is missing, so no heartbeat can be recorded'
                USING ERRCODE = '55000',
                      HINT = 'As postgres (Supabase SQL editor), restore the default timings: INSERT INTO public.presence_config (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING; then adjust them with public.presence_configure() if needed.';
        END IF;
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;
    RETURN beat_at;
END;
$$;

COMMENT ON FUNCTION public.presence_heartbeat(text) IS
    'Records a heartbeat for auth.uid() with the server clock; returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_configure(
    timeout_seconds integer DEFAULT NULL,
    sweep_interval_seconds integer DEFAULT NULL,
    heartbeat_interval_seconds integer DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    current_row public.presence_config;
    new_timeout integer;
    new_sweep integer;
    new_beat integer;
BEGIN
    SELECT * INTO current_row FROM public.presence_config FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'presence: the public.presence_config row is missing'
            USING ERRCODE = '55000',
                  HINT = 'Restore the default timings first: INSERT INTO public.presence_config (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING;';
    END IF;
    new_timeout := coalesce(presence_configure.timeout_seconds, current_row.timeout_seconds);
    new_sweep := coalesce(presence_configure.sweep_interval_seconds, current_row.sweep_interval_seconds);
    new_beat := coalesce(presence_configure.heartbeat_interval_seconds, current_row.heartbeat_interval_seconds);

    -- The same rules as the table's checks, checked first so that each gets a clear
    -- message (and 2 * heartbeat cannot overflow).
    IF new_timeout NOT BETWEEN 2 AND 86400 THEN
        RAISE EXCEPTION 'presence: timeout_seconds must be between 2 and 86400 (got %)', new_timeout
            USING ERRCODE = '22023';
    END IF;
    IF new_sweep NOT BETWEEN 1 AND 59 THEN
        RAISE EXCEPTION 'presence: sweep_interval_seconds must be between 1 and 59 (got %)', new_sweep
            USING ERRCODE = '22023',
                  HINT = 'pg_cron interval schedules run every 1 to 59 seconds.';
    END IF;
    IF new_beat NOT BETWEEN 1 AND 43200 THEN
        RAISE EXCEPTION 'presence: heartbeat_interval_seconds must be between 1 and 43200 (got %)', new_beat
            USING ERRCODE = '22023';
    END IF;
    IF new_sweep > new_timeout THEN
        RAISE EXCEPTION 'presence: the sweep period (% s) must not be longer than the timeout (% s)',
            new_sweep, new_timeout
            USING ERRCODE = '22023',
                  HINT = 'Otherwise stored statuses stay online long after the timeout; lower sweep_interval_seconds or raise timeout_seconds.';
    END IF;
    IF 2 * new_beat > new_timeout THEN
        RAISE EXCEPTION 'presence: the timeout (% s) must cover at least two heartbeat intervals (% s each)',
            new_timeout, new_beat
            USING ERRCODE = '22023',
                  HINT = 'One late or lost heartbeat must not mark a user offline; lower heartbeat_interval_seconds or raise timeout_seconds.';
    END IF;

    UPDATE public.presence_config AS c
    SET timeout_seconds = new_timeout,
        sweep_interval_seconds = new_sweep,
        heartbeat_interval_seconds = new_beat,
        updated_at = now();
    PERFORM public.presence_schedule_sweep();
    RETURN public.presence_settings();
END;
$$;

COMMENT ON FUNCTION public.presence_configure(integer, integer, integer) IS
    'Changes the presence timings (NULL keeps a value; timeout 2-86400 s, sweep 1-59 s and at most the timeout, heartbeat 1-43200 s and at most half the timeout) and re-schedules the sweep. Owner only.';

REVOKE EXECUTE ON FUNCTION
    public.presence_heartbeat(text), public.presence_configure(integer, integer, integer)
FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.presence_heartbeat(text) TO authenticated, service_role;
REVOKE EXECUTE ON FUNCTION public.presence_configure(integer, integer, integer) FROM authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.presence_configure(integer, integer, integer) TO postgres;

-- The setup report (from 20240000000003).
CREATE OR REPLACE FUNCTION public.presence_setup_report()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    report jsonb;
    cron_installed boolean;
    job jsonb := NULL;
    runs jsonb := '[]'::jsonb;
    history jsonb := NULL;
    api_roles constant text[] := ARRAY['anon', 'authenticated', 'service_role'];
BEGIN
    report := jsonb_build_object(
        'schema_version', 3,
        'server_time', now(),
        'database', pg_catalog.current_database(),
        'current_user', current_user::text,
        'settings', (SELECT to_jsonb(c) - 'singleton' FROM public.presence_config AS c),
        'users_table', jsonb_build_object(
            'exists', to_regclass('public.users') IS NOT NULL,
            'rls_enabled', coalesce(
                (SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = to_regclass('public.users')),
                false),
            'columns', coalesce(
                (SELECT jsonb_agg(attname ORDER BY attnum)
                 FROM pg_catalog.pg_attribute
                 WHERE attrelid = to_regclass('public.users') AND attnum > 0 AND NOT attisdropped),
                '[]'::jsonb),
            -- Presence columns each API role could write without the presence
            -- functions (table-wide or column grants, directly or through PUBLIC).
            'writable_presence_columns', (
                SELECT coalesce(jsonb_object_agg(r.rolname, jsonb_build_object(
                    'UPDATE', coalesce((
                        SELECT jsonb_agg(a.attname ORDER BY a.attnum)
                        FROM pg_catalog.pg_attribute AS a
                        WHERE a.attrelid = to_regclass('public.users') AND NOT a.attisdropped
                          AND a.attname IN ('status', 'last_heartbeat', 'online_since')
                          AND has_column_privilege(r.oid, a.attrelid, a.attnum, 'UPDATE')), '[]'::jsonb),
                    'INSERT', coalesce((
                        SELECT jsonb_agg(a.attname ORDER BY a.attnum)
                        FROM pg_catalog.pg_attribute AS a
                        WHERE a.attrelid = to_regclass('public.users') AND NOT a.attisdropped
                          AND a.attname IN ('last_heartbeat', 'online_since')
                          AND has_column_privilege(r.oid, a.attrelid, a.attnum, 'INSERT')), '[]'::jsonb)
                )), '{}'::jsonb)
                FROM pg_catalog.pg_roles AS r
                WHERE r.rolname IN ('anon', 'authenticated') AND to_regclass('public.users') IS NOT NULL
            )
        ),
        -- Grants, RLS and policies of what the reads and the heartbeat use.
        'relations', (
            SELECT jsonb_object_agg(rel.name, jsonb_build_object(
                'exists', c.oid IS NOT NULL,
                'rls_enabled', coalesce(c.relrowsecurity, false),
                'privileges', (
                    SELECT coalesce(jsonb_object_agg(r.rolname, (
                        SELECT coalesce(jsonb_agg(p.name ORDER BY p.ord), '[]'::jsonb)
                        FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                          'REFERENCES', 'TRIGGER']) WITH ORDINALITY AS p (name, ord)
                        WHERE has_table_privilege(r.oid, c.oid, p.name)
                    )), '{}'::jsonb)
                    FROM pg_catalog.pg_roles AS r
                    WHERE r.rolname = ANY (api_roles) AND c.oid IS NOT NULL
                ),
                'policies', (
                    SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'name', pol.policyname,
                        'command', pol.cmd,
                        'roles', to_jsonb(pol.roles),
                        'permissive', pol.permissive = 'PERMISSIVE'
                    ) ORDER BY pol.policyname), '[]'::jsonb)
                    FROM pg_catalog.pg_policies AS pol
                    WHERE pol.schemaname = 'public' AND pol.tablename = rel.name
                )
            ))
            FROM (VALUES ('users'), ('user_presence'), ('presence_config')) AS rel (name)
            LEFT JOIN pg_catalog.pg_class AS c ON c.oid = to_regclass('public.' || rel.name)
        ),
        -- schema.sql's trigger that gives every new auth user a profile row (without
        -- it, a new user's first heartbeat fails with PT404). Apps with their own users
        -- table may not have the function at all.
        'signup_trigger', jsonb_build_object(
            'function_exists', to_regprocedure('public.handle_new_auth_user()') IS NOT NULL,
            'function_security_definer', coalesce(
                (SELECT prosecdef FROM pg_catalog.pg_proc
                 WHERE oid = to_regprocedure('public.handle_new_auth_user()')), false),
            'function_config', (
                SELECT to_jsonb(proconfig) FROM pg_catalog.pg_proc
                WHERE oid = to_regprocedure('public.handle_new_auth_user()')),
            'triggers', coalesce((
                SELECT jsonb_agg(jsonb_build_object(
                    'name', t.tgname,
                    'enabled', t.tgenabled IN ('O', 'A'),
                    'on_insert', (t.tgtype & 4) <> 0
                ) ORDER BY t.tgname)
                FROM pg_catalog.pg_trigger AS t
                WHERE t.tgrelid = to_regclass('auth.users') AND NOT t.tgisinternal
                  AND t.tgfoid = to_regprocedure('public.handle_new_auth_user()')), '[]'::jsonb)
        ),
        'functions', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', f.name,
                'exists', p.oid IS NOT NULL,
                'security_definer', coalesce(p.prosecdef, false),
                'config', to_jsonb(p.proconfig),
                'execute', jsonb_build_object(
                    'anon', p.oid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon')
                            AND has_function_privilege('anon', p.oid, 'EXECUTE'),
                    'authenticated', p.oid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated')
                            AND has_function_privilege('authenticated', p.oid, 'EXECUTE'),
                    'service_role', p.oid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role')
                            AND has_function_privilege('service_role', p.oid, 'EXECUTE')
                )
            ) ORDER BY f.name), '[]'::jsonb)
            FROM (VALUES
                ('mark_inactive_users_offline', 'public.mark_inactive_users_offline()'),
                ('presence_configure', 'public.presence_configure(integer, integer, integer)'),
                ('presence_counts', 'public.presence_counts()'),
                ('presence_get', 'public.presence_get(uuid[])'),
                ('presence_heartbeat', 'public.presence_heartbeat(text)'),
                ('presence_is_online', 'public.presence_is_online(uuid)'),
                ('presence_leave', 'public.presence_leave()'),
                ('presence_list_online', 'public.presence_list_online(integer, uuid)'),
                ('presence_prune_job_history', 'public.presence_prune_job_history(integer)'),
                ('presence_schedule_sweep', 'public.presence_schedule_sweep()'),
                ('presence_settings', 'public.presence_settings()'),
                ('presence_setup_report', 'public.presence_setup_report()')
            ) AS f (name, signature)
            LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = to_regprocedure(f.signature)
        )
    );

    cron_installed := EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron');
    report := report || jsonb_build_object('pg_cron', jsonb_build_object(
        'available', EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron'),
        'installed', cron_installed,
        'version', (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'),
        'database_name', current_setting('cron.database_name', true)
    ));

    -- cron.* only exists with the extension; plpgsql plans these statements lazily,
    -- so the branch is safe to compile without it.
    IF cron_installed THEN
        SELECT to_jsonb(j) INTO job
        FROM (
            SELECT jobid, jobname, schedule, command, active, username, database
            FROM cron.job
            WHERE jobname = 'mark-inactive-users'
            ORDER BY jobid
            LIMIT 1
        ) AS j;
        IF job IS NOT NULL THEN
            SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.runid DESC), '[]'::jsonb) INTO runs
            FROM (
                SELECT runid, status, return_message, start_time, end_time
                FROM cron.job_run_details
                WHERE jobid = (job ->> 'jobid')::bigint
                ORDER BY runid DESC
                LIMIT 5
            ) AS r;
            -- pg_cron never deletes runs; the sweep prunes its own to one day.
            SELECT jsonb_build_object(
                'rows', count(*),
                'older_than_a_day', count(*) FILTER (WHERE d.start_time < now() - interval '1 day'),
                'oldest_start_time', min(d.start_time),
                'table_bytes', pg_catalog.pg_total_relation_size('cron.job_run_details'::regclass)
            ) INTO history
            FROM cron.job_run_details AS d
            WHERE d.jobid = (job ->> 'jobid')::bigint;
        END IF;
        report := report || jsonb_build_object(
            'job_count', (SELECT count(*) FROM cron.job WHERE jobname = 'mark-inactive-users'));
    ELSE
        report := report || jsonb_build_object('job_count', 0);
    END IF;

    RETURN report || jsonb_build_object('job', job, 'recent_runs', runs, 'run_history', history);
END;
$$;

COMMENT ON FUNCTION public.presence_setup_report() IS
    'JSON report of the presence setup (schema version, functions and their settings, grants, RLS, policies, sign-up trigger, pg_cron, job, recent runs, run history size) for verify_setup().';

REVOKE EXECUTE ON FUNCTION public.presence_setup_report() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.presence_setup_report() TO postgres, service_role;
