-- Migration 20240000000005_sessions: presence per connection (sessions), aggregated per
-- user, and a batch API for servers that speak for many users.
--
-- Adds:
--   * public.presence_sessions: one row per live connection (client-generated uuid),
--     with its user, status, an optional device label, bounded metadata, started_at
--     and last_beat. RLS: a signed-in user reads only their own sessions; nobody but
--     the presence functions writes it.
--   * schema presence_private (never expose it through the API): the per-user session
--     aggregate (a view that reads every session), the one function that writes
--     presence transitions to public.users (sync_users), and their helpers.
--   * RPCs for signed-in users: presence_session_beat(session_id, new_status, device,
--     metadata), presence_session_leave(session_id), presence_my_sessions().
--   * RPCs for service_role only: presence_track_beat(sessions jsonb) and
--     presence_track_end(session_ids uuid[]), up to 10,000 sessions per call.
-- Redefines, keeping their signatures, grants and results:
--   public.user_presence, presence_heartbeat, presence_leave, presence_list_online,
--   presence_counts and mark_inactive_users_offline (their previous definitions are
--   saved in presence_private.replaced_definitions; the rollback restores them).
--
-- The aggregation rule: a user is online while any session is live (last beat newer
-- than the timeout); the status is the highest of the live sessions' statuses in the
-- order online > busy > away; online_since is the start of the earliest live session;
-- last_seen is the latest beat of any session (or the time the last one ended).
-- users.status and users.online_since change only at transitions; users.last_heartbeat
-- is refreshed by a beat only when it is older than timeout - 2 * heartbeat interval,
-- so the note's troubleshooting query keeps listing exactly the users the sweep will
-- mark offline (docs/how-it-works.md explains the arithmetic).
--
-- Upgrade: users who are live right now (0.1.0 rows) get one implicit session each
-- (session_id = user id, started_at = online_since, last_beat = last_heartbeat), so
-- nobody flips offline. 0.1.0 clients keep working: presence_heartbeat/presence_leave
-- beat and end that implicit session.
--
-- Errors raised (SQLSTATE, as PostgREST passes them on in `code`):
--   28000 not authenticated; 22023 invalid argument (status, device, metadata,
--   malformed or duplicate entries, too many entries); 42501 the session belongs to
--   another user (per-user RPCs) or the caller may not execute the function;
--   PT409 (HTTP 409) a batch names sessions that belong to other users; 23503 a batch
--   names unknown users; PT404 (HTTP 404) the user has no public.users row; 40001 a
--   batch raced with another writer (nothing written, retry); 55000 the
--   public.presence_config row is missing (with the INSERT that restores it).
--
-- Idempotent (IF NOT EXISTS, OR REPLACE, ON CONFLICT DO NOTHING): re-running it changes
-- nothing. Requires 20240000000001 to 20240000000003.
--
-- Rollback (supabase/rollbacks/20240000000005_sessions.sql):
--   UPDATE public.users ... (folds every user's sessions back into the users row:
--     status = aggregate, last_heartbeat = latest beat, online_since = earliest live start)
--   EXECUTE each saved definition in presence_private.replaced_definitions
--   DROP FUNCTION IF EXISTS public.presence_track_end(uuid[]),
--       public.presence_track_beat(jsonb), public.presence_my_sessions(),
--       public.presence_session_leave(uuid),
--       public.presence_session_beat(uuid, text, text, jsonb);
--   DROP TABLE IF EXISTS public.presence_sessions;
--   DROP ... every object in schema presence_private, then DROP SCHEMA presence_private;

SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS presence_private;

COMMENT ON SCHEMA presence_private IS
    'Internals of presence_sdk. Never add it to the schemas PostgREST exposes.';

-- The API roles only need to reach the read helpers (granted one by one below).
REVOKE ALL ON SCHEMA presence_private FROM PUBLIC, anon;
GRANT USAGE ON SCHEMA presence_private TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- What the rollback restores: the definitions this migration replaces, saved once
-- (the first time it runs), before they are replaced below.

CREATE TABLE IF NOT EXISTS presence_private.replaced_definitions (
    object text PRIMARY KEY,
    position integer NOT NULL,
    ddl text NOT NULL,
    comment_ddl text,
    saved_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE presence_private.replaced_definitions IS
    'Definitions of 0.1.0 objects replaced by migrations 20240000000005_sessions and 20240000000006_events; their rollbacks restore them.';

REVOKE ALL ON TABLE presence_private.replaced_definitions FROM PUBLIC, anon, authenticated, service_role;

-- A definition that already reads sessions is never saved: re-running this file (or
-- running it after a failed rollback) keeps the originals.
INSERT INTO presence_private.replaced_definitions (object, position, ddl, comment_ddl)
SELECT f.signature, f.position, pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
                         pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM (VALUES
    ('public.presence_heartbeat(text)', 1),
    ('public.presence_leave()', 2),
    ('public.presence_list_online(integer,uuid)', 3),
    ('public.presence_counts()', 4),
    ('public.mark_inactive_users_offline()', 5)
) AS f (signature, position)
JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(f.signature)
WHERE pg_catalog.strpos(p.prosrc, 'presence_private') = 0
ON CONFLICT (object) DO NOTHING;

INSERT INTO presence_private.replaced_definitions (object, position, ddl, comment_ddl)
SELECT 'public.user_presence', 0,
       pg_catalog.format(
           'CREATE OR REPLACE VIEW public.user_presence WITH (%s) AS %s',
           pg_catalog.array_to_string(c.reloptions, ', '),
           pg_catalog.pg_get_viewdef(c.oid)
       ),
       pg_catalog.format('COMMENT ON VIEW public.user_presence IS %L',
                         pg_catalog.obj_description(c.oid, 'pg_class'))
FROM pg_catalog.pg_class AS c
WHERE c.oid = pg_catalog.to_regclass('public.user_presence')
  AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'presence_private') = 0
ON CONFLICT (object) DO NOTHING;

-- ------------------------------------------------------------------------------------
-- Sessions

CREATE TABLE IF NOT EXISTS public.presence_sessions (
    session_id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    status text NOT NULL
        CONSTRAINT presence_sessions_status_check
        CHECK (status IN ('online', 'away', 'busy')),
    device text
        CONSTRAINT presence_sessions_device_check
        CHECK (char_length(device) BETWEEN 1 AND 64),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb
        CONSTRAINT presence_sessions_metadata_check
        CHECK (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 1024),
    started_at timestamptz NOT NULL,
    last_beat timestamptz NOT NULL,
    refreshed_at timestamptz
)
-- Every live row is rewritten by each beat: half of each page stays free so the new
-- version lands on the same page (a HOT update). No index on last_beat for the same
-- reason; the sweep scans this table, whose size is the number of live sessions.
WITH (fillfactor = 50);

COMMENT ON TABLE public.presence_sessions IS
    'One row per live presence session (a connection: device, tab, websocket). Written only by the presence functions.';
COMMENT ON COLUMN public.presence_sessions.session_id IS
    'Client-generated id of the connection (a random uuid). The implicit session of a 0.1.0 client has the user''s id.';
COMMENT ON COLUMN public.presence_sessions.status IS
    'Status reported by this session: online, away or busy.';
COMMENT ON COLUMN public.presence_sessions.device IS
    'Optional short label of the device or app (1 to 64 characters).';
COMMENT ON COLUMN public.presence_sessions.metadata IS
    'Optional JSON object (at most 1024 bytes as text) the app attaches to the session.';
COMMENT ON COLUMN public.presence_sessions.started_at IS
    'Server time of the first beat of this session (or of its first beat after a timeout).';
COMMENT ON COLUMN public.presence_sessions.last_beat IS
    'Server time of the latest beat of this session.';

COMMENT ON COLUMN public.presence_sessions.refreshed_at IS
    'A users.last_heartbeat this session wrote or knows is stored (never newer than the stored one): its steady beats refresh users.last_heartbeat when this is older than timeout - 2 x heartbeat interval, without reading public.users.';

CREATE INDEX IF NOT EXISTS presence_sessions_user_id_idx
    ON public.presence_sessions (user_id);

ALTER TABLE public.presence_sessions ENABLE ROW LEVEL SECURITY;

-- auth.uid() for policies, looked up when a policy runs rather than when it is
-- created: the migrations also install on plain PostgreSQL, where the auth schema
-- (Supabase's, or the app's own) may come later, or never (PostgREST alone). Without
-- auth.uid() the caller is the "sub" claim PostgREST sets per request, which is what
-- Supabase's auth.uid() reads too. Policies call it as
-- (SELECT presence_private.caller_id()): once per statement, not per row.
CREATE OR REPLACE FUNCTION presence_private.caller_id()
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF pg_catalog.to_regprocedure('auth.uid()') IS NOT NULL THEN
        RETURN auth.uid();
    END IF;
    RETURN (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb
            OPERATOR(pg_catalog.->>) 'sub')::uuid;
END;
$$;

COMMENT ON FUNCTION presence_private.caller_id() IS
    'auth.uid(), resolved at call time (policies reference it, so they can be created before the auth schema exists); without auth.uid(), the "sub" of request.jwt.claims.';

REVOKE ALL ON FUNCTION presence_private.caller_id() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION presence_private.caller_id() TO authenticated, service_role;

DROP POLICY IF EXISTS presence_sessions_select_own ON public.presence_sessions;
CREATE POLICY presence_sessions_select_own ON public.presence_sessions
    FOR SELECT TO authenticated
    USING (user_id = (SELECT presence_private.caller_id()));

-- Supabase's default privileges grant the API roles ALL on new tables. Reads only:
-- every write goes through the functions below, which keep public.users in step.
REVOKE ALL ON TABLE public.presence_sessions FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_sessions TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Helpers (presence_private)

-- Limits, each defined once.
CREATE OR REPLACE FUNCTION presence_private.max_sessions_per_user()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT 20;
$$;

CREATE OR REPLACE FUNCTION presence_private.max_batch()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT 10000;
$$;

-- Input echoed into an error message, truncated: a 5 MB argument must not become a
-- 5 MB log line.
CREATE OR REPLACE FUNCTION presence_private.echo(value text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN value IS NULL THEN 'NULL'
        WHEN pg_catalog.char_length(value) <= 64 THEN pg_catalog.quote_literal(value)
        ELSE pg_catalog.quote_literal(pg_catalog.left(value, 64)) || '... ('
             || pg_catalog.char_length(value) || ' characters)'
    END;
$$;

-- now() - timeout, or a clear error when the settings row is gone.
CREATE OR REPLACE FUNCTION presence_private.live_after()
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    seconds integer;
BEGIN
    SELECT c.timeout_seconds INTO seconds FROM public.presence_config AS c;
    IF NOT FOUND THEN
        -- The same message and repair as the 0.1.0 heartbeat's (migrations 02 and 04).
        RAISE EXCEPTION 'presence: the public.presence_config row is missing, so no presence can be recorded or read'
            USING ERRCODE = '55000',
                  HINT = 'As postgres (Supabase SQL editor), restore the default timings: INSERT INTO public.presence_config (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING; then adjust them with public.presence_configure() if needed.';
    END IF;
    RETURN now() - make_interval(secs => seconds);
END;
$$;

COMMENT ON FUNCTION presence_private.live_after() IS
    'now() minus presence_config.timeout_seconds: a session whose last beat is newer is live. Raises 55000 if the settings row is missing.';

-- The aggregate of each user's sessions, over ALL sessions: it runs with its owner's
-- rights (not security_invoker) so that the invoker views below can show every
-- visible user's presence while presence_sessions itself only shows a user their own
-- rows. It lives in presence_private, which PostgREST does not expose.
CREATE OR REPLACE VIEW presence_private.session_presence
AS
SELECT
    s.user_id,
    count(*) FILTER (WHERE s.last_beat > now() - make_interval(secs => c.timeout_seconds))
        AS live_sessions,
    CASE
        WHEN bool_or(s.status = 'online'
                     AND s.last_beat > now() - make_interval(secs => c.timeout_seconds))
            THEN 'online'
        WHEN bool_or(s.status = 'busy'
                     AND s.last_beat > now() - make_interval(secs => c.timeout_seconds))
            THEN 'busy'
        WHEN bool_or(s.last_beat > now() - make_interval(secs => c.timeout_seconds))
            THEN 'away'
    END AS status,
    min(s.started_at) FILTER (WHERE s.last_beat > now() - make_interval(secs => c.timeout_seconds))
        AS online_since,
    max(s.last_beat) AS last_beat
FROM public.presence_sessions AS s
CROSS JOIN public.presence_config AS c
GROUP BY s.user_id;

COMMENT ON VIEW presence_private.session_presence IS
    'Per user with sessions: live sessions, aggregate status (online > busy > away), start of the earliest live session, latest beat.';

-- Presence of each user as of now, with the stored status (for the partial index).
-- security_invoker: the RLS of public.users decides which users a caller sees.
-- A user with session rows is read from them; a user without any is read from the
-- stored columns exactly as 0.1.0 did (rows written before the upgrade or by hand).
CREATE OR REPLACE VIEW presence_private.user_presence_now
WITH (security_invoker = true)
AS
SELECT
    u.id AS user_id,
    u.status AS stored_status,
    d.online,
    CASE WHEN d.online THEN d.status ELSE 'offline' END AS status,
    d.last_seen,
    CASE WHEN d.online THEN d.online_since END AS online_since
FROM public.users AS u
LEFT JOIN LATERAL (
    -- OFFSET 0 keeps this a per-user lookup (presence_sessions_user_id_idx): pulled
    -- up, it would become a join with the aggregate of every session.
    SELECT sp.live_sessions, sp.status, sp.online_since, sp.last_beat
    FROM presence_private.session_presence AS sp
    WHERE sp.user_id = u.id
    OFFSET 0
) AS a ON true
CROSS JOIN LATERAL (
    SELECT
        CASE
            WHEN a.live_sessions IS NULL
                THEN coalesce(u.status <> 'offline'
                              AND u.last_heartbeat > (SELECT presence_private.live_after()), false)
            ELSE a.live_sessions > 0
        END AS online,
        CASE WHEN a.live_sessions IS NULL THEN u.status ELSE a.status END AS status,
        CASE WHEN a.live_sessions IS NULL THEN u.online_since ELSE a.online_since END
            AS online_since,
        greatest(u.last_heartbeat, a.last_beat) AS last_seen
) AS d;

COMMENT ON VIEW presence_private.user_presence_now IS
    'Presence of each visible user, exact at read time, plus the stored status. Respects the RLS of public.users.';

-- The one place that writes presence to public.users. For the given users it
-- recomputes the aggregate from their sessions and updates the row only where
-- something changed:
--   * status and online_since: set to the aggregate (these are the transitions);
--   * last_heartbeat while live: the latest beat, written at a transition or when the
--     stored value is older than timeout - 2 * heartbeat interval (or as old as the
--     timeout); otherwise left alone, so steady beats do not write public.users;
--   * last_heartbeat when going offline: the latest beat, or seen_at (the time the
--     user's last session ended) if later.
-- It locks the users' rows (in id order) before reading their sessions, so two
-- concurrent changes of one user's sessions are applied one after the other and the
-- later one sees the earlier one's sessions. Steady beats (a live session keeping its
-- status) cannot change the aggregate and do not come here: they only refresh
-- last_heartbeat when it is due (presence_private.beat, presence_track_beat).
-- Returns the number of users whose status or online_since changed.
--
-- Planner settings (here and on the other per-user helpers):
-- * plan_cache_mode = force_generic_plan: the per-user RPCs call them with one-element
--   arrays, for which a custom plan always looks cheaper than the generic one, so
--   PostgreSQL would re-plan every statement on every call; planning these statements
--   costs several times what running them does.
-- * jit = off (here, on the batch RPCs, and on the event log's session-end trigger):
--   their statements are estimated in proportion to the batch and the tables (a
--   10,000-session batch on 1M users: 145k to 195k; 100,000 sessions timing out at
--   once: 970k), past jit_above_cost (100k), so PostgreSQL would compile them to
--   machine code on every call: that takes longer than running them (index lookups
--   and small joins), and adds inlining and optimization past 500k. The sweep's own
--   statements stay far below (a scan of the live sessions); what it calls is covered
--   here.
CREATE OR REPLACE FUNCTION presence_private.sync_users(
    user_ids uuid[],
    seen_at timestamptz[] DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
    live_after timestamptz;
    refresh_age interval;
    changed integer;
BEGIN
    IF user_ids IS NULL OR cardinality(user_ids) = 0 THEN
        RETURN 0;
    END IF;
    SELECT now() - make_interval(secs => c.timeout_seconds),
           make_interval(secs => c.timeout_seconds - 2 * c.heartbeat_interval_seconds)
    INTO live_after, refresh_age
    FROM public.presence_config AS c;
    IF NOT FOUND THEN
        PERFORM presence_private.live_after();  -- raises the clear error
    END IF;

    PERFORM 1
    FROM (SELECT DISTINCT w.id FROM unnest(user_ids) AS w (id)) AS w
    JOIN public.users AS u ON u.id = w.id
    ORDER BY u.id
    FOR NO KEY UPDATE OF u;

    WITH hint AS (
        SELECT h.user_id, max(h.seen_at) AS seen_at
        FROM unnest(user_ids, seen_at) AS h (user_id, seen_at)
        WHERE h.user_id IS NOT NULL
        GROUP BY h.user_id
    ),
    now_state AS (
        SELECT
            u.id,
            u.status AS old_status,
            u.online_since AS old_since,
            u.last_heartbeat AS old_beat,
            coalesce(a.live_sessions, 0) > 0 AS live,
            a.status AS agg_status,
            a.online_since AS agg_since,
            a.last_beat AS latest,
            h.seen_at
        FROM hint AS h
        JOIN public.users AS u ON u.id = h.user_id
        LEFT JOIN LATERAL (
            SELECT sp.live_sessions, sp.status, sp.online_since, sp.last_beat
            FROM presence_private.session_presence AS sp
            WHERE sp.user_id = u.id
            OFFSET 0
        ) AS a ON true
    ),
    wanted AS (
        SELECT
            n.id,
            n.old_status,
            n.old_since,
            CASE WHEN n.live THEN n.agg_status ELSE 'offline' END AS status,
            CASE WHEN n.live THEN n.agg_since END AS online_since,
            CASE
                WHEN n.live AND (
                    n.old_status IS DISTINCT FROM n.agg_status
                    OR n.old_since IS DISTINCT FROM n.agg_since
                    OR n.old_beat IS NULL
                    OR n.old_beat < n.latest - refresh_age
                    OR n.old_beat <= live_after
                ) THEN n.latest
                WHEN n.live THEN n.old_beat
                WHEN n.old_status IS DISTINCT FROM 'offline' OR n.seen_at IS NOT NULL
                    THEN greatest(n.old_beat, n.latest, n.seen_at)
                ELSE n.old_beat
            END AS last_heartbeat
        FROM now_state AS n
    ),
    written AS (
        UPDATE public.users AS u
        SET status = w.status,
            online_since = w.online_since,
            last_heartbeat = w.last_heartbeat
        FROM wanted AS w
        WHERE u.id = w.id
          AND (u.status, u.online_since, u.last_heartbeat)
              IS DISTINCT FROM (w.status, w.online_since, w.last_heartbeat)
        RETURNING (w.old_status IS DISTINCT FROM w.status
                   OR w.old_since IS DISTINCT FROM w.online_since) AS transition
    )
    SELECT count(*) FILTER (WHERE transition) INTO changed FROM written;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION presence_private.sync_users(uuid[], timestamptz[]) IS
    'Writes the aggregate of the given users'' sessions to public.users where it changed; the only writer of presence transitions. Returns the number of users whose status or online_since changed.';

-- 0.1.0 rows that are live right now become an implicit session (session_id = user
-- id), so that the first session a user opens after the upgrade does not hide them.
-- Only users without any session row; user_ids NULL means every user.
CREATE OR REPLACE FUNCTION presence_private.adopt_legacy(user_ids uuid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    live_after timestamptz := presence_private.live_after();
    adopted integer;
BEGIN
    -- Two statements so that each uses its index: the primary key for a few users,
    -- the partial index users_presence_active_idx for everyone.
    IF user_ids IS NULL THEN
        INSERT INTO public.presence_sessions AS s
            (session_id, user_id, status, started_at, last_beat)
        SELECT
            u.id,
            u.id,
            u.status,
            least(coalesce(u.online_since, u.last_heartbeat), u.last_heartbeat, now()),
            least(u.last_heartbeat, now())
        FROM public.users AS u
        WHERE u.status <> 'offline'
          AND u.status IN ('online', 'away', 'busy')
          AND u.last_heartbeat > live_after
          AND NOT EXISTS (SELECT 1 FROM public.presence_sessions AS o WHERE o.user_id = u.id)
        ON CONFLICT (session_id) DO NOTHING;
    ELSE
        INSERT INTO public.presence_sessions AS s
            (session_id, user_id, status, started_at, last_beat)
        SELECT
            u.id,
            u.id,
            u.status,
            least(coalesce(u.online_since, u.last_heartbeat), u.last_heartbeat, now()),
            least(u.last_heartbeat, now())
        FROM unnest(user_ids) AS w (id)
        -- One primary-key lookup per user (OFFSET 0 keeps it one): as a join, a plan
        -- cached while few users were online could scan users_presence_active_idx whole.
        CROSS JOIN LATERAL (
            SELECT x.id, x.status, x.online_since, x.last_heartbeat
            FROM public.users AS x
            WHERE x.id = w.id
            OFFSET 0
        ) AS u
        WHERE u.status IN ('online', 'away', 'busy')
          AND u.last_heartbeat > live_after
          -- a per-row lookup by presence_sessions_user_id_idx, never a join with the table
          AND (SELECT count(*) FROM public.presence_sessions AS o WHERE o.user_id = u.id) = 0
        ON CONFLICT (session_id) DO NOTHING;
    END IF;
    GET DIAGNOSTICS adopted = ROW_COUNT;
    RETURN adopted;
END;
$$;

COMMENT ON FUNCTION presence_private.adopt_legacy(uuid[]) IS
    'Turns live 0.1.0 presence rows (no session yet) into implicit sessions; NULL means every user. Returns the number adopted.';

-- The cap: beyond max_sessions_per_user() sessions, the ones that beat least
-- recently are ended (dead sessions first).
CREATE OR REPLACE FUNCTION presence_private.evict_over_cap(user_ids uuid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    evicted integer;
BEGIN
    -- Per user, a lookup by presence_sessions_user_id_idx (LATERAL keeps it one, however
    -- the table's size was estimated when this plan was cached).
    DELETE FROM public.presence_sessions AS s
    WHERE s.session_id = ANY (ARRAY(
        SELECT x.session_id
        FROM unnest(user_ids) AS w (id)
        CROSS JOIN LATERAL (
            SELECT
                o.session_id,
                row_number() OVER (
                    ORDER BY o.last_beat DESC, o.started_at DESC, o.session_id DESC
                ) AS rank
            FROM public.presence_sessions AS o
            WHERE o.user_id = w.id
        ) AS x
        WHERE x.rank > presence_private.max_sessions_per_user()
    ));
    GET DIAGNOSTICS evicted = ROW_COUNT;
    RETURN evicted;
END;
$$;

COMMENT ON FUNCTION presence_private.evict_over_cap(uuid[]) IS
    'Ends the least recently beating sessions of each given user beyond max_sessions_per_user().';

-- One beat of one session of one user (the per-user RPCs), past the fast path of
-- presence_session_beat: a late steady beat (below), a new session, one that revives
-- after a timeout, or a status change. The last three go through sync_users, the one
-- writer of transitions.
CREATE OR REPLACE FUNCTION presence_private.beat(
    uid uuid,
    sid uuid,
    new_status text,
    new_device text,
    new_metadata jsonb
)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    beat_at timestamptz := now();
    live_after timestamptz;
    stored_status text;
    known_beat timestamptz;
BEGIN
    IF new_status IS NULL OR new_status NOT IN ('online', 'away', 'busy') THEN
        RAISE EXCEPTION 'presence: invalid status %', presence_private.echo(new_status)
            USING ERRCODE = '22023',
                  HINT = 'Status must be one of online, away, busy; end the session (presence_leave or presence_session_leave) to go offline.';
    END IF;
    IF sid IS NULL THEN
        RAISE EXCEPTION 'presence: session_id must not be null'
            USING ERRCODE = '22023',
                  HINT = 'Generate a random uuid per connection.';
    END IF;
    IF new_device IS NOT NULL AND char_length(new_device) NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'presence: device must be 1 to 64 characters (got %)',
            char_length(new_device)
            USING ERRCODE = '22023',
                  HINT = 'Pass a short label such as ''web'' or ''ios'', or NULL to keep the stored one.';
    END IF;
    IF new_metadata IS NOT NULL AND (jsonb_typeof(new_metadata) <> 'object'
                                     OR octet_length(new_metadata::text) > 1024) THEN
        RAISE EXCEPTION 'presence: metadata must be a JSON object of at most 1024 bytes (got % of % bytes)',
            jsonb_typeof(new_metadata), octet_length(new_metadata::text)
            USING ERRCODE = '22023',
                  HINT = 'Pass a small JSON object, or NULL to keep the stored one.';
    END IF;

    -- Losing a beat in a crash is harmless (the next one comes within seconds), so do
    -- not wait for the WAL flush. The setting holds until the end of the transaction
    -- and applies to its COMMIT, so it is only taken when this is the transaction's
    -- first write (no transaction id yet), as in PostgREST's one-call transactions: a
    -- caller's earlier writes keep the durability they asked for (as migration 04's
    -- heartbeat does).
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    END IF;

    -- A late steady beat (a live session keeping its status, whose previous beat came
    -- too late for the fast path: a lost beat) is no transition either. Its session
    -- may be near its timeout, where a sweep or leave running alongside could take it
    -- for timed out, so this one reads the stored status in the same statement: a
    -- status that is not live (left behind by such a race) gets a full sync. One
    -- statement: the session's beat and, when due (see sync_users), the refresh of
    -- users.last_heartbeat; refreshed_at records what users.last_heartbeat then holds.
    WITH beaten AS (
        UPDATE public.presence_sessions AS s
        SET last_beat = beat_at,
            device = coalesce(new_device, s.device),
            metadata = coalesce(new_metadata, s.metadata),
            refreshed_at = CASE
                WHEN u.last_heartbeat IS NULL OR u.last_heartbeat < c.refresh_before THEN beat_at
                ELSE u.last_heartbeat
            END
        FROM (
            SELECT c.timeout_seconds,
                   beat_at - make_interval(
                       secs => c.timeout_seconds - 2 * c.heartbeat_interval_seconds) AS refresh_before
            FROM public.presence_config AS c
        ) AS c,
        public.users AS u
        WHERE s.session_id = sid
          AND s.user_id = uid
          AND s.status = new_status
          AND s.last_beat > beat_at - make_interval(secs => c.timeout_seconds)
          AND u.id = uid
        RETURNING u.status, c.refresh_before
    ),
    refreshed AS (
        UPDATE public.users AS u
        SET last_heartbeat = beat_at
        FROM beaten AS b
        WHERE u.id = uid
          AND u.status IN ('online', 'away', 'busy')
          AND (u.last_heartbeat IS NULL OR u.last_heartbeat < b.refresh_before)
        RETURNING 1
    )
    SELECT b.status INTO stored_status FROM beaten AS b;

    IF FOUND THEN
        IF stored_status IS NULL OR stored_status NOT IN ('online', 'away', 'busy') THEN
            PERFORM presence_private.sync_users(ARRAY[uid]);
        END IF;
        RETURN beat_at;
    END IF;

    live_after := presence_private.live_after();  -- raises if the settings row is gone

    -- The users.last_heartbeat this session can count on after the sync below (its
    -- refreshed_at, for the fast path): a user who is not live now has a transition,
    -- which writes this beat; otherwise the stored value, which the sync may only
    -- move forward. Never newer than what users will hold, so never a missed refresh.
    SELECT CASE WHEN u.status IN ('online', 'away', 'busy') THEN u.last_heartbeat ELSE beat_at END
    INTO known_beat
    FROM public.users AS u
    WHERE u.id = uid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;

    -- A status change, or a session that timed out and starts again.
    UPDATE public.presence_sessions AS s
    SET status = new_status,
        last_beat = beat_at,
        started_at = CASE WHEN s.last_beat > live_after THEN s.started_at ELSE beat_at END,
        device = coalesce(new_device, s.device),
        metadata = coalesce(new_metadata, s.metadata),
        refreshed_at = greatest(s.refreshed_at, known_beat)
    WHERE s.session_id = sid AND s.user_id = uid;

    IF NOT FOUND THEN
        -- A new session (or one the sweep just ended).
        IF EXISTS (SELECT 1 FROM public.presence_sessions AS s WHERE s.session_id = sid)
           OR (sid <> uid AND EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = sid)) THEN
            RAISE EXCEPTION 'presence: session % belongs to another user', sid
                USING ERRCODE = '42501',
                      HINT = 'Use a new random uuid per connection.';
        END IF;
        PERFORM presence_private.adopt_legacy(ARRAY[uid]);
        INSERT INTO public.presence_sessions AS s
            (session_id, user_id, status, device, metadata, started_at, last_beat, refreshed_at)
        VALUES (sid, uid, new_status, new_device, coalesce(new_metadata, '{}'::jsonb), beat_at, beat_at,
                known_beat)
        ON CONFLICT (session_id) DO UPDATE
        SET status = excluded.status,
            last_beat = excluded.last_beat,
            started_at = CASE WHEN s.last_beat > live_after THEN s.started_at ELSE excluded.started_at END,
            device = coalesce(new_device, s.device),
            metadata = coalesce(new_metadata, s.metadata),
            refreshed_at = greatest(s.refreshed_at, excluded.refreshed_at)
        WHERE s.user_id = excluded.user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'presence: session % belongs to another user', sid
                USING ERRCODE = '42501',
                      HINT = 'Use a new random uuid per connection.';
        END IF;
        PERFORM presence_private.evict_over_cap(ARRAY[uid]);
    END IF;

    PERFORM presence_private.sync_users(ARRAY[uid]);
    RETURN beat_at;
END;
$$;

COMMENT ON FUNCTION presence_private.beat(uuid, uuid, text, text, jsonb) IS
    'Beats (creating if needed) session sid of user uid; writes public.users only through sync_users.';

-- Ends one session of one user (the per-user RPCs). `always_sync`: the 0.1.0 leave,
-- which also ends presence written by hand into the users row.
CREATE OR REPLACE FUNCTION presence_private.leave(uid uuid, sid uuid, always_sync boolean)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    left_at timestamptz := now();
    ended boolean;
BEGIN
    IF sid IS NULL THEN
        RAISE EXCEPTION 'presence: session_id must not be null'
            USING ERRCODE = '22023';
    END IF;
    DELETE FROM public.presence_sessions AS s WHERE s.session_id = sid AND s.user_id = uid;
    ended := FOUND;
    IF NOT ended AND EXISTS (SELECT 1 FROM public.presence_sessions AS s WHERE s.session_id = sid) THEN
        RAISE EXCEPTION 'presence: session % belongs to another user', sid
            USING ERRCODE = '42501',
                  HINT = 'A user can only end their own sessions.';
    END IF;
    IF always_sync AND NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = uid) THEN
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;
    IF ended OR always_sync THEN
        PERFORM presence_private.sync_users(ARRAY[uid], ARRAY[left_at]);
    END IF;
    RETURN left_at;
END;
$$;

COMMENT ON FUNCTION presence_private.leave(uuid, uuid, boolean) IS
    'Ends session sid of user uid (idempotent for unknown ids); raises 42501 for another user''s session.';

REVOKE ALL ON FUNCTION
    presence_private.max_sessions_per_user(), presence_private.max_batch(),
    presence_private.echo(text), presence_private.live_after(),
    presence_private.sync_users(uuid[], timestamptz[]),
    presence_private.adopt_legacy(uuid[]), presence_private.evict_over_cap(uuid[]),
    presence_private.beat(uuid, uuid, text, text, jsonb),
    presence_private.leave(uuid, uuid, boolean)
FROM PUBLIC, anon, authenticated, service_role;
-- The read views call live_after() as the caller.
GRANT EXECUTE ON FUNCTION presence_private.live_after() TO authenticated, service_role;

REVOKE ALL ON TABLE presence_private.session_presence, presence_private.user_presence_now
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.session_presence, presence_private.user_presence_now
TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Reads: the same columns and results as 0.1.0, derived from the sessions.

CREATE OR REPLACE VIEW public.user_presence
WITH (security_invoker = true)
AS
SELECT
    p.user_id,
    p.status,
    p.online,
    p.last_seen AS last_heartbeat,
    p.last_seen,
    p.online_since
FROM presence_private.user_presence_now AS p;

COMMENT ON VIEW public.user_presence IS
    'Presence of each user, exact at read time, aggregated over their sessions. Respects the RLS of public.users.';

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
    -- Keyset pagination over the partial index users_presence_active_idx (every user
    -- with a live session has a stored status other than offline): cost grows with
    -- the number of online users, never with the table size.
    RETURN QUERY
        SELECT p.user_id, p.status, true, p.last_seen, p.last_seen, p.online_since
        FROM presence_private.user_presence_now AS p
        WHERE p.stored_status <> 'offline'
          AND p.online
          AND (after_user_id IS NULL OR p.user_id > after_user_id)
        ORDER BY p.user_id
        LIMIT page_size;
END;
$$;

CREATE OR REPLACE FUNCTION public.presence_counts()
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    -- The rule of presence_private.user_presence_now, as one join of the online users
    -- (partial index users_presence_active_idx) with the aggregate of all sessions:
    -- a hash join here beats one index lookup per online user.
    WITH live AS (
        SELECT CASE WHEN sp.user_id IS NULL THEN u.status ELSE sp.status END AS status
        FROM public.users AS u
        LEFT JOIN presence_private.session_presence AS sp ON sp.user_id = u.id
        WHERE u.status <> 'offline'
          AND CASE
                  WHEN sp.user_id IS NULL
                      THEN u.last_heartbeat > (SELECT presence_private.live_after())
                  ELSE sp.live_sessions > 0
              END
    ),
    per_status AS (
        SELECT
            count(*) FILTER (WHERE live.status = 'online') AS online,
            count(*) FILTER (WHERE live.status = 'away') AS away,
            count(*) FILTER (WHERE live.status = 'busy') AS busy,
            count(*) AS active
        FROM live
    )
    SELECT jsonb_build_object(
        'online', s.online,
        'away', s.away,
        'busy', s.busy,
        'offline', (SELECT count(*) FROM public.users) - s.active
    )
    FROM per_status AS s;
$$;

-- ------------------------------------------------------------------------------------
-- Per-user RPCs (signed-in users)

CREATE OR REPLACE FUNCTION public.presence_session_beat(
    session_id uuid,
    new_status text DEFAULT 'online',
    device text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
    refresh boolean;
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_session_beat with a signed-in user''s access token.';
    END IF;
    -- The steady beat (nearly every beat), inline; everything else goes to
    -- presence_private.beat (checks, new sessions, status changes, late beats).
    --
    -- Steady means: the session keeps its status and its previous beat is less than
    -- timeout - heartbeat interval old by the clock of this check. Such a session is
    -- live by a margin of a whole heartbeat interval, so no sweep or leave running
    -- alongside can take it for timed out (they judge by their own start time) and
    -- write its user offline while this beat is in flight. public.users is not read:
    -- the session row says when it last refreshed users.last_heartbeat (refreshed_at),
    -- and the refresh is due when that is older than timeout - 2 x heartbeat interval
    -- (the seed contract's bound, docs/how-it-works.md). Only then is public.users
    -- written, in a statement of its own; a stored status that is not live at that
    -- moment (written by hand, or left by a race) gets a full sync.
    IF (device IS NULL OR char_length(device) BETWEEN 1 AND 64)
       AND (metadata IS NULL OR (jsonb_typeof(metadata) = 'object'
                                 AND octet_length(metadata::text) <= 1024)) THEN
        IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN  -- first write only
            PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
        END IF;
        UPDATE public.presence_sessions AS s
        SET last_beat = now(),
            device = coalesce(presence_session_beat.device, s.device),
            metadata = coalesce(presence_session_beat.metadata, s.metadata),
            refreshed_at = CASE
                WHEN s.refreshed_at > now() - make_interval(
                         secs => c.timeout_seconds - 2 * c.heartbeat_interval_seconds)
                    THEN s.refreshed_at
                ELSE now()
            END
        FROM public.presence_config AS c
        WHERE s.session_id = presence_session_beat.session_id
          AND s.user_id = uid
          AND s.status = new_status
          AND s.last_beat > pg_catalog.clock_timestamp() - make_interval(
                  secs => c.timeout_seconds - c.heartbeat_interval_seconds)
        RETURNING s.refreshed_at = now() INTO refresh;
        IF FOUND THEN
            IF refresh THEN
                UPDATE public.users AS u
                SET last_heartbeat = now()
                WHERE u.id = uid
                  AND u.status IN ('online', 'away', 'busy')
                  AND (u.last_heartbeat IS NULL OR u.last_heartbeat < now());
                IF NOT FOUND THEN
                    PERFORM presence_private.sync_users(ARRAY[uid]);
                END IF;
            END IF;
            RETURN now();
        END IF;
    END IF;
    RETURN presence_private.beat(uid, session_id, new_status, device, metadata);
END;
$$;

COMMENT ON FUNCTION public.presence_session_beat(uuid, text, text, jsonb) IS
    'Beats session session_id of auth.uid() (creating it on its first beat; NULL device/metadata keep the stored ones); returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_session_leave(session_id uuid)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_session_leave with a signed-in user''s access token.';
    END IF;
    RETURN presence_private.leave(uid, session_id, false);
END;
$$;

COMMENT ON FUNCTION public.presence_session_leave(uuid) IS
    'Ends session session_id of auth.uid() now (unknown ids: nothing to do); returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_my_sessions()
RETURNS TABLE (
    session_id uuid,
    status text,
    device text,
    metadata jsonb,
    started_at timestamptz,
    last_beat timestamptz,
    live boolean
)
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_my_sessions with a signed-in user''s access token.';
    END IF;
    -- Runs as the caller: the RLS policy presence_sessions_select_own applies too.
    RETURN QUERY
        SELECT s.session_id, s.status, s.device, s.metadata, s.started_at, s.last_beat,
               s.last_beat > presence_private.live_after()
        FROM public.presence_sessions AS s
        WHERE s.user_id = uid
        ORDER BY s.started_at, s.session_id;
END;
$$;

COMMENT ON FUNCTION public.presence_my_sessions() IS
    'The sessions (devices) of auth.uid(), oldest first, with whether each is live.';

-- 0.1.0's per-user RPCs: one implicit session per user, whose id is the user's id.
CREATE OR REPLACE FUNCTION public.presence_heartbeat(new_status text DEFAULT 'online')
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
    refresh boolean;
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_heartbeat with a signed-in user''s access token.';
    END IF;
    -- The steady beat of the implicit session, inline: the fast path of
    -- presence_session_beat (see there why it is safe and what it writes).
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN  -- first write only
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    END IF;
    UPDATE public.presence_sessions AS s
    SET last_beat = now(),
        refreshed_at = CASE
            WHEN s.refreshed_at > now() - make_interval(
                     secs => c.timeout_seconds - 2 * c.heartbeat_interval_seconds)
                THEN s.refreshed_at
            ELSE now()
        END
    FROM public.presence_config AS c
    WHERE s.session_id = uid
      AND s.user_id = uid
      AND s.status = new_status
      AND s.last_beat > pg_catalog.clock_timestamp() - make_interval(
              secs => c.timeout_seconds - c.heartbeat_interval_seconds)
    RETURNING s.refreshed_at = now() INTO refresh;
    IF FOUND THEN
        IF refresh THEN
            UPDATE public.users AS u
            SET last_heartbeat = now()
            WHERE u.id = uid
              AND u.status IN ('online', 'away', 'busy')
              AND (u.last_heartbeat IS NULL OR u.last_heartbeat < now());
            IF NOT FOUND THEN
                PERFORM presence_private.sync_users(ARRAY[uid]);
            END IF;
        END IF;
        RETURN now();
    END IF;
    RETURN presence_private.beat(uid, uid, new_status, NULL, NULL);
END;
$$;

COMMENT ON FUNCTION public.presence_heartbeat(text) IS
    'Records a heartbeat for auth.uid() with the server clock (the user''s implicit session); returns the server time used.';

CREATE OR REPLACE FUNCTION public.presence_leave()
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_leave with a signed-in user''s access token.';
    END IF;
    RETURN presence_private.leave(uid, uid, true);
END;
$$;

COMMENT ON FUNCTION public.presence_leave() IS
    'Ends the implicit session of auth.uid() now (the user stays online through other live sessions); returns the server time used.';

-- ------------------------------------------------------------------------------------
-- Batch RPCs (service_role): a server beats and ends the sessions it holds.

CREATE OR REPLACE FUNCTION public.presence_track_beat(sessions jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET jit = off
AS $$
DECLARE
    beat_at timestamptz := now();
    live_after timestamptz := presence_private.live_after();
    refresh_before timestamptz;
    total integer;
    bad integer;
    detail text;
    sids uuid[];
    uids uuid[];
    statuses text[];
    devices text[];
    metas jsonb[];
    is_new boolean[];
    foreign_count integer;
    foreign_detail text;
    unknown_count integer;
    unknown_detail text;
    new_users uuid[];
    structural_users uuid[];
    refresh_users uuid[];
    written integer;
BEGIN
    IF sessions IS NULL OR pg_catalog.jsonb_typeof(sessions) <> 'array' THEN
        RAISE EXCEPTION 'presence: sessions must be a JSON array of objects (got %)',
            coalesce(pg_catalog.jsonb_typeof(sessions), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Send [{"session_id": "<uuid>", "user_id": "<uuid>", "status": "online"}, ...].';
    END IF;
    total := pg_catalog.jsonb_array_length(sessions);
    IF total > presence_private.max_batch() THEN
        RAISE EXCEPTION 'presence: at most % sessions per call (got %)',
            presence_private.max_batch(), total
            USING ERRCODE = '22023',
                  HINT = 'Split the sessions into several calls.';
    END IF;
    IF total = 0 THEN
        RETURN jsonb_build_object('beat_at', beat_at, 'count', 0);
    END IF;
    SELECT beat_at - make_interval(secs => c.timeout_seconds - 2 * c.heartbeat_interval_seconds)
    INTO refresh_before
    FROM public.presence_config AS c;

    -- 1. Shape of every entry (all or nothing: any bad entry rejects the call).
    --    Fast path: let jsonb_to_recordset type every field at C speed; only when that
    --    fails or finds a problem does the entry-by-entry check below run, to say which
    --    entries are wrong and why.
    BEGIN
        WITH entry AS MATERIALIZED (
            SELECT r.session_id, r.user_id, r.status, r.device, r.metadata
            FROM jsonb_to_recordset(sessions)
                AS r (session_id uuid, user_id uuid, status jsonb, device jsonb, metadata jsonb)
        ),
        typed AS (
            SELECT
                e.session_id,
                e.user_id,
                coalesce(e.status #>> '{}', 'online') AS status,
                e.device #>> '{}' AS device,
                nullif(e.metadata, 'null'::jsonb) AS metadata,
                e.session_id IS NULL
                    OR e.user_id IS NULL
                    OR coalesce(jsonb_typeof(e.status), 'null') NOT IN ('null', 'string')
                    OR coalesce(e.status #>> '{}', 'online') NOT IN ('online', 'away', 'busy')
                    OR coalesce(jsonb_typeof(e.device), 'null') NOT IN ('null', 'string')
                    OR char_length(e.device #>> '{}') NOT BETWEEN 1 AND 64
                    OR coalesce(jsonb_typeof(e.metadata), 'null') NOT IN ('null', 'object')
                    OR octet_length(e.metadata::text) > 1024
                    AS problem
            FROM entry AS e
            ORDER BY e.session_id
        )
        SELECT
            count(*) FILTER (WHERE t.problem)
                + (SELECT count(*) FROM jsonb_array_elements(sessions) AS k (value)
                   WHERE (k.value - ARRAY['session_id', 'user_id', 'status', 'device', 'metadata'])
                         <> '{}'::jsonb),
            array_agg(t.session_id),
            array_agg(t.user_id),
            array_agg(t.status),
            array_agg(t.device),
            array_agg(t.metadata)
        INTO bad, sids, uids, statuses, devices, metas
        FROM typed AS t;
    EXCEPTION WHEN data_exception THEN
        bad := -1;  -- a field of the wrong type (e.g. a malformed uuid)
    END;

    IF bad <> 0 THEN
        WITH checked AS MATERIALIZED (
            SELECT
                e.ord,
                CASE
                    WHEN jsonb_typeof(e.value) <> 'object'
                        THEN 'not a JSON object: ' || presence_private.echo(e.value::text)
                    WHEN (e.value - ARRAY['session_id', 'user_id', 'status', 'device', 'metadata'])
                         <> '{}'::jsonb
                        THEN 'unknown key ' || presence_private.echo((
                            SELECT min(k.key)
                            FROM jsonb_object_keys(
                                e.value - ARRAY['session_id', 'user_id', 'status', 'device', 'metadata']
                            ) AS k (key)))
                    WHEN jsonb_typeof(e.value -> 'session_id') IS DISTINCT FROM 'string'
                         OR (e.value ->> 'session_id')
                            !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                        THEN 'session_id is not a uuid: '
                             || presence_private.echo((e.value -> 'session_id')::text)
                    WHEN jsonb_typeof(e.value -> 'user_id') IS DISTINCT FROM 'string'
                         OR (e.value ->> 'user_id')
                            !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                        THEN 'user_id is not a uuid: '
                             || presence_private.echo((e.value -> 'user_id')::text)
                    WHEN coalesce(jsonb_typeof(e.value -> 'status'), 'null') <> 'null'
                         AND (jsonb_typeof(e.value -> 'status') <> 'string'
                              OR (e.value ->> 'status') NOT IN ('online', 'away', 'busy'))
                        THEN 'status must be online, away or busy: '
                             || presence_private.echo((e.value -> 'status')::text)
                    WHEN coalesce(jsonb_typeof(e.value -> 'device'), 'null') <> 'null'
                         AND (jsonb_typeof(e.value -> 'device') <> 'string'
                              OR char_length(e.value ->> 'device') NOT BETWEEN 1 AND 64)
                        THEN 'device must be a string of 1 to 64 characters: '
                             || presence_private.echo((e.value -> 'device')::text)
                    WHEN coalesce(jsonb_typeof(e.value -> 'metadata'), 'null') <> 'null'
                         AND (jsonb_typeof(e.value -> 'metadata') <> 'object'
                              OR octet_length((e.value -> 'metadata')::text) > 1024)
                        THEN 'metadata must be a JSON object of at most 1024 bytes (got '
                             || jsonb_typeof(e.value -> 'metadata') || ' of '
                             || octet_length((e.value -> 'metadata')::text) || ' bytes)'
                END AS problem
            FROM jsonb_array_elements(sessions) WITH ORDINALITY AS e (value, ord)
        )
        SELECT
            count(*) FILTER (WHERE c.problem IS NOT NULL),
            array_to_string((array_agg('#' || c.ord || ': ' || c.problem ORDER BY c.ord)
                             FILTER (WHERE c.problem IS NOT NULL))[1:5], '; ')
        INTO bad, detail
        FROM checked AS c;
        RAISE EXCEPTION 'presence: % of % session entries are invalid; nothing was written', bad, total
            USING ERRCODE = '22023',
                  DETAIL = coalesce(detail, 'an entry does not match the expected types')
                           || CASE WHEN bad > 5 THEN '; ...' ELSE '' END,
                  HINT = 'Each entry: {"session_id": uuid, "user_id": uuid, "status": "online"|"away"|"busy" (optional), "device": text (1-64, optional), "metadata": object (<= 1024 bytes, optional)}.';
    END IF;

    -- 2. Duplicates within the call.
    SELECT count(*), array_to_string((array_agg(d.sid::text ORDER BY d.sid))[1:5], ', ')
    INTO bad, detail
    FROM (SELECT b.sid FROM unnest(sids) AS b (sid) GROUP BY b.sid HAVING count(*) > 1) AS d;
    IF bad > 0 THEN
        RAISE EXCEPTION 'presence: % session ids appear more than once in this call; nothing was written', bad
            USING ERRCODE = '22023',
                  DETAIL = 'duplicated: ' || detail || CASE WHEN bad > 5 THEN ', ...' ELSE '' END,
                  HINT = 'Send each session once per call.';
    END IF;

    -- 3. One look at the stored rows for every entry: whose the session is, whether the
    --    user exists, and what the beat changes.
    WITH batch AS (
        SELECT b.ord, b.sid, b.uid, b.status
        FROM unnest(sids, uids, statuses) WITH ORDINALITY AS b (sid, uid, status, ord)
    ),
    looked AS (
        SELECT
            batch.ord,
            batch.sid,
            batch.uid,
            s.session_id IS NULL AS is_new,
            -- another user's session, or (for a new one) another user's implicit id
            coalesce(s.user_id <> batch.uid, false)
                OR (s.session_id IS NULL AND batch.sid <> batch.uid
                    AND EXISTS (SELECT 1 FROM public.users AS r WHERE r.id = batch.sid))
                AS is_foreign,
            u.id IS NULL AS unknown_user,
            s.session_id IS NULL OR s.status <> batch.status OR s.last_beat <= live_after
                AS structural,
            u.status IS NULL OR u.status NOT IN ('online', 'away', 'busy') AS stale_user,
            u.last_heartbeat IS NULL OR u.last_heartbeat < refresh_before AS refresh_due
        FROM batch
        -- One index lookup per entry (OFFSET 0 keeps each a lookup): the cost of a call
        -- follows its size, never the size of the tables.
        LEFT JOIN LATERAL (
            SELECT x.session_id, x.user_id, x.status, x.last_beat
            FROM public.presence_sessions AS x
            WHERE x.session_id = batch.sid
            OFFSET 0
        ) AS s ON true
        LEFT JOIN LATERAL (
            SELECT x.id, x.status, x.last_heartbeat
            FROM public.users AS x
            WHERE x.id = batch.uid
            OFFSET 0
        ) AS u ON true
    )
    SELECT
        count(*) FILTER (WHERE l.is_foreign),
        array_to_string((array_agg(l.sid || ' (given user ' || l.uid || ')' ORDER BY l.ord)
                         FILTER (WHERE l.is_foreign))[1:5], '; '),
        count(DISTINCT l.uid) FILTER (WHERE l.unknown_user),
        array_to_string((array_agg(DISTINCT l.uid::text) FILTER (WHERE l.unknown_user))[1:5], ', '),
        array_agg(l.is_new ORDER BY l.ord),
        array_agg(DISTINCT l.uid) FILTER (WHERE l.is_new),
        array_agg(DISTINCT l.uid) FILTER (WHERE l.structural OR l.stale_user),
        array_agg(DISTINCT l.uid) FILTER (WHERE l.refresh_due)
    INTO foreign_count, foreign_detail, unknown_count, unknown_detail, is_new,
         new_users, structural_users, refresh_users
    FROM looked AS l;
    IF foreign_count > 0 THEN
        RAISE EXCEPTION 'presence: % sessions belong to other users; nothing was written', foreign_count
            USING ERRCODE = 'PT409',
                  DETAIL = foreign_detail || CASE WHEN foreign_count > 5 THEN '; ...' ELSE '' END,
                  HINT = 'A session id names one connection of one user: use a new random uuid per connection.';
    END IF;
    IF unknown_count > 0 THEN
        RAISE EXCEPTION 'presence: % user ids have no public.users row; nothing was written', unknown_count
            USING ERRCODE = '23503',
                  DETAIL = 'unknown: ' || unknown_detail || CASE WHEN unknown_count > 5 THEN ', ...' ELSE '' END,
                  HINT = 'Track only users that exist in public.users.';
    END IF;

    -- Asynchronous commit, only when these beats are the transaction's first write
    -- (see presence_private.beat).
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    END IF;

    -- 4. Users about to get their first session keep their live 0.1.0 presence.
    IF new_users IS NOT NULL THEN
        PERFORM presence_private.adopt_legacy(new_users);
    END IF;

    -- 5. The write: one statement for the whole batch.
    WITH batch AS (
        SELECT b.session_id, b.user_id, b.status, b.device, b.metadata, b.is_new
        FROM unnest(sids, uids, statuses, devices, metas, is_new)
            AS b (session_id, user_id, status, device, metadata, is_new)
    ),
    updated AS (
        UPDATE public.presence_sessions AS s
        SET status = batch.status,
            last_beat = beat_at,
            started_at = CASE WHEN s.last_beat > live_after THEN s.started_at ELSE beat_at END,
            device = coalesce(batch.device, s.device),
            metadata = coalesce(batch.metadata, s.metadata)
        FROM batch
        WHERE s.session_id = batch.session_id
          AND s.session_id = ANY (sids)  -- an index path (by primary key) for the planner
          AND s.user_id = batch.user_id
          AND NOT batch.is_new
        RETURNING 1
    ),
    inserted AS (
        INSERT INTO public.presence_sessions
            (session_id, user_id, status, device, metadata, started_at, last_beat)
        SELECT batch.session_id, batch.user_id, batch.status, batch.device,
               coalesce(batch.metadata, '{}'::jsonb), beat_at, beat_at
        FROM batch
        WHERE batch.is_new
        ORDER BY batch.session_id
        ON CONFLICT (session_id) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted) INTO written;
    IF written <> total THEN
        RAISE EXCEPTION 'presence: % of % sessions were changed by a concurrent call; nothing was written',
            total - written, total
            USING ERRCODE = '40001',
                  HINT = 'Retry the call.';
    END IF;

    -- 6. The cap, then public.users: the transitions of users whose sessions started,
    --    revived or changed status go through sync_users; for the others (steady beats)
    --    at most last_heartbeat is refreshed, when the throttle says so.
    IF new_users IS NOT NULL THEN
        PERFORM presence_private.evict_over_cap(new_users);
    END IF;
    IF structural_users IS NOT NULL THEN
        PERFORM presence_private.sync_users(structural_users);
    END IF;
    IF refresh_users IS NOT NULL THEN
        UPDATE public.users AS u
        SET last_heartbeat = beat_at
        WHERE u.id = ANY (refresh_users)
          AND NOT (u.id = ANY (coalesce(structural_users, '{}'::uuid[])))
          AND u.status IN ('online', 'away', 'busy')
          AND (u.last_heartbeat IS NULL OR u.last_heartbeat < refresh_before);
    END IF;
    RETURN jsonb_build_object('beat_at', beat_at, 'count', total);
END;
$$;

COMMENT ON FUNCTION public.presence_track_beat(jsonb) IS
    'service_role: beats up to 10,000 sessions of any users in one call (creating new ones), all or nothing; returns {"beat_at", "count"}.';

CREATE OR REPLACE FUNCTION public.presence_track_end(session_ids uuid[])
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET jit = off
AS $$
DECLARE
    ended_at timestamptz := now();
    ended integer;
    users uuid[];
BEGIN
    IF session_ids IS NULL THEN
        RAISE EXCEPTION 'presence: session_ids must be an array of uuids (got NULL)'
            USING ERRCODE = '22023';
    END IF;
    IF cardinality(session_ids) > presence_private.max_batch() THEN
        RAISE EXCEPTION 'presence: at most % sessions per call (got %)',
            presence_private.max_batch(), cardinality(session_ids)
            USING ERRCODE = '22023',
                  HINT = 'Split the sessions into several calls.';
    END IF;
    IF array_position(session_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'presence: session_ids must not contain null (position %)',
            array_position(session_ids, NULL)
            USING ERRCODE = '22023';
    END IF;

    -- Rows are locked in session id order, as the beats write them, so that two
    -- calls that overlap wait for each other instead of deadlocking.
    WITH doomed AS (
        SELECT s.session_id
        FROM public.presence_sessions AS s
        WHERE s.session_id = ANY (session_ids)
        ORDER BY s.session_id
        FOR UPDATE
    ),
    gone AS (
        DELETE FROM public.presence_sessions AS s
        USING doomed
        WHERE s.session_id = doomed.session_id
        RETURNING s.user_id
    )
    SELECT count(*), array_agg(DISTINCT gone.user_id) INTO ended, users FROM gone;

    IF ended > 0 THEN
        PERFORM presence_private.sync_users(
            users, array_fill(ended_at, ARRAY[cardinality(users)]));
    END IF;
    RETURN jsonb_build_object('ended_at', ended_at, 'count', ended);
END;
$$;

COMMENT ON FUNCTION public.presence_track_end(uuid[]) IS
    'service_role: ends up to 10,000 sessions now (unknown ids are ignored); returns {"ended_at", "count"}.';

-- ------------------------------------------------------------------------------------
-- The sweep (the pg_cron job mark-inactive-users calls it; its schedule is untouched).

CREATE OR REPLACE FUNCTION public.mark_inactive_users_offline()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    live_after timestamptz := presence_private.live_after();
    ended_users uuid[];
    ended_beats timestamptz[];
    stale uuid[];
    changed integer;
BEGIN
    -- 1. End the sessions that timed out (a beat exactly `timeout` old is offline).
    --    Rows a concurrent beat holds are skipped: that beat keeps them alive.
    WITH doomed AS (
        SELECT s.session_id
        FROM public.presence_sessions AS s
        WHERE s.last_beat <= live_after
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM public.presence_sessions AS s
        USING doomed
        WHERE s.session_id = doomed.session_id
        RETURNING s.user_id, s.last_beat
    )
    SELECT array_agg(g.user_id), array_agg(g.last_beat) INTO ended_users, ended_beats
    FROM (SELECT gone.user_id, max(gone.last_beat) AS last_beat FROM gone GROUP BY gone.user_id) AS g;

    -- 2. Users whose stored row the note's troubleshooting query would list: 0.1.0
    --    rows past the timeout, and live users whose last_heartbeat needs a refresh
    --    because their beats came late. Walks the partial index users_presence_active_idx.
    SELECT array_agg(u.id) INTO stale
    FROM public.users AS u
    WHERE u.status <> 'offline'
      AND (u.last_heartbeat IS NULL OR u.last_heartbeat <= live_after);

    -- 3. One sync for both: seen_at (the ended sessions' latest beats) lines up with
    --    the first users; the rest get none.
    changed := presence_private.sync_users(
        coalesce(ended_users, '{}'::uuid[]) || coalesce(stale, '{}'::uuid[]),
        ended_beats
    );

    -- Housekeeping must never make the sweep fail (as in migration 04): a failed prune
    -- is logged and the next run tries again (verify reports a history that keeps
    -- growing).
    BEGIN
        IF to_regprocedure('public.presence_prune_job_history(integer)') IS NOT NULL THEN
            PERFORM public.presence_prune_job_history();
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'presence: could not prune cron.job_run_details: %', SQLERRM;
    END;
    -- The event log's retention (migration 20240000000006_events), when installed.
    BEGIN
        IF to_regprocedure('public.presence_prune_events(integer)') IS NOT NULL THEN
            PERFORM public.presence_prune_events(10000);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'presence: could not prune public.presence_events: %', SQLERRM;
    END;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION public.mark_inactive_users_offline() IS
    'Ends sessions silent for longer than presence_config.timeout_seconds and writes the resulting transitions to public.users; returns the number of users whose presence changed.';

-- ------------------------------------------------------------------------------------
-- Grants of the new RPCs (existing functions keep theirs: OR REPLACE preserves them).

REVOKE ALL ON FUNCTION
    public.presence_session_beat(uuid, text, text, jsonb),
    public.presence_session_leave(uuid),
    public.presence_my_sessions(),
    public.presence_track_beat(jsonb),
    public.presence_track_end(uuid[])
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    public.presence_session_beat(uuid, text, text, jsonb),
    public.presence_session_leave(uuid),
    public.presence_my_sessions()
TO authenticated;
GRANT EXECUTE ON FUNCTION
    public.presence_track_beat(jsonb),
    public.presence_track_end(uuid[])
TO service_role;

-- ------------------------------------------------------------------------------------
-- Upgrade: 0.1.0 users who are live right now keep their presence as an implicit
-- session (nobody flips offline). Does nothing when re-run.

SELECT presence_private.adopt_legacy(NULL);
