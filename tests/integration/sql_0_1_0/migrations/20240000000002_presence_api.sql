-- Migration 20240000000002_presence_api: the presence API the SDK calls over PostgREST.
--
-- Adds:
--   * public.user_presence: security_invoker view with the presence of each user,
--     derived at read time (exact even when the sweep lags or pg_cron is missing);
--   * RPCs for signed-in users: presence_heartbeat(new_status), presence_leave(),
--     presence_settings(), presence_get(user_ids), presence_is_online(user_id),
--     presence_list_online(page_size, after_user_id), presence_counts();
--   * presence_configure(...) for the database owner: changes the timings in
--     presence_config and re-schedules the sweep.
--
-- Errors raised (SQLSTATE, as PostgREST passes them on in `code`):
--   28000 not authenticated (no auth.uid()); 22023 invalid argument (bad status,
--   too many ids, page size out of range); PT404 (HTTP 404) the user has no public.users row.
--
-- Idempotent (OR REPLACE everywhere). Requires 20240000000001_add_heartbeat.
--
-- Rollback (supabase/rollbacks/20240000000002_presence_api.sql):
--   DROP FUNCTION IF EXISTS public.presence_configure(integer, integer, integer),
--       public.presence_counts(), public.presence_list_online(integer, uuid),
--       public.presence_is_online(uuid), public.presence_get(uuid[]),
--       public.presence_settings(), public.presence_leave(),
--       public.presence_heartbeat(text);
--   DROP VIEW IF EXISTS public.user_presence;
--   DROP POLICY IF EXISTS presence_config_read ON public.presence_config;
--   REVOKE SELECT ON public.presence_config FROM anon, authenticated;

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- The timings are not secret: readers need the timeout to derive presence.
DROP POLICY IF EXISTS presence_config_read ON public.presence_config;
CREATE POLICY presence_config_read ON public.presence_config
    FOR SELECT TO anon, authenticated, service_role
    USING (true);
GRANT SELECT ON TABLE public.presence_config TO anon, authenticated;

-- Presence as of now. `online` does not trust the stored status alone: a user whose
-- last heartbeat is older than the timeout is offline whether or not the sweep ran.
CREATE OR REPLACE VIEW public.user_presence
WITH (security_invoker = true)
AS
SELECT
    u.id AS user_id,
    CASE WHEN p.online THEN u.status ELSE 'offline' END AS status,
    p.online,
    u.last_heartbeat,
    u.last_heartbeat AS last_seen,
    CASE WHEN p.online THEN u.online_since END AS online_since
FROM public.users AS u
CROSS JOIN public.presence_config AS c
CROSS JOIN LATERAL (
    SELECT coalesce(
        u.status <> 'offline'
        AND u.last_heartbeat > now() - make_interval(secs => c.timeout_seconds),
        false
    ) AS online
) AS p;

COMMENT ON VIEW public.user_presence IS
    'Presence of each user, exact at read time. Respects the RLS of public.users.';

-- Supabase's default privileges grant the API roles ALL on new relations: keep only
-- SELECT.
REVOKE ALL ON TABLE public.user_presence FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.user_presence TO authenticated, service_role;

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
        RAISE EXCEPTION 'presence: invalid status %', coalesce(quote_literal(new_status), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Status must be one of online, away, busy; call presence_leave() to go offline.';
    END IF;

    -- Losing the last heartbeat in a crash is harmless (the next one comes within
    -- seconds), so do not wait for the WAL flush: about doubles throughput.
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);

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
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;
    RETURN beat_at;
END;
$$;

COMMENT ON FUNCTION public.presence_heartbeat(text) IS
    'Records a heartbeat for auth.uid() with the server clock; returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_leave()
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
    left_at timestamptz := now();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_leave with a signed-in user''s access token.';
    END IF;
    UPDATE public.users
    SET status = 'offline', last_heartbeat = left_at, online_since = NULL
    WHERE id = uid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;
    RETURN left_at;
END;
$$;

COMMENT ON FUNCTION public.presence_leave() IS
    'Marks auth.uid() offline now (a clean goodbye); returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_settings()
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'timeout_seconds', c.timeout_seconds,
        'sweep_interval_seconds', c.sweep_interval_seconds,
        'heartbeat_interval_seconds', c.heartbeat_interval_seconds,
        'server_time', now()
    )
    FROM public.presence_config AS c;
$$;

COMMENT ON FUNCTION public.presence_settings() IS
    'The presence timings clients should use (timeout, sweep period, heartbeat interval) and the server time.';

CREATE OR REPLACE FUNCTION public.presence_get(user_ids uuid[])
RETURNS SETOF public.user_presence
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF user_ids IS NULL OR cardinality(user_ids) > 1000 THEN
        RAISE EXCEPTION 'presence: user_ids must be an array of at most 1000 ids (got %)',
            coalesce(cardinality(user_ids)::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT p.*
        FROM unnest(user_ids) WITH ORDINALITY AS wanted (user_id, ord)
        JOIN public.user_presence AS p ON p.user_id = wanted.user_id
        ORDER BY wanted.ord;
END;
$$;

COMMENT ON FUNCTION public.presence_get(uuid[]) IS
    'Presence of up to 1000 users in the order asked; ids without a visible row are left out.';

CREATE OR REPLACE FUNCTION public.presence_is_online(user_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT coalesce(
        (SELECT p.online FROM public.user_presence AS p WHERE p.user_id = presence_is_online.user_id),
        false
    );
$$;

COMMENT ON FUNCTION public.presence_is_online(uuid) IS
    'True if the user is online right now (false for unknown or invisible users).';

CREATE OR REPLACE FUNCTION public.presence_list_online(
    page_size integer DEFAULT 100,
    after_user_id uuid DEFAULT NULL
)
RETURNS SETOF public.user_presence
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF page_size IS NULL OR page_size NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'presence: page_size must be between 1 and 1000 (got %)',
            coalesce(page_size::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- Keyset pagination over the partial index users_presence_active_idx: cost grows
    -- with the number of non-offline users, never with the table size.
    RETURN QUERY
        SELECT
            u.id,
            u.status,
            true,
            u.last_heartbeat,
            u.last_heartbeat,
            u.online_since
        FROM public.users AS u
        CROSS JOIN public.presence_config AS c
        WHERE u.status <> 'offline'
          AND u.last_heartbeat > now() - make_interval(secs => c.timeout_seconds)
          AND (after_user_id IS NULL OR u.id > after_user_id)
        ORDER BY u.id
        LIMIT page_size;
END;
$$;

COMMENT ON FUNCTION public.presence_list_online(integer, uuid) IS
    'Online users ordered by id, page_size (1-1000) at a time after after_user_id (keyset pagination).';

CREATE OR REPLACE FUNCTION public.presence_counts()
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    WITH active AS (
        SELECT u.status
        FROM public.users AS u
        CROSS JOIN public.presence_config AS c
        WHERE u.status <> 'offline'
          AND u.last_heartbeat > now() - make_interval(secs => c.timeout_seconds)
    ),
    per_status AS (
        SELECT
            count(*) FILTER (WHERE status = 'online') AS online,
            count(*) FILTER (WHERE status = 'away') AS away,
            count(*) FILTER (WHERE status = 'busy') AS busy,
            count(*) AS active
        FROM active
    )
    SELECT jsonb_build_object(
        'online', s.online,
        'away', s.away,
        'busy', s.busy,
        'offline', (SELECT count(*) FROM public.users) - s.active
    )
    FROM per_status AS s;
$$;

COMMENT ON FUNCTION public.presence_counts() IS
    'Number of visible users per status (online, away, busy, offline), exact at read time.';

CREATE OR REPLACE FUNCTION public.presence_configure(
    timeout_seconds integer DEFAULT NULL,
    sweep_interval_seconds integer DEFAULT NULL,
    heartbeat_interval_seconds integer DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    UPDATE public.presence_config AS c
    SET timeout_seconds = coalesce(presence_configure.timeout_seconds, c.timeout_seconds),
        sweep_interval_seconds = coalesce(presence_configure.sweep_interval_seconds, c.sweep_interval_seconds),
        heartbeat_interval_seconds = coalesce(presence_configure.heartbeat_interval_seconds, c.heartbeat_interval_seconds),
        updated_at = now();
    PERFORM public.presence_schedule_sweep();
    RETURN public.presence_settings();
END;
$$;

COMMENT ON FUNCTION public.presence_configure(integer, integer, integer) IS
    'Changes the presence timings (NULL keeps a value) and re-schedules the sweep. Owner only.';

-- Signed-in users beat and read; the owner configures.
REVOKE EXECUTE ON FUNCTION
    public.presence_heartbeat(text), public.presence_leave(), public.presence_settings(),
    public.presence_get(uuid[]), public.presence_is_online(uuid),
    public.presence_list_online(integer, uuid), public.presence_counts(),
    public.presence_configure(integer, integer, integer)
FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION
    public.presence_heartbeat(text), public.presence_leave(), public.presence_settings(),
    public.presence_get(uuid[]), public.presence_is_online(uuid),
    public.presence_list_online(integer, uuid), public.presence_counts()
TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.presence_settings() TO anon;
REVOKE EXECUTE ON FUNCTION public.presence_configure(integer, integer, integer) FROM authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.presence_configure(integer, integer, integer) TO postgres;
