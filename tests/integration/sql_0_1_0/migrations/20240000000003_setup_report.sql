-- Migration 20240000000003_setup_report: presence_setup_report(), the one RPC that
-- verify_setup() calls to prove the presence setup is complete.
--
-- Returns JSON describing: the schema version, the presence timings, the users table
-- (columns, RLS), every presence function (exists, SECURITY DEFINER, who may execute
-- it), pg_cron (available, installed, version, cron.database_name) and the job
-- mark-inactive-users (schedule, command, active) with its five latest runs.
-- Executable by service_role and postgres only: it reveals configuration.
--
-- Later migrations that change the presence API replace this function and bump
-- `schema_version` (it is the only place that number lives).
--
-- Idempotent (OR REPLACE). Requires 20240000000002_presence_api.
--
-- Rollback (supabase/rollbacks/20240000000003_setup_report.sql):
--   DROP FUNCTION IF EXISTS public.presence_setup_report();

SET lock_timeout = '5s';
SET statement_timeout = '60s';

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
                '[]'::jsonb)
        ),
        'functions', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', f.name,
                'exists', p.oid IS NOT NULL,
                'security_definer', coalesce(p.prosecdef, false),
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
        END IF;
        report := report || jsonb_build_object(
            'job_count', (SELECT count(*) FROM cron.job WHERE jobname = 'mark-inactive-users'));
    ELSE
        report := report || jsonb_build_object('job_count', 0);
    END IF;

    RETURN report || jsonb_build_object('job', job, 'recent_runs', runs);
END;
$$;

COMMENT ON FUNCTION public.presence_setup_report() IS
    'JSON report of the presence setup (schema version, functions, grants, RLS, pg_cron, job, recent runs) for verify_setup().';

REVOKE EXECUTE ON FUNCTION public.presence_setup_report() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.presence_setup_report() TO postgres, service_role;
