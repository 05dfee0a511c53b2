-- Migration 20240000000006_events: a durable log of presence transitions, delivered
-- three ways (pg_notify, an RPC, and public.users for Supabase Realtime), and history
-- queries over it.
--
-- Adds:
--   * public.presence_events: one row per transition, never per steady beat:
--       kind            reason                          when (occurred_at)
--       online          join                            start of the earliest live session
--       offline         leave | timeout | evicted | status   last session's end (timeout:
--                                                       last beat + timeout, not sweep time)
--       status          join | leave | timeout | evicted | status   the change
--       session_start   join                            the session's started_at
--       session_end     leave | timeout | evicted       leave/eviction time, or last beat
--                                                       + timeout
--       session_status  status                          the beat that changed it
--     User events (online, offline, status) have session_id NULL. Each user event
--     carries `audience`: who else its user let see it when it was logged (everyone,
--     contacts, nobody; NULL: no snapshot), from presence_private.event_audience; and
--     `mask`: an edge shown to others only (migration 7 logs them when invisible mode
--     flips; the user and roles that bypass RLS never read them through the RPCs).
--     id is a bigint identity: allocation order. Readers get a gap-free prefix (see
--     presence_events_since), so resuming after the last id seen loses nothing.
--   * public.presence_config.events_retention_days (default 30), pruned in bounded
--     batches by public.presence_prune_events(max_rows), which the sweep
--     (mark_inactive_users_offline, the pg_cron job) calls on every run.
--   * pg_notify on channel 'presence_events' per event, payload {"id": N, "kind": "..."}
--     (sent at commit; nothing about the user, so any listener may receive it).
--   * RPCs for signed-in users and service_role (RLS-aware, SECURITY INVOKER):
--       presence_events_since(after_id bigint, max_rows integer) -> jsonb
--       presence_session_history(user_id uuid, from_time timestamptz,
--                                to_time timestamptz, max_rows integer) -> setof
--       presence_online_per_day(user_id uuid, from_day date, to_day date,
--                               time_zone text) -> setof (day, online_seconds)
--   * presence_private.can_see_events(viewer uuid, target uuid): the visibility rule
--     of the log NOW, per (viewer, target) (default: the viewer can see the target's
--     public.users row under its RLS); presence_private.can_see_event(viewer, target,
--     audience): the rule per event that the RLS policy asks, the event's audience
--     when it was logged AND can_see_events now (default: audience NULL or everyone,
--     else hidden); presence_private.event_audience(target, at): the snapshot written
--     onto each user event (default: NULL). All three are created only when absent
--     (migration 7 replaces them). A user always sees their own events (never masks);
--     other users' session events (devices) never. service_role (BYPASSRLS) sees
--     everything in the table; the RPCs give it the truth (no masks).
--   * public.presence_configure_events(retention_days integer) for the owner.
-- Redefines public.presence_setup_report() as schema_version 4: it also reports the
-- sessions (public.presence_sessions, schema presence_private, the per-session and
-- batch RPCs) and the log (public.presence_events, its triggers, the events RPCs),
-- with their grants. The previous definition is saved in
-- presence_private.replaced_definitions; the rollback restores it.
--
-- How the reason of an ended session is known: a writer may say it with the
-- transaction-local setting presence.end_reason (leave, timeout, evicted); otherwise a
-- session whose last beat is as old as the timeout timed out, one removed while its
-- user still has max_sessions_per_user() sessions was evicted, any other left.
--
-- Errors raised (SQLSTATE, as PostgREST passes them on in `code`):
--   28000 not authenticated; 22023 invalid argument (negative or future ids, limits out
--   of range, a range backwards or longer than the retention or older than it, an
--   unknown time zone); 25000 presence_events_since needs READ COMMITTED; 42501 the
--   caller may not execute the function / read the log.
--
-- Idempotent (IF NOT EXISTS, OR REPLACE, guarded DO blocks). Requires
-- 20240000000005_sessions (public.presence_sessions, presence_private).
--
-- Rollback (supabase/rollbacks/20240000000006_events.sql):
--   DROP TRIGGER IF EXISTS presence_events_session_insert, ..._session_update,
--       ..._session_delete ON public.presence_sessions;
--   DROP TRIGGER IF EXISTS presence_events_user_update ON public.users;
--   DROP FUNCTION IF EXISTS public.presence_online_per_day(uuid, date, date, text),
--       public.presence_session_history(uuid, timestamptz, timestamptz, integer),
--       public.presence_events_since(bigint, integer), public.presence_prune_events(integer),
--       public.presence_configure_events(integer), and every presence_private function
--       this file adds (can_see_events, can_see_event and event_audience included);
--   DROP TABLE IF EXISTS public.presence_events;
--   ALTER TABLE public.presence_config DROP COLUMN IF EXISTS events_retention_days;
--   EXECUTE the saved public.presence_setup_report() definition (schema_version 3).

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- ------------------------------------------------------------------------------------
-- Settings

ALTER TABLE public.presence_config
    ADD COLUMN IF NOT EXISTS events_retention_days integer NOT NULL DEFAULT 30;

COMMENT ON COLUMN public.presence_config.events_retention_days IS
    'Days of public.presence_events kept; older events are pruned by the sweep in batches.';

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conrelid = 'public.presence_config'::regclass
          AND conname = 'presence_config_events_retention_range'
    ) THEN
        -- One row: validating it is instant.
        ALTER TABLE public.presence_config ADD CONSTRAINT presence_config_events_retention_range
            CHECK (events_retention_days BETWEEN 1 AND 3650) NOT VALID;
        ALTER TABLE public.presence_config VALIDATE CONSTRAINT presence_config_events_retention_range;
    END IF;
END;
$$;

-- ------------------------------------------------------------------------------------
-- The log

CREATE TABLE IF NOT EXISTS public.presence_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL
        CONSTRAINT presence_events_kind_check
        CHECK (kind IN ('online', 'offline', 'status',
                        'session_start', 'session_end', 'session_status')),
    user_id uuid NOT NULL,
    session_id uuid,
    old_status text,
    new_status text,
    reason text NOT NULL
        CONSTRAINT presence_events_reason_check
        CHECK (reason IN ('join', 'leave', 'timeout', 'evicted', 'status')),
    device text,
    audience text
        CONSTRAINT presence_events_audience_check
        CHECK (audience IN ('everyone', 'contacts', 'nobody')),
    mask boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE public.presence_events IS
    'Presence transitions (never steady beats), written by triggers on public.users and public.presence_sessions. Read it with presence_events_since().';
COMMENT ON COLUMN public.presence_events.id IS
    'Allocation order. presence_events_since() only returns ids below every open writer''s, so a reader resuming after an id misses nothing.';
COMMENT ON COLUMN public.presence_events.occurred_at IS
    'When it happened: a timeout is the last beat plus the timeout, not the time the sweep noticed.';
COMMENT ON COLUMN public.presence_events.session_id IS
    'The session of a session_* event; NULL for the user events online, offline and status.';
COMMENT ON COLUMN public.presence_events.mask IS
    'An edge shown to others only: the offline others see when the user turns invisible mode on while online, the online they see when the user turns it off while online. The user and roles that bypass RLS never get it from the reads (the truth has no such transition).';
COMMENT ON COLUMN public.presence_events.audience IS
    'Who else the user let see this event when it was logged (presence_private.event_audience): everyone, contacts or nobody (invisible). A user event is shown to another viewer only if this AND the current rule allow it. NULL: no snapshot (session events, which only the user sees; events logged without privacy settings).';

-- History reads walk one user's events by time; the trigger that derives a user's
-- transition reads that user's latest events the same way.
CREATE INDEX IF NOT EXISTS presence_events_user_time_idx
    ON public.presence_events (user_id, occurred_at);

ALTER TABLE public.presence_events ENABLE ROW LEVEL SECURITY;

-- Only the triggers write (as the owner); readers go through RLS.
REVOKE ALL ON TABLE public.presence_events FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_events TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Visibility: the one rule, replaceable on its own (keep the signature). Created only
-- when absent: re-running this file must not reset a replaced rule (the app's own, or
-- the one of migration 20240000000007_privacy) to the default.

DO $$
BEGIN
    IF pg_catalog.to_regprocedure('presence_private.can_see_events(uuid, uuid)') IS NULL THEN
        CREATE OR REPLACE FUNCTION presence_private.can_see_events(viewer uuid, target uuid)
        RETURNS boolean
        LANGUAGE sql
        STABLE
        SET search_path = ''
        AS $fn$
            -- Runs as the reader: the RLS of public.users decides (viewer is auth.uid(); a
            -- replacement may use it, e.g. with a SECURITY DEFINER lookup of contacts).
            SELECT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = target);
        $fn$;
        COMMENT ON FUNCTION presence_private.can_see_events(uuid, uuid) IS
            'May viewer see the presence events (online, offline, status) of target? Default: target''s public.users row is visible to the reader under RLS. The only visibility rule of the log.';
    END IF;
END;
$$;

-- The rule per event: what target let others see when the event was logged (its
-- audience, written by log_user_changed from presence_private.event_audience) AND what
-- can_see_events allows now; the stricter wins. Created only when absent, like
-- can_see_events. Default (no privacy settings installed): events logged for everyone,
-- or with no snapshot, follow can_see_events; any other audience hides (there is no
-- contacts rule here to ask: fail closed).
DO $$
BEGIN
    IF pg_catalog.to_regprocedure('presence_private.can_see_event(uuid, uuid, text)') IS NULL THEN
        -- No SET clause, so that the planner inlines it into the policy: every name
        -- and operator is qualified.
        CREATE OR REPLACE FUNCTION presence_private.can_see_event(viewer uuid, target uuid, audience text)
        RETURNS boolean
        LANGUAGE sql
        STABLE
        AS $fn$
            SELECT CASE
                WHEN audience IS NULL OR audience OPERATOR(pg_catalog.=) 'everyone'
                    THEN presence_private.can_see_events(viewer, target)
                ELSE false
            END;
        $fn$;
        COMMENT ON FUNCTION presence_private.can_see_event(uuid, uuid, text) IS
            'May viewer see an event of target logged with this audience? The audience at the time (NULL: no snapshot) and can_see_events(viewer, target) now must both allow it. The per-event rule of the log''s policy.';
    END IF;
END;
$$;

-- What the user lets others see of their events right now, snapshotted onto each user
-- event by log_user_changed (target's events at `at`; NULL: no snapshot, the current
-- rule alone decides). Created only when absent: 20240000000007_privacy replaces it.
DO $$
BEGIN
    IF pg_catalog.to_regprocedure('presence_private.event_audience(uuid, timestamptz)') IS NULL THEN
        CREATE OR REPLACE FUNCTION presence_private.event_audience(target uuid, at timestamptz)
        RETURNS text
        LANGUAGE sql
        STABLE
        SET search_path = ''
        AS $fn$
            SELECT NULL::text;
        $fn$;
        COMMENT ON FUNCTION presence_private.event_audience(uuid, timestamptz) IS
            'Who else may see an event of target that happened at `at`, as target''s settings say when it is logged: everyone, contacts, nobody, or NULL (no privacy settings: no snapshot). Written onto each user event.';
    END IF;
END;
$$;

DROP POLICY IF EXISTS presence_events_select ON public.presence_events;
CREATE POLICY presence_events_select ON public.presence_events
    FOR SELECT TO authenticated
    USING (
        (user_id = (SELECT presence_private.caller_id()) AND NOT mask)
        OR (user_id IS DISTINCT FROM (SELECT presence_private.caller_id())
            AND session_id IS NULL
            AND presence_private.can_see_event((SELECT presence_private.caller_id()), user_id,
                                               audience))
    );

-- ------------------------------------------------------------------------------------
-- Writers

CREATE OR REPLACE FUNCTION presence_private.events_lock_key()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT 1886545267;  -- 'pres': the advisory lock namespace of open event writers
$$;

-- Called by every writer before its first event in a transaction: takes a shared
-- advisory lock keyed by the highest id allocated so far (every id this transaction
-- gets will be larger), held until commit or rollback. presence_events_since reads
-- those locks to never return an id above an open writer's. Returns the mark; later
-- calls in the same transaction return it without locking again.
CREATE OR REPLACE FUNCTION presence_private.events_begin()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    me text := pg_catalog.pg_current_xact_id()::text;
    saved text := pg_catalog.current_setting('presence.events_tx', true);
    mark bigint;
    low bigint;
BEGIN
    IF saved IS NOT NULL AND pg_catalog.split_part(saved, ':', 1) = me THEN
        RETURN pg_catalog.split_part(saved, ':', 2)::bigint;
    END IF;
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO mark
    FROM public.presence_events_id_seq AS s;
    low := mark % 4294967296;
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(
        presence_private.events_lock_key(),
        (CASE WHEN low >= 2147483648 THEN low - 4294967296 ELSE low END)::integer
    );
    PERFORM pg_catalog.set_config('presence.events_tx', me || ':' || mark, true);
    RETURN mark;
END;
$$;

COMMENT ON FUNCTION presence_private.events_begin() IS
    'Registers the current transaction as an open event writer (shared advisory lock keyed by the highest allocated id); returns that mark.';

-- The timeout as an interval (the missing settings row raises live_after()'s clear
-- error: the transition fails as it would without the log).
CREATE OR REPLACE FUNCTION presence_private.timeout()
RETURNS interval
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
        PERFORM presence_private.live_after();
    END IF;
    RETURN make_interval(secs => seconds);
END;
$$;

-- Sessions that started (INSERT): session_start, at started_at.
CREATE OR REPLACE FUNCTION presence_private.log_sessions_started()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    sent bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM started) THEN
        RETURN NULL;
    END IF;
    PERFORM presence_private.events_begin();
    WITH logged AS (
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, session_id, old_status, new_status, reason, device)
        SELECT s.started_at, 'session_start', s.user_id, s.session_id, NULL, s.status, 'join', s.device
        FROM started AS s
        ORDER BY s.started_at, s.session_id
        RETURNING id, kind
    )
    SELECT count(pg_catalog.pg_notify('presence_events',
                 pg_catalog.json_build_object('id', l.id, 'kind', l.kind)::text))
    INTO sent
    FROM logged AS l;
    RETURN NULL;
END;
$$;

-- Sessions that ended (DELETE): session_end with its reason.
-- jit = off: the sweep ending many sessions at once (e.g. after a server of the app
-- went away) makes its statement look expensive (100,000 sessions: ~970k), and JIT
-- compilation with inlining and optimization would cost more than running it (see
-- presence_private.sync_users).
CREATE OR REPLACE FUNCTION presence_private.log_sessions_ended()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET jit = off
AS $$
DECLARE
    timeout interval := presence_private.timeout();
    said text := nullif(pg_catalog.current_setting('presence.end_reason', true), '');
    sent bigint;
BEGIN
    IF said IS NOT NULL AND said NOT IN ('leave', 'timeout', 'evicted') THEN
        said := NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ended) THEN
        RETURN NULL;
    END IF;
    PERFORM presence_private.events_begin();
    WITH classified AS (
        SELECT
            e.*,
            coalesce(
                said,
                CASE
                    WHEN e.last_beat <= now() - timeout THEN 'timeout'
                    WHEN (SELECT count(*) FROM public.presence_sessions AS s WHERE s.user_id = e.user_id)
                         >= presence_private.max_sessions_per_user() THEN 'evicted'
                    ELSE 'leave'
                END
            ) AS reason
        FROM ended AS e
        -- A user deleted with their sessions (ON DELETE CASCADE) leaves no events.
        WHERE EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = e.user_id)
    ),
    logged AS (
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, session_id, old_status, new_status, reason, device)
        SELECT
            CASE WHEN c.reason = 'timeout' THEN least(c.last_beat + timeout, now()) ELSE now() END,
            'session_end', c.user_id, c.session_id, c.status, NULL, c.reason, c.device
        FROM classified AS c
        ORDER BY c.last_beat, c.session_id
        RETURNING id, kind
    )
    SELECT count(pg_catalog.pg_notify('presence_events',
                 pg_catalog.json_build_object('id', l.id, 'kind', l.kind)::text))
    INTO sent
    FROM logged AS l;
    RETURN NULL;
END;
$$;

-- A session whose status changed, or that came back after timing out (its started_at
-- was reset): session_status, or session_end (timeout) + session_start. Steady beats
-- never get here (the trigger's WHEN clause filters them before any call).
CREATE OR REPLACE FUNCTION presence_private.log_session_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    timeout interval;
    logged record;
BEGIN
    PERFORM presence_private.events_begin();
    IF OLD.started_at IS DISTINCT FROM NEW.started_at THEN
        timeout := presence_private.timeout();
        FOR logged IN
            INSERT INTO public.presence_events
                (occurred_at, kind, user_id, session_id, old_status, new_status, reason, device)
            VALUES
                (least(OLD.last_beat + timeout, now()), 'session_end', OLD.user_id,
                 OLD.session_id, OLD.status, NULL, 'timeout', OLD.device),
                (NEW.started_at, 'session_start', NEW.user_id, NEW.session_id, NULL,
                 NEW.status, 'join', NEW.device)
            RETURNING id, kind
        LOOP
            PERFORM pg_catalog.pg_notify('presence_events',
                pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
        END LOOP;
    ELSE
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, session_id, old_status, new_status, reason, device)
        VALUES (now(), 'session_status', NEW.user_id, NEW.session_id, OLD.status, NEW.status,
                'status', NEW.device)
        RETURNING id, kind INTO logged;
        PERFORM pg_catalog.pg_notify('presence_events',
            pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
    END IF;
    RETURN NULL;
END;
$$;

-- A user's stored presence changed (status, or online_since): online, offline or
-- status, with the time and reason taken from what this transaction did to the user's
-- sessions. sync_users is the one writer of these columns; direct writes are logged
-- too (reason status, or timeout/leave from last_heartbeat for 0.1.0-style rows).
CREATE OR REPLACE FUNCTION presence_private.log_user_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    was_online boolean := coalesce(OLD.status <> 'offline', false);
    is_online boolean := coalesce(NEW.status <> 'offline', false);
    saved text;
    mark bigint;
    timeout interval;
    latest_at timestamptz;   -- this transaction's latest session event of the user
    latest_reason text;
    end_at timestamptz;      -- ... and its latest session_end
    end_reason text;
    gone_at timestamptz;
    gone_reason text;
    logged record;
    came_at timestamptz;
    shown_to text;           -- who else may see these events (presence_private.event_audience)
BEGIN
    IF NOT was_online AND NOT is_online THEN
        RETURN NULL;
    END IF;
    -- Registers this transaction as a writer (if no session event did already), so
    -- that its mark below is this transaction's.
    PERFORM presence_private.events_begin();

    IF NOT was_online THEN
        -- Coming online: at the start of the earliest live session. The common case
        -- needs nothing else.
        came_at := least(coalesce(NEW.online_since, now()), now());
        shown_to := presence_private.event_audience(NEW.id, came_at);
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, old_status, new_status, reason, audience)
        VALUES (came_at, 'online', NEW.id, coalesce(OLD.status, 'offline'), NEW.status, 'join',
                shown_to)
        RETURNING id, kind INTO logged;
        PERFORM pg_catalog.pg_notify('presence_events',
            pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
        RETURN NULL;
    END IF;

    -- This transaction's session events have ids above its mark (see events_begin):
    -- they say why and when.
    saved := pg_catalog.current_setting('presence.events_tx', true);
    mark := pg_catalog.split_part(saved, ':', 2)::bigint;
    SELECT e.occurred_at, e.reason INTO end_at, end_reason
    FROM public.presence_events AS e
    WHERE e.user_id = NEW.id AND e.kind = 'session_end' AND e.id > mark
    ORDER BY e.occurred_at DESC, e.id DESC
    LIMIT 1;

    IF NOT is_online THEN
        IF end_at IS NOT NULL THEN
            gone_at := end_at;
            gone_reason := end_reason;
        ELSE
            -- No session ended here: a row written directly (0.1.0-style, or the app).
            timeout := presence_private.timeout();
            IF NEW.last_heartbeat IS NULL THEN
                gone_at := now();
                gone_reason := 'status';
            ELSIF NEW.last_heartbeat <= now() - timeout THEN
                gone_at := NEW.last_heartbeat + timeout;
                gone_reason := 'timeout';
            ELSIF NEW.last_heartbeat >= now() THEN
                gone_at := now();       -- a leave stamps last_heartbeat with its own time
                gone_reason := 'leave';
            ELSE
                gone_at := now();
                gone_reason := 'status';
            END IF;
        END IF;
        gone_at := least(gone_at, now());
        shown_to := presence_private.event_audience(NEW.id, gone_at);
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, old_status, new_status, reason, audience)
        VALUES (gone_at, 'offline', NEW.id, OLD.status, 'offline', gone_reason, shown_to)
        RETURNING id, kind INTO logged;
        PERFORM pg_catalog.pg_notify('presence_events',
            pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
        RETURN NULL;
    END IF;

    -- Online before and after. If every session the user had ended before the one
    -- that (re)started now, the user was offline in between: log both edges.
    IF OLD.online_since IS DISTINCT FROM NEW.online_since AND NEW.online_since IS NOT NULL THEN
        timeout := presence_private.timeout();
        SELECT greatest(
            end_at,
            (SELECT max(s.last_beat) + timeout FROM public.presence_sessions AS s
             WHERE s.user_id = NEW.id AND s.started_at < NEW.online_since),
            OLD.last_heartbeat + timeout
        ) INTO gone_at;
        IF gone_at < NEW.online_since THEN
            -- The earlier of the two times: the stricter audience of the pair.
            shown_to := presence_private.event_audience(NEW.id, gone_at);
            FOR logged IN
                INSERT INTO public.presence_events
                    (occurred_at, kind, user_id, old_status, new_status, reason, audience)
                VALUES
                    (gone_at, 'offline', NEW.id, OLD.status, 'offline',
                     CASE WHEN end_at = gone_at THEN end_reason ELSE 'timeout' END, shown_to),
                    (least(NEW.online_since, now()), 'online', NEW.id, 'offline', NEW.status, 'join',
                     shown_to)
                RETURNING id, kind
            LOOP
                PERFORM pg_catalog.pg_notify('presence_events',
                    pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
            END LOOP;
            RETURN NULL;
        END IF;
    END IF;
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        -- A status change: at (and because of) the latest session event here, if any.
        SELECT e.occurred_at, e.reason INTO latest_at, latest_reason
        FROM public.presence_events AS e
        WHERE e.user_id = NEW.id AND e.session_id IS NOT NULL AND e.id > mark
        ORDER BY e.occurred_at DESC, e.id DESC
        LIMIT 1;
        latest_at := least(coalesce(latest_at, now()), now());
        shown_to := presence_private.event_audience(NEW.id, latest_at);
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, old_status, new_status, reason, audience)
        VALUES (latest_at, 'status', NEW.id, OLD.status, NEW.status,
                coalesce(latest_reason, 'status'), shown_to)
        RETURNING id, kind INTO logged;
        PERFORM pg_catalog.pg_notify('presence_events',
            pg_catalog.json_build_object('id', logged.id, 'kind', logged.kind)::text);
    END IF;
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION
    presence_private.can_see_events(uuid, uuid),
    presence_private.can_see_event(uuid, uuid, text),
    presence_private.event_audience(uuid, timestamptz),
    presence_private.events_lock_key(),
    presence_private.events_begin(),
    presence_private.timeout(),
    presence_private.log_sessions_started(),
    presence_private.log_sessions_ended(),
    presence_private.log_session_changed(),
    presence_private.log_user_changed()
FROM PUBLIC, anon, authenticated, service_role;
-- The policy on presence_events calls them as the reader; the history RPCs read the
-- timeout as the reader. (event_audience: only the triggers, as the owner.)
GRANT EXECUTE ON FUNCTION
    presence_private.can_see_events(uuid, uuid),
    presence_private.can_see_event(uuid, uuid, text),
    presence_private.timeout()
TO authenticated, service_role;

-- Triggers. Statement level with transition tables where every row is a transition
-- (insert, delete); row level with a WHEN clause for updates, so that a steady beat
-- (same status, same started_at) and a last_heartbeat refresh never call a function.
DROP TRIGGER IF EXISTS presence_events_session_insert ON public.presence_sessions;
CREATE TRIGGER presence_events_session_insert
    AFTER INSERT ON public.presence_sessions
    REFERENCING NEW TABLE AS started
    FOR EACH STATEMENT EXECUTE FUNCTION presence_private.log_sessions_started();

DROP TRIGGER IF EXISTS presence_events_session_delete ON public.presence_sessions;
CREATE TRIGGER presence_events_session_delete
    AFTER DELETE ON public.presence_sessions
    REFERENCING OLD TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION presence_private.log_sessions_ended();

DROP TRIGGER IF EXISTS presence_events_session_update ON public.presence_sessions;
CREATE TRIGGER presence_events_session_update
    AFTER UPDATE ON public.presence_sessions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.started_at IS DISTINCT FROM NEW.started_at)
    EXECUTE FUNCTION presence_private.log_session_changed();

DROP TRIGGER IF EXISTS presence_events_user_update ON public.users;
CREATE TRIGGER presence_events_user_update
    AFTER UPDATE ON public.users
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.online_since IS DISTINCT FROM NEW.online_since)
    EXECUTE FUNCTION presence_private.log_user_changed();

-- ------------------------------------------------------------------------------------
-- Reading the log

-- The highest id a reader may return after `after_id` without skipping an id that an
-- open transaction may still commit, looking at most `scan_limit` ids ahead. Returns
-- {horizon, newest allocated id}. Fast path: every id in the window is a visible row.
-- Otherwise the open writers' marks (their advisory locks) bound it. Correct because
-- a writer locks its mark before allocating any id, and this reads the newest id
-- before the locks, and the caller reads the log after both (READ COMMITTED).
CREATE OR REPLACE FUNCTION presence_private.events_horizon(after_id bigint, scan_limit integer)
RETURNS bigint[]
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    newest bigint;
    hi bigint;
    present bigint;
    open_mark bigint;
BEGIN
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO newest
    FROM public.presence_events_id_seq AS s;
    hi := least(newest, after_id + scan_limit);
    IF hi <= after_id THEN
        RETURN ARRAY[after_id, newest];
    END IF;
    SELECT count(*) INTO present
    FROM public.presence_events AS e
    WHERE e.id > after_id AND e.id <= hi;
    IF present = hi - after_id THEN
        RETURN ARRAY[hi, newest];
    END IF;
    -- Gaps: ids of open transactions, or of rolled-back ones (or a sequence that
    -- jumped at a crash). An open writer's ids are all above its mark; the lock holds
    -- the mark's low 32 bits: the mark is the value nearest to newest with them (a
    -- writer that registered after newest was read has a larger mark: harmless).
    SELECT min(newest + CASE WHEN d.diff >= 2147483648 THEN d.diff - 4294967296 ELSE d.diff END)
    INTO open_mark
    FROM pg_catalog.pg_locks AS l
    CROSS JOIN LATERAL (
        SELECT ((l.objid::bigint - newest % 4294967296) % 4294967296 + 4294967296) % 4294967296
            AS diff
    ) AS d
    WHERE l.locktype = 'advisory'
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                        WHERE d.datname = pg_catalog.current_database())
      AND l.classid = presence_private.events_lock_key()::oid
      AND l.objsubid = 2;
    -- Never below after_id: a writer that registered before the reader's last page
    -- has a mark below ids already returned (its own ids are all above them), and
    -- a horizon under after_id would send the reader back over those ids.
    RETURN ARRAY[greatest(after_id, least(hi, coalesce(open_mark, hi))), newest];
END;
$$;

COMMENT ON FUNCTION presence_private.events_horizon(bigint, integer) IS
    'The highest event id safe to return after after_id (no open transaction can still commit a lower one), and the newest allocated id.';

REVOKE ALL ON FUNCTION presence_private.events_horizon(bigint, integer)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION presence_private.events_horizon(bigint, integer) TO authenticated, service_role;

CREATE OR REPLACE FUNCTION public.presence_events_since(
    after_id bigint DEFAULT 0,
    max_rows integer DEFAULT 100
)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SET search_path = ''
AS $$
DECLARE
    bounds bigint[];
    events jsonb;
    returned integer;
    last_id bigint;
    -- Roles that bypass RLS read the truth: the edges shown to others (mask) are not.
    truth constant boolean := NOT pg_catalog.row_security_active('public.presence_events'::regclass);
BEGIN
    IF after_id IS NULL OR after_id < 0 THEN
        RAISE EXCEPTION 'presence: after_id must be 0 or a positive event id (got %)',
            coalesce(after_id::text, 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Pass 0 to read from the oldest kept event, or the id of the last event you processed.';
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'presence: max_rows must be between 1 and 1000 (got %)',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF auth.uid() IS NULL AND coalesce(auth.role(), '') = 'authenticated' THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = 'Call presence_events_since with a signed-in user''s access token or the service key.';
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'presence: presence_events_since needs READ COMMITTED (this transaction is %)',
            pg_catalog.current_setting('transaction_isolation')
            USING ERRCODE = '25000',
                  HINT = 'Each statement must see transactions that committed before it; call it outside REPEATABLE READ or SERIALIZABLE transactions.';
    END IF;

    bounds := presence_private.events_horizon(after_id, greatest(10 * max_rows, 1000));
    IF after_id > bounds[2] THEN
        RAISE EXCEPTION 'presence: after_id % is beyond the newest event id %', after_id, bounds[2]
            USING ERRCODE = '22023',
                  HINT = 'Pass an id this database returned (a restored or recreated database restarts its ids: start again from 0).';
    END IF;

    -- RLS on presence_events applies here (SECURITY INVOKER): a reader sees the events
    -- of the users visible to them, and only their own sessions.
    SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.id), '[]'::jsonb), count(*), max(p.id)
    INTO events, returned, last_id
    FROM (
        SELECT e.id, e.occurred_at, e.kind, e.user_id, e.session_id, e.old_status,
               e.new_status, e.reason, e.device
        FROM public.presence_events AS e
        WHERE e.id > after_id AND e.id <= bounds[1]
          AND NOT (e.mask AND truth)
        ORDER BY e.id
        LIMIT max_rows
    ) AS p;

    RETURN jsonb_build_object(
        'events', events,
        -- Resume from here: every event up to it that this reader may see was returned
        -- (a full page stops at its last event; otherwise the horizon).
        'last_id', CASE WHEN returned = max_rows THEN last_id ELSE bounds[1] END,
        'more', returned = max_rows OR bounds[1] < bounds[2]
    );
END;
$$;

COMMENT ON FUNCTION public.presence_events_since(bigint, integer) IS
    'Up to max_rows (1-1000) visible events with id > after_id, in id order, never past an id an open transaction may still commit: {"events": [...], "last_id": resume-after id, "more": bool}.';

-- ------------------------------------------------------------------------------------
-- History

-- A range a history query may ask: forwards, no longer than the retention, not
-- starting before it (the log cannot answer exactly past it).
CREATE OR REPLACE FUNCTION presence_private.check_history_range(from_time timestamptz, to_time timestamptz)
RETURNS void
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    days integer;
BEGIN
    SELECT c.events_retention_days INTO days FROM public.presence_config AS c;
    days := coalesce(days, 30);
    IF from_time IS NULL OR to_time IS NULL OR from_time >= to_time THEN
        RAISE EXCEPTION 'presence: the time range must go forwards (got % to %)',
            coalesce(from_time::text, 'NULL'), coalesce(to_time::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF to_time - from_time > make_interval(days => days + 1)
       OR from_time < date_trunc('day', now()) - make_interval(days => days + 1) THEN
        RAISE EXCEPTION 'presence: the time range % to % reaches past the % days of events kept',
            from_time, to_time, days
            USING ERRCODE = '22023',
                  HINT = 'Ask for a range within the retention (public.presence_config.events_retention_days; change it with presence_configure_events).';
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION presence_private.check_history_range(timestamptz, timestamptz)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION presence_private.check_history_range(timestamptz, timestamptz)
TO authenticated, service_role;

CREATE OR REPLACE FUNCTION public.presence_session_history(
    user_id uuid,
    from_time timestamptz,
    to_time timestamptz DEFAULT now(),
    max_rows integer DEFAULT 100
)
RETURNS TABLE (
    session_id uuid,
    device text,
    status text,
    started_at timestamptz,
    ended_at timestamptz,
    end_reason text
)
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF presence_session_history.user_id IS NULL THEN
        RAISE EXCEPTION 'presence: user_id must not be null' USING ERRCODE = '22023';
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'presence: max_rows must be between 1 and 1000 (got %)',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    PERFORM presence_private.check_history_range(from_time, to_time);
    -- Each session_start pairs with the next session_end of the same session id (an
    -- id that timed out and came back is two sessions). RLS: a signed-in user sees
    -- only their own sessions; service_role sees all.
    RETURN QUERY
        SELECT s.session_id, s.device, s.new_status, s.occurred_at, e.occurred_at, e.reason
        FROM public.presence_events AS s
        LEFT JOIN LATERAL (
            SELECT x.occurred_at, x.reason
            FROM public.presence_events AS x
            WHERE x.user_id = s.user_id
              AND x.session_id = s.session_id
              AND x.kind = 'session_end'
              AND x.id > s.id
            ORDER BY x.id
            LIMIT 1
        ) AS e ON true
        WHERE s.user_id = presence_session_history.user_id
          AND s.kind = 'session_start'
          AND s.occurred_at < to_time
          AND (e.occurred_at IS NULL OR e.occurred_at >= from_time)
          -- starts long before the range can only matter while still open
          AND s.occurred_at >= from_time - make_interval(days => 1)
                               * (SELECT coalesce(max(c.events_retention_days), 30)
                                  FROM public.presence_config AS c)
        ORDER BY s.occurred_at, s.id
        LIMIT max_rows;
END;
$$;

COMMENT ON FUNCTION public.presence_session_history(uuid, timestamptz, timestamptz, integer) IS
    'Sessions of user_id that overlap [from_time, to_time): device, first status, start, end and end reason (NULL while open). Your own sessions only (service_role: anyone''s).';

CREATE OR REPLACE FUNCTION public.presence_online_per_day(
    user_id uuid,
    from_day date,
    to_day date,
    time_zone text DEFAULT 'UTC'
)
RETURNS TABLE (day date, online_seconds double precision)
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    open_end timestamptz;
    -- As in presence_events_since: roles that bypass RLS count the truth, not the edges
    -- others were shown (mask).
    truth constant boolean := NOT pg_catalog.row_security_active('public.presence_events'::regclass);
BEGIN
    IF presence_online_per_day.user_id IS NULL THEN
        RAISE EXCEPTION 'presence: user_id must not be null' USING ERRCODE = '22023';
    END IF;
    IF time_zone IS NULL OR pg_catalog.char_length(time_zone) > 64 THEN
        RAISE EXCEPTION 'presence: unknown time zone %',
            coalesce(pg_catalog.quote_literal(pg_catalog.left(time_zone, 64)), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Use an IANA name such as UTC or Europe/Paris.';
    END IF;
    BEGIN
        t0 := from_day::timestamp AT TIME ZONE time_zone;
        t1 := (to_day + 1)::timestamp AT TIME ZONE time_zone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'presence: unknown time zone %',
            coalesce(pg_catalog.quote_literal(pg_catalog.left(time_zone, 64)), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Use an IANA name such as UTC or Europe/Paris.';
    END;
    IF from_day IS NULL OR to_day IS NULL OR to_day < from_day THEN
        RAISE EXCEPTION 'presence: the day range must go forwards (got % to %)',
            coalesce(from_day::text, 'NULL'), coalesce(to_day::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    PERFORM presence_private.check_history_range(t0, t1);

    -- A user still online per the log but silent since: the open interval ends at the
    -- timeout (read exactly, as every read does), not at the sweep.
    SELECT CASE WHEN p.online THEN now() ELSE p.last_seen + presence_private.timeout() END
    INTO open_end
    FROM presence_private.user_presence_now AS p
    WHERE p.user_id = presence_online_per_day.user_id;

    RETURN QUERY
        WITH edges AS (
            -- The state at t0 (the last edge before it), then every edge in range.
            (SELECT e.occurred_at, e.kind, e.id
             FROM public.presence_events AS e
             WHERE e.user_id = presence_online_per_day.user_id
               AND e.kind IN ('online', 'offline') AND e.session_id IS NULL
               AND NOT (e.mask AND truth)
               AND e.occurred_at < t0
             ORDER BY e.occurred_at DESC, e.id DESC
             LIMIT 1)
            UNION ALL
            SELECT e.occurred_at, e.kind, e.id
            FROM public.presence_events AS e
            WHERE e.user_id = presence_online_per_day.user_id
              AND e.kind IN ('online', 'offline') AND e.session_id IS NULL
              AND NOT (e.mask AND truth)
              AND e.occurred_at >= t0 AND e.occurred_at < t1
        ),
        spans AS (
            SELECT greatest(x.occurred_at, t0) AS s,
                   least(coalesce(x.next_at, greatest(x.occurred_at, coalesce(open_end, now()))),
                         t1, now()) AS e
            FROM (
                SELECT ed.occurred_at, ed.kind,
                       lead(ed.occurred_at) OVER (ORDER BY ed.occurred_at, ed.id) AS next_at
                FROM edges AS ed
            ) AS x
            WHERE x.kind = 'online'
        ),
        days AS (
            SELECT d::date AS day,
                   d::timestamp AT TIME ZONE time_zone AS ds,
                   (d + interval '1 day')::timestamp AT TIME ZONE time_zone AS de
            FROM generate_series(from_day::timestamp, to_day::timestamp, interval '1 day') AS d
        )
        SELECT dy.day,
               -- (FILTER: least/greatest ignore NULLs, so a day without spans would
               -- otherwise count whole)
               coalesce(sum(extract(epoch FROM least(sp.e, dy.de) - greatest(sp.s, dy.ds)))
                            FILTER (WHERE sp.s IS NOT NULL), 0)::double precision
        FROM days AS dy
        LEFT JOIN spans AS sp ON sp.s < dy.de AND sp.e > dy.ds
        GROUP BY dy.day
        ORDER BY dy.day;
END;
$$;

COMMENT ON FUNCTION public.presence_online_per_day(uuid, date, date, text) IS
    'Seconds user_id was online on each day from from_day to to_day (inclusive) in time_zone (default UTC), from the event log. Respects the visibility of the log.';

-- ------------------------------------------------------------------------------------
-- Retention

CREATE OR REPLACE FUNCTION public.presence_prune_events(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    cutoff timestamptz;
    upto bigint;
    pruned integer;
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'presence: max_rows must be between 1 and 100000 (got %)',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT now() - make_interval(days => c.events_retention_days) INTO cutoff
    FROM public.presence_config AS c;
    IF cutoff IS NULL THEN
        RETURN 0;
    END IF;
    -- One pruner at a time (a second one, e.g. a slow sweep overlapping the next,
    -- just returns).
    -- (Its own lock namespace: events_lock_key() is what readers take for open writers.)
    IF NOT pg_catalog.pg_try_advisory_xact_lock(presence_private.events_lock_key() + 1, 0) THEN
        RETURN 0;
    END IF;
    -- The oldest max_rows events by id (ids follow time closely), those of them past
    -- the retention: a bounded range of the primary key, one short statement, row
    -- locks only on what it deletes.
    SELECT max(h.id) INTO upto
    FROM (SELECT e.id FROM public.presence_events AS e ORDER BY e.id LIMIT max_rows) AS h;
    DELETE FROM public.presence_events AS e
    WHERE e.id <= upto AND e.occurred_at < cutoff;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END;
$$;

COMMENT ON FUNCTION public.presence_prune_events(integer) IS
    'Deletes at most max_rows (default 10,000) of the oldest events past presence_config.events_retention_days; the sweep calls it on every run. Returns the number deleted.';

CREATE OR REPLACE FUNCTION public.presence_configure_events(retention_days integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF retention_days IS NULL OR retention_days NOT BETWEEN 1 AND 3650 THEN
        RAISE EXCEPTION 'presence: retention_days must be between 1 and 3650 (got %)',
            coalesce(retention_days::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    UPDATE public.presence_config AS c
    SET events_retention_days = retention_days, updated_at = now();
    RETURN retention_days;
END;
$$;

COMMENT ON FUNCTION public.presence_configure_events(integer) IS
    'Sets how many days of presence events are kept (1-3650); returns it.';

REVOKE ALL ON FUNCTION
    public.presence_events_since(bigint, integer),
    public.presence_session_history(uuid, timestamptz, timestamptz, integer),
    public.presence_online_per_day(uuid, date, date, text),
    public.presence_prune_events(integer),
    public.presence_configure_events(integer)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    public.presence_events_since(bigint, integer),
    public.presence_session_history(uuid, timestamptz, timestamptz, integer),
    public.presence_online_per_day(uuid, date, date, text)
TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.presence_prune_events(integer) TO postgres, service_role;
GRANT EXECUTE ON FUNCTION public.presence_configure_events(integer) TO postgres;

-- ------------------------------------------------------------------------------------
-- The setup report (schema_version 4): what verify_setup() judges, now with the
-- sessions (migration 5) and the event log. The same text as 20240000000004_hardening's
-- report (from 03) otherwise.

-- Saved once for the rollback (never a definition that already knows the log).
INSERT INTO presence_private.replaced_definitions (object, position, ddl, comment_ddl)
SELECT 'public.presence_setup_report()', 6, pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
                         pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM pg_catalog.pg_proc AS p
WHERE p.oid = pg_catalog.to_regprocedure('public.presence_setup_report()')
  AND pg_catalog.strpos(p.prosrc, 'presence_events') = 0
ON CONFLICT (object) DO NOTHING;

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
        'schema_version', 4,
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
            FROM (VALUES ('users'), ('user_presence'), ('presence_config'), ('presence_sessions'),
                         ('presence_events')) AS rel (name)
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
                ('presence_configure_events', 'public.presence_configure_events(integer)'),
                ('presence_counts', 'public.presence_counts()'),
                ('presence_events_since', 'public.presence_events_since(bigint, integer)'),
                ('presence_get', 'public.presence_get(uuid[])'),
                ('presence_heartbeat', 'public.presence_heartbeat(text)'),
                ('presence_is_online', 'public.presence_is_online(uuid)'),
                ('presence_leave', 'public.presence_leave()'),
                ('presence_list_online', 'public.presence_list_online(integer, uuid)'),
                ('presence_my_sessions', 'public.presence_my_sessions()'),
                ('presence_online_per_day', 'public.presence_online_per_day(uuid, date, date, text)'),
                ('presence_prune_events', 'public.presence_prune_events(integer)'),
                ('presence_prune_job_history', 'public.presence_prune_job_history(integer)'),
                ('presence_schedule_sweep', 'public.presence_schedule_sweep()'),
                ('presence_session_beat', 'public.presence_session_beat(uuid, text, text, jsonb)'),
                ('presence_session_history',
                 'public.presence_session_history(uuid, timestamptz, timestamptz, integer)'),
                ('presence_session_leave', 'public.presence_session_leave(uuid)'),
                ('presence_settings', 'public.presence_settings()'),
                ('presence_setup_report', 'public.presence_setup_report()'),
                ('presence_track_beat', 'public.presence_track_beat(jsonb)'),
                ('presence_track_end', 'public.presence_track_end(uuid[])')
            ) AS f (name, signature)
            LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = to_regprocedure(f.signature)
        ),
        -- The internals of sessions (and of the event log): who may use the schema, and
        -- every function in it (SECURITY DEFINER ones must pin search_path; only the
        -- read helpers may be executable by the API roles).
        'private_schema', jsonb_build_object(
            'exists', to_regnamespace('presence_private') IS NOT NULL,
            'usage', (
                SELECT coalesce(jsonb_object_agg(r.rolname,
                           has_schema_privilege(r.oid, to_regnamespace('presence_private'), 'USAGE')),
                       '{}'::jsonb)
                FROM pg_catalog.pg_roles AS r
                WHERE r.rolname = ANY (api_roles) AND to_regnamespace('presence_private') IS NOT NULL
            ),
            'functions', (
                SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'name', p.oid::regprocedure::text,
                    'security_definer', p.prosecdef,
                    'config', to_jsonb(p.proconfig),
                    'execute', (
                        SELECT coalesce(jsonb_object_agg(r.rolname,
                                   has_function_privilege(r.oid, p.oid, 'EXECUTE')), '{}'::jsonb)
                        FROM pg_catalog.pg_roles AS r
                        WHERE r.rolname = ANY (api_roles)
                    )
                ) ORDER BY p.oid::regprocedure::text), '[]'::jsonb)
                FROM pg_catalog.pg_proc AS p
                WHERE p.pronamespace = to_regnamespace('presence_private')
            )
        ),
        -- The triggers that write the event log: without one, transitions of its kind
        -- are missing from the log, watch() and the history.
        'event_triggers', (
            SELECT jsonb_agg(jsonb_build_object(
                'name', t.name,
                'table', t.table_name,
                'exists', tg.oid IS NOT NULL,
                'enabled', coalesce(tg.tgenabled IN ('O', 'A'), false)
            ) ORDER BY t.name)
            FROM (VALUES
                ('presence_events_session_delete', 'public.presence_sessions'),
                ('presence_events_session_insert', 'public.presence_sessions'),
                ('presence_events_session_update', 'public.presence_sessions'),
                ('presence_events_user_update', 'public.users')
            ) AS t (name, table_name)
            LEFT JOIN pg_catalog.pg_trigger AS tg
                ON tg.tgrelid = to_regclass(t.table_name) AND tg.tgname = t.name
               AND NOT tg.tgisinternal
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
    'JSON report of the presence setup (schema version, functions and their settings, grants, RLS, policies, sessions and presence_private, the event log and its triggers, sign-up trigger, pg_cron, job, recent runs, run history size) for verify_setup().';

REVOKE EXECUTE ON FUNCTION public.presence_setup_report() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.presence_setup_report() TO postgres, service_role;
