-- Migration 20240000000007_privacy: presence privacy, enforced by the database.
-- Invisible mode, and who may see presence and last seen (everyone, contacts, nobody),
-- applied on every read path; presence_counts() in time proportional to the users
-- who are online.
--
-- Adds:
--   * public.presence_privacy: one row per user who changed a setting (no row: the
--     defaults, visible to everyone, not invisible). RLS: a signed-in user reads their
--     own row; nobody writes it but the RPCs below. Partial index
--     presence_privacy_restricted_idx: the rows that restrict something, or whose last
--     hidden period still shows (visible_since) (the reads ask
--     once per query whether there is any; while there is none they skip the rule).
--   * public.presence_can_see(viewer uuid, target uuid) -> boolean: THE APP'S HOOK that
--     says who counts as a contact of whom. Installed (returning true) only when it
--     does not exist, so re-running this file never replaces the app's own. Called
--     fail-closed: an error or NULL hides, with a LOG line in the server log.
--   * presence_private.visible_to(viewer uuid, target uuid): the one visibility rule,
--     used by every read path. Returns (presence, last_seen, invisible,
--     shown_last_seen): whether viewer sees target's real presence (online, status,
--     online_since) and real last seen; target's invisible flag (told only to target
--     and to roles that bypass RLS); the last seen to show instead (frozen at the
--     moment target went invisible, if last seen may be shown, else NULL).
--   * presence_private.caller_role() (auth.role(), or the "role" claim where there is
--     no auth schema: plain PostgreSQL behind PostgREST),
--     presence_private.contact_check(viewer, target) (the fail-closed hook call),
--     presence_private.viewer_sees_all() (true for roles that bypass RLS: service_role,
--     the table owner), presence_private.stored_presence and
--     presence_private.privacy_settings (owner-rights views the invoker reads go
--     through), presence_private.user_presence_all_rows (the reads without the RLS
--     probe, for callers whose policies list every user:
--     presence_private.lists_every_user()), presence_private.stored_presence_now (every
--     user's presence before any rule: what the rule applies to, and what the one-user
--     reads return for a user whose settings restrict nothing), presence_private.live_session_rank
--     (the rank of the live status of each user's sessions, for presence_counts),
--     presence_private.set_invisible(user_ids, on) (the one writer of invisible mode), presence_private.log_mask_edges(user_ids,
--     going_invisible) (the edges others see when invisible mode flips for a user who
--     is online: offline, reason leave, going invisible; online, reason join, coming
--     back; logged as mask events with the audience of the visible side).
--   * public.presence_privacy.visible_since: when invisible mode was last turned off.
--   * RPCs for signed-in users: presence_set_invisible(invisible, user_id),
--     presence_set_visibility(presence, last_seen, user_id), presence_my_privacy();
--     for service_role only: presence_set_invisible_for(user_ids uuid[], invisible).
--   * Column privileges on public.users: the API roles (anon, authenticated, PUBLIC)
--     lose SELECT on the presence columns status, last_heartbeat and online_since; a
--     table-wide SELECT of theirs becomes SELECT on the table's other columns. So
--     presence is only readable through the view and the RPCs, which apply the rules
--     (GET /rest/v1/users?select=status answers 401/403; select=* too: list the app's
--     columns, or read public.user_presence). service_role and the owner keep
--     everything: the note's troubleshooting queries run as postgres unchanged.
--     Columns the app adds later need their own GRANT SELECT.
-- Redefines, keeping their signatures, columns and grants:
--   presence_private.user_presence_now (so public.user_presence and every read over it
--   apply the rule; it now reads presence_private.user_presence_all_rows and checks the
--   RLS of public.users row by row), public.presence_get and
--   public.presence_list_online (bulk reads skip the per-row RLS probe when the
--   caller's policies list every user, and keep one plan per session; a one-id
--   presence_get of a user whose settings restrict nothing
--   (presence_private.user_restricting) reads stored_presence_now joined with
--   public.users as the caller, without the rule's nodes in its plan),
--   public.presence_is_online (plpgsql: a plan per session; the same one-id read),
--   public.presence_counts()
--   (visibility applied to the users whose settings can hide them; cost in proportion
--   to the present users: offline is exact up to 10,000 users, else estimated from
--   table statistics, and says so in "offline_estimated"), presence_private.can_see_events(viewer, target) (the event
--   log's seam, created when absent: a viewer sees target's events only when they may
--   see both target's presence and last seen, never while target is invisible),
--   presence_private.can_see_event(viewer, target, audience) (the rule per event: the
--   event's audience, contacts through the hook, AND can_see_events now) and
--   presence_private.event_audience(target, at) (the snapshot the log's trigger writes
--   onto each user event: the stricter of the presence and last-seen settings, nobody
--   while invisible or for an event from before the end of the last invisible
--   period): so what a user did while invisible or hidden never shows later, on any
--   path of the log; public.presence_setup_report() (schema version 5: it also
--   describes privacy; at the end of this file). Previous definitions are saved in
--   presence_private.privacy_replaced_definitions; the rollback restores them.
--
-- What a viewer sees of a target (docs/privacy.md):
--   * target itself, and roles that bypass RLS (service_role, postgres): the truth;
--   * others, when target is invisible: offline, never online; last seen frozen at the
--     moment target went invisible (if target's settings let them see last seen);
--   * others, otherwise: presence per target's presence setting; last seen per the
--     last-seen setting AND the presence setting (a moving last seen shows presence,
--     so it is never shown to someone who may not see presence).
--   'contacts' asks public.presence_can_see(viewer, target).
--
-- Errors raised (SQLSTATE, as PostgREST passes them on in `code`):
--   28000 not authenticated; 22023 invalid argument (unknown visibility value, NULL,
--   too many or NULL ids); 42501 changing another user's settings (or executing a
--   function the caller may not); 23503 user ids without a public.users row.
--
-- Idempotent (IF NOT EXISTS, OR REPLACE, guarded DO blocks): re-running it changes
-- nothing, and never replaces the app's hook. Requires 20240000000005_sessions (and
-- uses the event log of 20240000000006_events when it is there).
--
-- Rollback (supabase/rollbacks/20240000000007_privacy.sql):
--   GRANT SELECT back to every role this file narrowed (as recorded in
--     presence_private.privacy_narrowed_select);
--   EXECUTE each saved definition in presence_private.privacy_replaced_definitions
--     (a can_see_events, can_see_event or event_audience this file created is dropped
--     instead);
--   DROP FUNCTION IF EXISTS public.presence_set_invisible_for(uuid[], boolean),
--       public.presence_my_privacy(), public.presence_set_visibility(text, text, uuid),
--       public.presence_set_invisible(boolean, uuid), and the presence_private
--       functions and views listed above;
--   DROP TABLE IF EXISTS public.presence_privacy,
--       presence_private.privacy_replaced_definitions,
--       presence_private.privacy_narrowed_select;
--   DROP FUNCTION public.presence_can_see(uuid, uuid) only while it is the default.

SET lock_timeout = '5s';
SET statement_timeout = '60s';

-- ------------------------------------------------------------------------------------
-- What the rollback restores (saved once, before anything is replaced).

CREATE TABLE IF NOT EXISTS presence_private.privacy_replaced_definitions (
    object text PRIMARY KEY,
    position integer NOT NULL,
    ddl text NOT NULL,
    comment_ddl text,
    saved_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE presence_private.privacy_replaced_definitions IS
    'Definitions replaced by migration 20240000000007_privacy; its rollback restores them.';

REVOKE ALL ON TABLE presence_private.privacy_replaced_definitions
FROM PUBLIC, anon, authenticated, service_role;

-- A definition this file already replaced (it mentions visible_to, or carries the
-- plan_cache_mode this file sets) is never saved: re-running it keeps the originals.
INSERT INTO presence_private.privacy_replaced_definitions (object, position, ddl, comment_ddl)
SELECT f.signature, f.position, pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
                         pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM (VALUES
    ('public.presence_counts()', 2),
    ('public.presence_is_online(uuid)', 3),
    ('public.presence_get(uuid[])', 4),
    ('public.presence_list_online(integer,uuid)', 5),
    ('presence_private.can_see_events(uuid,uuid)', 6)
) AS f (signature, position)
JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(f.signature)
WHERE pg_catalog.strpos(p.prosrc, 'visible_to') = 0
  AND NOT coalesce(p.proconfig @> ARRAY['plan_cache_mode=force_generic_plan'], false)
ON CONFLICT (object) DO NOTHING;

-- The event log's per-event seams (20240000000006_events installs their defaults; a
-- definition that reads public.presence_privacy or asks contact_check is this file's).
INSERT INTO presence_private.privacy_replaced_definitions (object, position, ddl, comment_ddl)
SELECT f.signature, f.position, pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
                         pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM (VALUES
    ('presence_private.can_see_event(uuid,uuid,text)', 8),
    ('presence_private.event_audience(uuid,timestamp with time zone)', 9)
) AS f (signature, position)
JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(f.signature)
WHERE pg_catalog.strpos(p.prosrc, 'presence_privacy') = 0
  AND pg_catalog.strpos(p.prosrc, 'contact_check') = 0
ON CONFLICT (object) DO NOTHING;

INSERT INTO presence_private.privacy_replaced_definitions (object, position, ddl, comment_ddl)
SELECT 'presence_private.user_presence_now', 1,
       pg_catalog.format(
           'CREATE OR REPLACE VIEW presence_private.user_presence_now WITH (%s) AS %s',
           pg_catalog.array_to_string(c.reloptions, ', '),
           pg_catalog.pg_get_viewdef(c.oid)
       ),
       pg_catalog.format('COMMENT ON VIEW presence_private.user_presence_now IS %L',
                         pg_catalog.obj_description(c.oid, 'pg_class'))
FROM pg_catalog.pg_class AS c
WHERE c.oid = pg_catalog.to_regclass('presence_private.user_presence_now')
  AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'visible_to') = 0
ON CONFLICT (object) DO NOTHING;

-- ------------------------------------------------------------------------------------
-- Settings

CREATE TABLE IF NOT EXISTS public.presence_privacy (
    user_id uuid PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
    invisible boolean NOT NULL DEFAULT false,
    invisible_since timestamptz,
    frozen_last_seen timestamptz,
    visible_since timestamptz,
    presence_visibility text NOT NULL DEFAULT 'everyone'
        CONSTRAINT presence_privacy_presence_visibility_check
        CHECK (presence_visibility IN ('everyone', 'contacts', 'nobody')),
    last_seen_visibility text NOT NULL DEFAULT 'everyone'
        CONSTRAINT presence_privacy_last_seen_visibility_check
        CHECK (last_seen_visibility IN ('everyone', 'contacts', 'nobody')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT presence_privacy_invisible_since_check
        CHECK (invisible = (invisible_since IS NOT NULL))
);

COMMENT ON TABLE public.presence_privacy IS
    'Presence privacy settings of users who changed them (no row: visible to everyone). Written only by presence_set_invisible, presence_set_visibility and presence_set_invisible_for.';
COMMENT ON COLUMN public.presence_privacy.invisible IS
    'Invisible mode: others see the user offline, with last seen frozen at frozen_last_seen; their sessions stay alive.';
COMMENT ON COLUMN public.presence_privacy.invisible_since IS
    'When invisible mode was turned on (NULL while visible).';
COMMENT ON COLUMN public.presence_privacy.visible_since IS
    'When invisible mode was last turned off (the end of the last hidden period), until the user''s next transition: others see online_since no earlier than this, and a last seen from before it as frozen_last_seen; an event that happened before it and is logged after it (a timeout the sweep notices late) is never shown to others.';
COMMENT ON COLUMN public.presence_privacy.frozen_last_seen IS
    'The last seen others are shown while the user is invisible: their last seen at the moment they went invisible (then, if they were online); kept after it ends while visible_since is set, for a last seen from inside the hidden period.';
COMMENT ON COLUMN public.presence_privacy.presence_visibility IS
    'Who may see the user''s presence (online, status, online since): everyone, contacts (public.presence_can_see) or nobody.';
COMMENT ON COLUMN public.presence_privacy.last_seen_visibility IS
    'Who may see the user''s last seen: everyone, contacts or nobody; never more than presence_visibility allows.';

-- The users whose settings can hide something from someone, or whose last hidden
-- period still shows in their presence (visible_since). The reads ask once per query
-- whether there is any (while there is none, nobody's presence is hidden and the
-- per-user rule is skipped), and presence_counts() looks up only these.
CREATE INDEX IF NOT EXISTS presence_privacy_restricted_idx
    ON public.presence_privacy (user_id)
    WHERE invisible OR presence_visibility <> 'everyone' OR last_seen_visibility <> 'everyone'
       OR visible_since IS NOT NULL;

ALTER TABLE public.presence_privacy ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS presence_privacy_select_own ON public.presence_privacy;
CREATE POLICY presence_privacy_select_own ON public.presence_privacy
    FOR SELECT TO authenticated
    USING (user_id = (SELECT presence_private.caller_id()));

-- Supabase's default privileges grant the API roles ALL on new tables. Reads only:
-- settings change through the RPCs, which validate them.
REVOKE ALL ON TABLE public.presence_privacy FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.presence_privacy TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- The app's hook: who is a contact of whom. Created only when absent: re-running
-- this file must never reset an app's own rule to "everyone".

DO $$
BEGIN
    IF pg_catalog.to_regprocedure('public.presence_can_see(uuid, uuid)') IS NULL THEN
        CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid)
        RETURNS boolean
        LANGUAGE sql
        STABLE
        SET search_path = ''
        AS 'SELECT true';
        COMMENT ON FUNCTION public.presence_can_see(uuid, uuid) IS
            'App hook: may viewer see what target shows to contacts? Default: true (everyone is a contact). Replace it (CREATE OR REPLACE, same signature) with your own rule; an error or NULL hides.';
    END IF;
END;
$$;

-- The hook answers "are these two contacts?": the API roles must not ask it about
-- arbitrary pairs. Presence calls it through contact_check (owner rights).
REVOKE ALL ON FUNCTION public.presence_can_see(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Helpers (presence_private)

-- Roles that bypass RLS see every row of public.users anyway: they also see the
-- truth of presence (service_role; postgres, the owner, runs the note's queries).
-- plpgsql without SET: reads call it once per query, and a SET clause alone costs ten
-- times the rest of the call (measured: 10 us against 0.3 us). It is not SECURITY
-- DEFINER and every name in it is qualified, so the caller's search_path cannot
-- change what it does.
CREATE OR REPLACE FUNCTION presence_private.viewer_sees_all()
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    -- row_security_active() is false exactly for the roles that bypass RLS on the
    -- table (superusers, BYPASSRLS, the owner without FORCE), from the syscache.
    IF pg_catalog.row_security_active('public.users'::pg_catalog.regclass) THEN
        RETURN false;
    END IF;
    -- It is also false for everyone when RLS is off on public.users: then only the
    -- role's own attributes say who bypasses it.
    RETURN coalesce((
        SELECT NOT c.relrowsecurity AND (
                   r.rolsuper OR r.rolbypassrls
                   OR pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE'))
               OR c.relrowsecurity
        FROM pg_catalog.pg_roles AS r
        CROSS JOIN pg_catalog.pg_class AS c
        WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER
          AND c.oid OPERATOR(pg_catalog.=) 'public.users'::pg_catalog.regclass
    ), false);
END;
$$;

COMMENT ON FUNCTION presence_private.viewer_sees_all() IS
    'True when the current role bypasses RLS on public.users (superuser, BYPASSRLS such as service_role, or the table owner): it sees the truth of presence.';

-- Whether the caller may list every row of public.users, so that the reads can skip
-- checking its RLS row by row: RLS is not active for the caller (it bypasses RLS, or
-- the table has none), or one of the permissive SELECT policies that apply to the
-- caller is USING (true) and no restrictive one applies (schema.sql's policy is such a
-- one). Otherwise the reads look each user up as the caller. Called once per read.
-- No SET clause (it would triple the cost of a one-user read's fixed part): every name
-- and operator is qualified, and it is not SECURITY DEFINER.
CREATE OR REPLACE FUNCTION presence_private.lists_every_user()
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF NOT pg_catalog.row_security_active('public.users'::pg_catalog.regclass) THEN
        RETURN true;
    END IF;
    RETURN EXISTS (
        SELECT 1
        FROM pg_catalog.pg_policy AS p
        WHERE p.polrelid OPERATOR(pg_catalog.=) 'public.users'::pg_catalog.regclass
          AND p.polpermissive
          AND p.polcmd OPERATOR(pg_catalog.=) ANY (ARRAY['r', '*']::pg_catalog."char"[])
          AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) OPERATOR(pg_catalog.=) 'true'
          AND EXISTS (SELECT 1 FROM pg_catalog.unnest(p.polroles) AS r (oid)
                      WHERE r.oid OPERATOR(pg_catalog.=) 0
                         OR pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER'))
    ) AND NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_policy AS p
        WHERE p.polrelid OPERATOR(pg_catalog.=) 'public.users'::pg_catalog.regclass
          AND NOT p.polpermissive
          AND p.polcmd OPERATOR(pg_catalog.=) ANY (ARRAY['r', '*']::pg_catalog."char"[])
          AND EXISTS (SELECT 1 FROM pg_catalog.unnest(p.polroles) AS r (oid)
                      WHERE r.oid OPERATOR(pg_catalog.=) 0
                         OR pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER'))
    );
END;
$$;

COMMENT ON FUNCTION presence_private.lists_every_user() IS
    'True when the caller may see every row of public.users (RLS not active for it, or a permissive SELECT policy USING (true) and no restrictive one applies): the reads then skip the per-row RLS lookup.';

-- The hook, fail-closed: an error, NULL or a missing hook hides, and the server log
-- says why (LOG: only the server log; the caller learns nothing about the hook).
-- Owner rights: the API roles cannot execute the hook themselves.
CREATE OR REPLACE FUNCTION presence_private.contact_check(viewer uuid, target uuid)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    answer boolean;
BEGIN
    IF viewer IS NULL OR target IS NULL THEN
        RETURN false;
    END IF;
    BEGIN
        answer := public.presence_can_see(viewer, target);
    EXCEPTION WHEN OTHERS THEN
        RAISE LOG 'presence: public.presence_can_see(%, %) failed (SQLSTATE %: %); presence hidden',
            viewer, target, SQLSTATE, SQLERRM;
        RETURN false;
    END;
    IF answer IS NULL THEN
        RAISE LOG 'presence: public.presence_can_see(%, %) returned NULL; presence hidden',
            viewer, target;
        RETURN false;
    END IF;
    RETURN answer;
END;
$$;

COMMENT ON FUNCTION presence_private.contact_check(uuid, uuid) IS
    'public.presence_can_see(viewer, target), fail-closed: an error or NULL is false (and logged at LOG level).';

-- Owner-rights views: the reads run as the caller (so the RLS of public.users decides
-- which users they list), but the API roles may not read these columns directly.
-- presence_private is never exposed through the API.
CREATE OR REPLACE VIEW presence_private.stored_presence
AS
SELECT u.id, u.status, u.last_heartbeat, u.online_since
FROM public.users AS u;

COMMENT ON VIEW presence_private.stored_presence IS
    'The stored presence columns of every user, with owner rights (the API roles cannot select them from public.users).';

CREATE OR REPLACE VIEW presence_private.privacy_settings
AS
SELECT p.user_id, p.invisible, p.invisible_since, p.frozen_last_seen,
       p.presence_visibility, p.last_seen_visibility, p.visible_since
FROM public.presence_privacy AS p;

COMMENT ON VIEW presence_private.privacy_settings IS
    'Every user''s privacy settings, with owner rights (RLS shows a user only their own row).';

-- Up to this many users, presence_counts() counts the offline users exactly (about
-- half a millisecond); beyond, it estimates them from table statistics.
CREATE OR REPLACE FUNCTION presence_private.exact_count_max_rows()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT 10000;
$$;

-- THE visibility rule. An SQL function without SET or SECURITY DEFINER so that the
-- planner inlines it into each read (a call per row would cost more than the rest of
-- the read: see docs/performance.md). Inlined, its text is parsed with the caller's
-- search_path: every name and operator in it is schema-qualified.
CREATE OR REPLACE FUNCTION presence_private.visible_to(viewer uuid, target uuid)
RETURNS TABLE (
    presence boolean,
    last_seen boolean,
    invisible boolean,
    shown_last_seen timestamptz,
    visible_since timestamptz,
    frozen_last_seen timestamptz
)
LANGUAGE sql
STABLE
AS $$
    SELECT
        r.truth OR (NOT r.invisible AND r.presence),
        r.truth OR (NOT r.invisible AND r.presence AND r.last_seen),
        r.truth AND r.invisible,
        CASE WHEN NOT r.truth AND r.invisible AND r.presence AND r.last_seen
             THEN r.frozen_last_seen END,
        -- The end of the last hidden period, for others: nothing from inside it shows
        -- (presence_private.user_presence_all_rows).
        CASE WHEN NOT r.truth THEN r.visible_since END,
        CASE WHEN NOT r.truth THEN r.frozen_last_seen END
    FROM (
        SELECT
            coalesce(viewer OPERATOR(pg_catalog.=) target, false)
                OR (SELECT presence_private.viewer_sees_all()) AS truth,
            coalesce(s.invisible, false) AS invisible,
            s.frozen_last_seen,
            s.visible_since,
            CASE
                WHEN s.presence_visibility IS NULL
                     OR s.presence_visibility OPERATOR(pg_catalog.=) 'everyone' THEN true
                WHEN s.presence_visibility OPERATOR(pg_catalog.=) 'contacts'
                    THEN presence_private.contact_check(viewer, target)
                ELSE false
            END AS presence,
            -- Only what presence lets through matters, so the hook is asked at most
            -- once per user: for presence, or for last seen when presence is everyone's.
            CASE
                WHEN s.last_seen_visibility IS NULL
                     OR s.last_seen_visibility OPERATOR(pg_catalog.=) 'everyone' THEN true
                WHEN s.last_seen_visibility OPERATOR(pg_catalog.=) 'contacts' THEN
                    CASE
                        WHEN s.presence_visibility OPERATOR(pg_catalog.=) 'contacts' THEN true
                        WHEN s.presence_visibility OPERATOR(pg_catalog.=) 'nobody' THEN false
                        ELSE presence_private.contact_check(viewer, target)
                    END
                ELSE false
            END AS last_seen
        FROM (SELECT) AS one
        LEFT JOIN presence_private.privacy_settings AS s
            ON s.user_id OPERATOR(pg_catalog.=) target
        -- Not merged into the caller: each output above is used several times, and
        -- merged, each use would evaluate the hook again.
        OFFSET 0
    ) AS r;
$$;

COMMENT ON FUNCTION presence_private.visible_to(uuid, uuid) IS
    'What viewer may see of target: presence (online, status, online_since), last_seen (the real one), invisible (target''s flag, told only to target and to roles that bypass RLS), shown_last_seen (what to show instead of the real last seen, or NULL). The one visibility rule of every read path.';

-- What others are shown when invisible mode flips while a user is online: going
-- invisible looks like leaving now (offline, reason leave), coming back looks like
-- joining now (online, reason join, with the current status). Logged as mask events
-- (public.presence_events.mask), with the audience of the visible side of the flip:
-- the user and roles that bypass RLS never read them (the truth has no such
-- transition). Nothing is logged for users who are offline at the flip: others already
-- see them offline. Returns how many edges were logged.
CREATE OR REPLACE FUNCTION presence_private.log_mask_edges(user_ids uuid[], going_invisible boolean)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    logged integer := 0;
BEGIN
    IF to_regclass('public.presence_events') IS NULL OR cardinality(user_ids) = 0 THEN
        RETURN 0;  -- no event log (20240000000006_events not applied)
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM presence_private.user_presence_now AS n
        WHERE n.user_id = ANY (user_ids) AND n.online
    ) THEN
        RETURN 0;
    END IF;
    PERFORM presence_private.events_begin();
    -- Owner rights: user_presence_now shows the truth here. The audience is read
    -- while the user is visible: before the flip going invisible, after it coming back.
    WITH edges AS (
        INSERT INTO public.presence_events
            (occurred_at, kind, user_id, old_status, new_status, reason, audience, mask)
        SELECT now(),
               CASE WHEN going_invisible THEN 'offline' ELSE 'online' END,
               n.user_id,
               CASE WHEN going_invisible THEN n.status ELSE 'offline' END,
               CASE WHEN going_invisible THEN 'offline' ELSE n.status END,
               CASE WHEN going_invisible THEN 'leave' ELSE 'join' END,
               presence_private.event_audience(n.user_id, now()),
               true
        FROM presence_private.user_presence_now AS n
        WHERE n.user_id = ANY (user_ids) AND n.online
        ORDER BY n.user_id
        RETURNING id, kind
    )
    SELECT count(pg_catalog.pg_notify('presence_events',
               pg_catalog.json_build_object('id', e.id, 'kind', e.kind)::text))
    INTO logged
    FROM edges AS e;
    RETURN logged;
END;
$$;

COMMENT ON FUNCTION presence_private.log_mask_edges(uuid[], boolean) IS
    'Logs the edges others see when invisible mode flips for users who are online (mask events: offline when going invisible, online when coming back); returns how many.';

-- The one writer of invisible mode. Turning it on freezes what others see as last
-- seen: now if the user is online (they were seen until now), else their last seen.
-- Turning it on again keeps the first moment. Turning it off records when
-- (visible_since: events from before it, logged after it, stay hidden). Either way,
-- the event log gets the edge others see (log_mask_edges). Returns how many users
-- changed.
CREATE OR REPLACE FUNCTION presence_private.set_invisible(user_ids uuid[], turn_on boolean)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    flipped uuid[];
BEGIN
    IF turn_on THEN
        -- The users who become invisible, their edges logged while still visible.
        SELECT coalesce(array_agg(u.id ORDER BY u.id), '{}') INTO flipped
        FROM public.users AS u
        LEFT JOIN public.presence_privacy AS p ON p.user_id = u.id
        WHERE u.id = ANY (user_ids) AND NOT coalesce(p.invisible, false);
        PERFORM presence_private.log_mask_edges(flipped, true);
        -- Owner rights: user_presence_now shows the truth here.
        INSERT INTO public.presence_privacy AS p
            (user_id, invisible, invisible_since, frozen_last_seen, updated_at)
        -- Offline with a last seen from inside the previous hidden period: others were
        -- shown the frozen one, so it stays frozen.
        SELECT n.user_id, true, now(),
               CASE WHEN n.online THEN now()
                    WHEN n.last_seen < q.visible_since THEN q.frozen_last_seen
                    ELSE n.last_seen END,
               now()
        FROM presence_private.user_presence_now AS n
        LEFT JOIN public.presence_privacy AS q ON q.user_id = n.user_id
        WHERE n.user_id = ANY (flipped)
        ORDER BY n.user_id
        ON CONFLICT ON CONSTRAINT presence_privacy_pkey DO UPDATE
        SET invisible = true,
            invisible_since = excluded.invisible_since,
            frozen_last_seen = excluded.frozen_last_seen,
            visible_since = NULL,
            updated_at = excluded.updated_at
        WHERE NOT p.invisible;
    ELSE
        WITH changed AS (
            UPDATE public.presence_privacy AS p
            SET invisible = false, invisible_since = NULL, visible_since = now(),
                updated_at = now()
            WHERE p.user_id = ANY (user_ids) AND p.invisible
            RETURNING p.user_id
        )
        SELECT coalesce(array_agg(c.user_id ORDER BY c.user_id), '{}') INTO flipped FROM changed AS c;
        PERFORM presence_private.log_mask_edges(flipped, false);
    END IF;
    RETURN cardinality(flipped);
END;
$$;

COMMENT ON FUNCTION presence_private.set_invisible(uuid[], boolean) IS
    'Turns invisible mode on or off for the given users (on: freezes the last seen others see); returns how many changed.';

-- A hidden period shows in what others read only until the user's next transition
-- after it: coming online after it, or going offline having been seen after it. Then
-- nothing of it is left to hide, and the settings row stops making every read apply
-- the rule (presence_privacy_restricted_idx). Runs after the event log's trigger
-- (trigger names sort), which reads visible_since for the event being logged.
CREATE OR REPLACE FUNCTION presence_private.forget_hidden_period()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    UPDATE public.presence_privacy AS p
    SET visible_since = NULL, frozen_last_seen = NULL
    WHERE p.user_id = NEW.id
      AND p.visible_since IS NOT NULL
      AND NOT p.invisible
      AND CASE WHEN NEW.status = 'offline' THEN NEW.last_heartbeat >= p.visible_since
               ELSE NEW.online_since >= p.visible_since END;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION presence_private.forget_hidden_period() IS
    'Trigger on public.users: clears visible_since (and the frozen last seen) once a transition leaves nothing of the last hidden period in the user''s presence.';

REVOKE ALL ON FUNCTION presence_private.forget_hidden_period()
FROM PUBLIC, anon, authenticated, service_role;

DROP TRIGGER IF EXISTS presence_privacy_forget_hidden_period ON public.users;
CREATE TRIGGER presence_privacy_forget_hidden_period
    AFTER UPDATE ON public.users
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.online_since IS DISTINCT FROM NEW.online_since)
    EXECUTE FUNCTION presence_private.forget_hidden_period();

-- The role of the request: auth.role(), or without an auth schema (plain PostgreSQL
-- behind PostgREST) the "role" claim PostgREST sets, which auth.role() reads too.
CREATE OR REPLACE FUNCTION presence_private.caller_role()
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF pg_catalog.to_regprocedure('auth.role()') IS NOT NULL THEN
        RETURN auth.role();
    END IF;
    RETURN nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb
           OPERATOR(pg_catalog.->>) 'role';
END;
$$;

COMMENT ON FUNCTION presence_private.caller_role() IS
    'auth.role(), resolved at call time; without auth.role(), the "role" of request.jwt.claims.';

-- Who a settings RPC acts for: the signed-in user, or (service_role only) user_id.
-- The caller comes from presence_private.caller_id(), so that the RPCs also work
-- without an auth schema.
CREATE OR REPLACE FUNCTION presence_private.settings_owner(user_id uuid, fn text)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := presence_private.caller_id();
BEGIN
    IF user_id IS NOT NULL AND user_id IS DISTINCT FROM uid THEN
        IF coalesce(presence_private.caller_role(), '') = 'service_role' THEN
            IF NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = user_id) THEN
                RAISE EXCEPTION 'presence: no public.users row for user %', user_id
                    USING ERRCODE = '23503';
            END IF;
            RETURN user_id;
        END IF;
        RAISE EXCEPTION 'presence: a user can only change their own privacy settings'
            USING ERRCODE = '42501',
                  HINT = pg_catalog.format('Call %s without user_id (it acts for the signed-in user).', fn);
    END IF;
    IF uid IS NULL THEN
        RAISE EXCEPTION 'presence: not authenticated'
            USING ERRCODE = '28000',
                  HINT = pg_catalog.format('Call %s with a signed-in user''s access token.', fn);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = uid) THEN
        RAISE EXCEPTION 'presence: no public.users row for user %', uid
            USING ERRCODE = 'PT404',
                  HINT = 'Create the profile row first (schema.sql adds a trigger on auth.users that does it).';
    END IF;
    RETURN uid;
END;
$$;

-- The settings of one user as the RPCs return them (defaults without a row).
CREATE OR REPLACE FUNCTION presence_private.privacy_of(target uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'user_id', target,
        'invisible', coalesce(p.invisible, false),
        'invisible_since', p.invisible_since,
        'presence', coalesce(p.presence_visibility, 'everyone'),
        'last_seen', coalesce(p.last_seen_visibility, 'everyone')
    )
    FROM (SELECT) AS one
    LEFT JOIN public.presence_privacy AS p ON p.user_id = target;
$$;

REVOKE ALL ON FUNCTION presence_private.caller_role() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION
    presence_private.exact_count_max_rows(), presence_private.lists_every_user(),
    presence_private.viewer_sees_all(), presence_private.contact_check(uuid, uuid),
    presence_private.visible_to(uuid, uuid), presence_private.set_invisible(uuid[], boolean),
    presence_private.log_mask_edges(uuid[], boolean),
    presence_private.settings_owner(uuid, text), presence_private.privacy_of(uuid)
FROM PUBLIC, anon, authenticated, service_role;
-- The reads run as the caller and call these.
GRANT EXECUTE ON FUNCTION
    presence_private.exact_count_max_rows(), presence_private.lists_every_user(),
    presence_private.viewer_sees_all(), presence_private.contact_check(uuid, uuid),
    presence_private.visible_to(uuid, uuid)
TO authenticated, service_role;

REVOKE ALL ON TABLE presence_private.stored_presence, presence_private.privacy_settings
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.stored_presence, presence_private.privacy_settings
TO authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Reads: the rule on every path.

-- Whether any settings row can hide something from someone (or still hides a past
-- hidden period): one probe of presence_privacy_restricted_idx. A set-returning SQL
-- function, which the planner inlines into the reads (a scalar one holding a subquery
-- would run as a function call, planned on every read), and through which the reads'
-- views do not depend on the settings table (dropping it must not take the views and
-- every read with it).
CREATE OR REPLACE FUNCTION presence_private.anyone_restricting()
RETURNS TABLE (restricting boolean)
LANGUAGE sql
STABLE
ROWS 1
AS $$
    SELECT EXISTS (
        SELECT FROM presence_private.privacy_settings AS s
        WHERE s.invisible OR s.presence_visibility OPERATOR(pg_catalog.<>) 'everyone'
           OR s.last_seen_visibility OPERATOR(pg_catalog.<>) 'everyone'
           OR s.visible_since IS NOT NULL
    );
$$;

COMMENT ON FUNCTION presence_private.anyone_restricting() IS
    'One row: true when some user''s privacy settings can hide something from someone (the reads skip the per-user rule otherwise).';

REVOKE ALL ON FUNCTION presence_private.anyone_restricting() FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION presence_private.anyone_restricting() TO authenticated, service_role;

-- The same question about one user: do target's settings restrict anything (or still
-- hide a past hidden period)? visible_to depends on nothing else but who asks, so
-- while they do not, it lets everything of target through to every viewer. One probe
-- of presence_privacy_restricted_idx; inlined like anyone_restricting().
CREATE OR REPLACE FUNCTION presence_private.user_restricting(target uuid)
RETURNS TABLE (restricting boolean)
LANGUAGE sql
STABLE
ROWS 1
AS $$
    SELECT EXISTS (
        SELECT FROM presence_private.privacy_settings AS s
        WHERE s.user_id OPERATOR(pg_catalog.=) target
          AND (s.invisible OR s.presence_visibility OPERATOR(pg_catalog.<>) 'everyone'
               OR s.last_seen_visibility OPERATOR(pg_catalog.<>) 'everyone'
               OR s.visible_since IS NOT NULL)
    );
$$;

COMMENT ON FUNCTION presence_private.user_restricting(uuid) IS
    'One row: true when target''s privacy settings can hide something of target from someone (the one-id reads skip the rule otherwise).';

REVOKE ALL ON FUNCTION presence_private.user_restricting(uuid) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION presence_private.user_restricting(uuid) TO authenticated, service_role;

-- Every user's presence before any visibility rule: the sessions' aggregate, or the
-- stored columns for users without sessions (migration 5's rule), read with owner
-- rights through presence_private.stored_presence and NOT filtered by the RLS of
-- public.users. What every read derives from: user_presence_all_rows applies the rule
-- on top of it, and the one-user reads use it as is for a user whose settings
-- restrict nothing (joined with public.users as the caller: the RLS check). security_invoker, so the
-- planner merges it into each read; presence_private is never exposed through the API.
CREATE OR REPLACE VIEW presence_private.stored_presence_now
WITH (security_invoker = true)
AS
SELECT
    u.id AS user_id,
    u.status AS stored_status,
    d.online,
    CASE WHEN d.online THEN d.status ELSE 'offline' END AS status,
    d.last_seen,
    CASE WHEN d.online THEN d.online_since END AS online_since
FROM presence_private.stored_presence AS u
LEFT JOIN LATERAL (
    -- OFFSET 0 keeps this a per-user lookup (presence_sessions_user_id_idx).
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

COMMENT ON VIEW presence_private.stored_presence_now IS
    'Presence of every user before any visibility rule (sessions, or the stored columns without sessions), NOT filtered by the RLS of public.users: read it joined with public.users as the caller.';

REVOKE ALL ON TABLE presence_private.stored_presence_now
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.stored_presence_now TO authenticated, service_role;

-- Every user's presence as the caller may see it (presence_private.visible_to), without
-- the RLS of public.users: for callers whose policies list every user (the reads
-- check presence_private.lists_every_user() first).
--
-- The rule is asked per user only while some user restricts what others see
-- (me.restricting: a settings row that is invisible, not 'everyone' or just out of
-- invisible mode (visible_since), found through
-- presence_privacy_restricted_idx once per query). Until then visible_to would answer
-- "everything" for every user, and asking it costs a probe of presence_privacy per
-- user: a scan of an empty table is a system call per row, about 40 % of a 1,000-id
-- lookup (docs/performance.md).
CREATE OR REPLACE VIEW presence_private.user_presence_all_rows
WITH (security_invoker = true)
AS
SELECT
    p.user_id,
    p.stored_status,
    (NOT me.restricting OR coalesce(v.presence, false)) AND p.online AS online,
    CASE WHEN (NOT me.restricting OR coalesce(v.presence, false)) AND p.online
         THEN p.status ELSE 'offline' END AS status,
    -- After a hidden period (from the frozen last seen to v.visible_since), others
    -- never see a time from inside it: a last seen from inside is the frozen one
    -- (offline) or the period's end (online: seen since then), and online since is no
    -- earlier than its end.
    CASE WHEN NOT me.restricting OR coalesce(v.last_seen, false)
         THEN CASE WHEN p.last_seen < v.visible_since
                        AND p.last_seen > coalesce(v.frozen_last_seen, '-infinity')
                   THEN CASE WHEN p.online THEN v.visible_since ELSE v.frozen_last_seen END
                   ELSE p.last_seen END
         ELSE v.shown_last_seen END AS last_seen,
    CASE WHEN (NOT me.restricting OR coalesce(v.presence, false)) AND p.online
         THEN greatest(p.online_since, v.visible_since) END AS online_since
-- The flag and the caller, once per query (OFFSET 0: not re-evaluated per row). The
-- caller only when the rule runs: caller_id() parses the JWT claims, which nothing
-- else in the read needs. caller_id() resolves auth.uid() at call time, so this view
-- installs before the auth schema exists.
FROM (
    SELECT f.restricting,
           CASE WHEN f.restricting THEN presence_private.caller_id() END AS viewer
    FROM (
        SELECT r.restricting FROM presence_private.anyone_restricting() AS r
        OFFSET 0
    ) AS f
    OFFSET 0
) AS me
CROSS JOIN presence_private.stored_presence_now AS p
LEFT JOIN LATERAL (
    -- OFFSET 0: not pulled up, so the flag gates the whole lookup (a one-time filter)
    -- instead of filtering its result; a NULL answer hides (coalesce above).
    SELECT r.presence, r.last_seen, r.shown_last_seen, r.visible_since, r.frozen_last_seen
    FROM presence_private.visible_to(me.viewer, p.user_id) AS r
    WHERE me.restricting
    OFFSET 0
) AS v ON true;

COMMENT ON VIEW presence_private.user_presence_all_rows IS
    'Presence of every user as the caller may see it (visible_to), NOT filtered by the RLS of public.users: only for callers for whom lists_every_user() is true.';

REVOKE ALL ON TABLE presence_private.user_presence_all_rows
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.user_presence_all_rows TO authenticated, service_role;

-- Same columns as before (so that re-running migration 4 alone still works). As the
-- caller: the RLS of public.users decides which users are listed, one primary-key probe
-- per row (a one-user read costs less this way than asking the catalog whether the
-- caller may list every user; the bulk reads ask that once and skip the probes).
CREATE OR REPLACE VIEW presence_private.user_presence_now
WITH (security_invoker = true)
AS
SELECT p.user_id, p.stored_status, p.online, p.status, p.last_seen, p.online_since
FROM presence_private.user_presence_all_rows AS p
WHERE EXISTS (SELECT FROM public.users AS r WHERE r.id = p.user_id);

COMMENT ON VIEW presence_private.user_presence_now IS
    'Presence of each user the caller may list (RLS of public.users), exact at read time, as the caller may see it (presence_private.visible_to), plus the stored status.';

-- Per user with sessions: the rank of their live sessions' aggregate status (3 online,
-- 2 busy, 1 away: online > busy > away, the rule of presence_private.session_presence),
-- NULL when none is live. One aggregate where session_presence computes six, and an
-- integer that presence_counts() compares where a status would be compared as text.
-- Owner rights, like session_presence (presence_sessions shows a user only their own
-- rows).
CREATE OR REPLACE VIEW presence_private.live_session_rank
AS
SELECT
    s.user_id,
    max(CASE WHEN s.last_beat > now() - make_interval(secs => c.timeout_seconds)
             THEN CASE s.status WHEN 'online' THEN 3 WHEN 'busy' THEN 2 ELSE 1 END
        END) AS rank
FROM public.presence_sessions AS s
CROSS JOIN public.presence_config AS c
GROUP BY s.user_id;

COMMENT ON VIEW presence_private.live_session_rank IS
    'Per user with sessions: the aggregate status of their live sessions as a rank (3 online, 2 busy, 1 away), NULL when none is live.';

REVOKE ALL ON TABLE presence_private.live_session_rank
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.live_session_rank TO authenticated, service_role;

-- Counts in time proportional to the users who are not offline: online, away and busy
-- are exact (visibility applied: a user hidden from the caller counts as offline).
-- The offline count needs the number of users: exact (RLS applied) while the table is
-- small, else estimated from the planner's statistics (not RLS-filtered), and
-- "offline_estimated" says which. plpgsql, so that its plans are cached for the
-- session (an SQL function with SET is planned again on every call).
CREATE OR REPLACE FUNCTION public.presence_counts()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    live_after timestamptz := presence_private.live_after();
    every_user boolean := presence_private.lists_every_user();
    viewer uuid;
    hiding boolean;
    n_online bigint;
    n_away bigint;
    n_busy bigint;
    n_present bigint;
    estimate double precision;
    users bigint;
    estimated boolean;
BEGIN
    -- Only users who are invisible or show presence to less than everyone can be hidden
    -- (presence_private.visible_to), and never from roles that see the truth.
    hiding := EXISTS (SELECT FROM presence_private.privacy_settings AS s
                      WHERE s.invisible OR s.presence_visibility <> 'everyone')
              AND NOT presence_private.viewer_sees_all();

    -- The aggregation rule of presence_private.user_presence_now for the users whose
    -- stored status is not offline (every user with a live session is one): the ids
    -- from the partial index users_presence_active_idx (an index-only scan, which
    -- visits a heap page only to check that the entry is visible), hash-joined with
    -- the rank of every user's live sessions. Only a user without sessions (a row
    -- written around the presence functions) has their stored columns read (the
    -- subquery, never run for the others), and ranks are compared as integers.
    -- OFFSET 0: the ranks are computed below the filter, so the stored columns are not
    -- read for every user to test it.
    IF every_user AND NOT hiding THEN
        -- Nothing to check per user: the caller lists every user and nobody is hidden.
        SELECT count(*) FILTER (WHERE l.rank = 3),
               count(*) FILTER (WHERE l.rank = 1),
               count(*) FILTER (WHERE l.rank = 2),
               count(*)
        INTO n_online, n_away, n_busy, n_present
        FROM (
            SELECT CASE
                       WHEN a.user_id IS NOT NULL THEN a.rank
                       ELSE (SELECT CASE x.status WHEN 'online' THEN 3 WHEN 'busy' THEN 2 ELSE 1 END
                             FROM presence_private.stored_presence AS x
                             WHERE x.id = u.id AND x.status <> 'offline'
                               AND x.last_heartbeat > live_after)
                   END AS rank
            FROM (SELECT p.id FROM presence_private.stored_presence AS p
                  WHERE p.status <> 'offline') AS u
            LEFT JOIN presence_private.live_session_rank AS a ON a.user_id = u.id
            OFFSET 0
        ) AS l
        WHERE l.rank IS NOT NULL;
    ELSE
        -- Per user: the RLS of public.users as the caller (unless it lists every user),
        -- and presence_private.visible_to for the users whose settings can hide them.
        viewer := presence_private.caller_id();
        SELECT count(*) FILTER (WHERE l.rank = 3),
               count(*) FILTER (WHERE l.rank = 1),
               count(*) FILTER (WHERE l.rank = 2),
               count(*)
        INTO n_online, n_away, n_busy, n_present
        FROM (
            SELECT u.id,
                   CASE
                       WHEN a.user_id IS NOT NULL THEN a.rank
                       ELSE (SELECT CASE x.status WHEN 'online' THEN 3 WHEN 'busy' THEN 2 ELSE 1 END
                             FROM presence_private.stored_presence AS x
                             WHERE x.id = u.id AND x.status <> 'offline'
                               AND x.last_heartbeat > live_after)
                   END AS rank
            FROM (SELECT p.id FROM presence_private.stored_presence AS p
                  WHERE p.status <> 'offline') AS u
            LEFT JOIN presence_private.live_session_rank AS a ON a.user_id = u.id
            OFFSET 0
        ) AS l
        WHERE l.rank IS NOT NULL
          AND (every_user OR EXISTS (SELECT FROM public.users AS r WHERE r.id = l.id))
          AND (NOT hiding OR NOT EXISTS (
                  SELECT FROM presence_private.privacy_settings AS s
                  WHERE s.user_id = l.id
                    AND (s.invisible OR s.presence_visibility <> 'everyone')
                    -- A NULL answer hides (fail closed).
                    AND NOT coalesce((SELECT v.presence
                                      FROM presence_private.visible_to(viewer, l.id) AS v),
                                     false)));
    END IF;

    -- The planner's estimate of the table's rows: rows per page at the last
    -- VACUUM/ANALYZE times the pages it has now (-1: never analyzed).
    SELECT CASE
               WHEN c.reltuples < 0 THEN -1
               WHEN c.relpages = 0 THEN c.reltuples
               ELSE c.reltuples / c.relpages
                    * (pg_catalog.pg_relation_size(c.oid)
                       / pg_catalog.current_setting('block_size')::bigint)
           END
    INTO estimate
    FROM pg_catalog.pg_class AS c
    WHERE c.oid = 'public.users'::regclass;
    estimated := coalesce(estimate > presence_private.exact_count_max_rows(), false);
    IF estimated THEN
        users := pg_catalog.round(estimate)::bigint;
    ELSE
        SELECT count(*) INTO users FROM public.users;
    END IF;

    RETURN jsonb_build_object(
        'online', n_online,
        'away', n_away,
        'busy', n_busy,
        'offline', greatest(users - n_present, 0),
        'offline_estimated', estimated
    );
END;
$$;

COMMENT ON FUNCTION public.presence_counts() IS
    'Number of users per status as the caller may see them: online, away, busy (exact, in time proportional to the users present) and offline (exact up to 10,000 users, else estimated from table statistics: offline_estimated = true).';

-- presence_is_online as plpgsql (its plans cached for the session). While the user's
-- settings restrict nothing (presence_private.user_restricting(), one probe of
-- presence_privacy_restricted_idx), presence_private.visible_to would let everything
-- through to every viewer, so the read is the user's presence before any rule, as
-- listed by the RLS of public.users (a join with public.users as the caller): a plan
-- without the rule's nodes, each of which is opened and set up on every call even
-- when it does not run. Otherwise the rule, through user_presence_now.
CREATE OR REPLACE FUNCTION public.presence_is_online(user_id uuid)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF NOT (SELECT r.restricting
            FROM presence_private.user_restricting(presence_is_online.user_id) AS r) THEN
        RETURN coalesce(
            (SELECT p.online
             FROM public.users AS r
             JOIN presence_private.stored_presence_now AS p ON p.user_id = r.id
             WHERE r.id = presence_is_online.user_id),
            false
        );
    END IF;
    -- The rule: presence_private.visible_to, through user_presence_now.
    RETURN coalesce(
        (SELECT p.online FROM public.user_presence AS p WHERE p.user_id = presence_is_online.user_id),
        false
    );
END;
$$;

COMMENT ON FUNCTION public.presence_is_online(uuid) IS
    'True if the user is online right now as the caller may see them (false for unknown, hidden or invisible users).';

-- The lookups keep one plan for the session (plan_cache_mode): a custom plan costs
-- more to make than the whole read (the view is one join per row whatever the ids),
-- and for 1,000 ids it would scan the whole table where per-id probes are faster.
-- Both apply presence_private.visible_to; a lookup of many ids asks once whether the
-- caller may list every user and then skips the per-row RLS probe.
CREATE OR REPLACE FUNCTION public.presence_get(user_ids uuid[])
RETURNS SETOF public.user_presence
LANGUAGE plpgsql
STABLE
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF user_ids IS NULL OR cardinality(user_ids) > 1000 THEN
        RAISE EXCEPTION 'presence: user_ids must be an array of at most 1000 ids (got %)',
            coalesce(cardinality(user_ids)::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- One id whose settings restrict nothing (as in presence_is_online): the user's
    -- presence before any rule, as listed by the RLS of public.users.
    IF cardinality(user_ids) = 1
       AND NOT (SELECT r.restricting
                FROM presence_private.user_restricting(user_ids[1]) AS r) THEN
        RETURN QUERY
            SELECT p.user_id, p.status, p.online, p.last_seen, p.last_seen, p.online_since
            FROM public.users AS r
            JOIN presence_private.stored_presence_now AS p ON p.user_id = r.id
            WHERE r.id = user_ids[1];
        RETURN;
    END IF;
    -- Both other branches apply presence_private.visible_to (through the views).
    IF cardinality(user_ids) > 16 AND presence_private.lists_every_user() THEN
        RETURN QUERY
            SELECT p.user_id, p.status, p.online, p.last_seen, p.last_seen, p.online_since
            FROM unnest(user_ids) WITH ORDINALITY AS wanted (user_id, ord)
            JOIN presence_private.user_presence_all_rows AS p ON p.user_id = wanted.user_id
            ORDER BY wanted.ord;
    ELSE
        RETURN QUERY
            SELECT p.*
            FROM unnest(user_ids) WITH ORDINALITY AS wanted (user_id, ord)
            JOIN public.user_presence AS p ON p.user_id = wanted.user_id
            ORDER BY wanted.ord;
    END IF;
END;
$$;

COMMENT ON FUNCTION public.presence_get(uuid[]) IS
    'Presence of up to 1000 users in the order asked, as the caller may see them; ids without a visible row are left out.';

CREATE OR REPLACE FUNCTION public.presence_list_online(
    page_size integer DEFAULT 100,
    after_user_id uuid DEFAULT NULL
)
RETURNS SETOF public.user_presence
LANGUAGE plpgsql
STABLE
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF page_size IS NULL OR page_size NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'presence: page_size must be between 1 and 1000 (got %)',
            coalesce(page_size::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- Keyset pagination over the partial index users_presence_active_idx: cost grows
    -- with the number of online users, never with the table size. Users hidden from
    -- the caller (presence_private.visible_to) are skipped.
    IF presence_private.lists_every_user() THEN
        RETURN QUERY
            SELECT p.user_id, p.status, true, p.last_seen, p.last_seen, p.online_since
            FROM presence_private.user_presence_all_rows AS p
            WHERE p.stored_status <> 'offline'
              AND p.online
              AND (after_user_id IS NULL OR p.user_id > after_user_id)
            ORDER BY p.user_id
            LIMIT page_size;
    ELSE
        RETURN QUERY
            SELECT p.user_id, p.status, true, p.last_seen, p.last_seen, p.online_since
            FROM presence_private.user_presence_now AS p
            WHERE p.stored_status <> 'offline'
              AND p.online
              AND (after_user_id IS NULL OR p.user_id > after_user_id)
            ORDER BY p.user_id
            LIMIT page_size;
    END IF;
END;
$$;

COMMENT ON FUNCTION public.presence_list_online(integer, uuid) IS
    'Online users ordered by id, as the caller may see them, page_size (1-1000) at a time after after_user_id (keyset pagination).';

-- The event log's seam (migration 20240000000006_events calls it from the RLS policy of
-- public.presence_events; created here when absent). Events show when a user came and
-- went, i.e. both presence and last seen: a viewer sees them only when allowed both,
-- and never while the user is invisible. The user always sees their own (the policy
-- says so); roles that bypass RLS see every event.
CREATE OR REPLACE FUNCTION presence_private.can_see_events(viewer uuid, target uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    -- Runs as the reader: the RLS of public.users decides whether target is listed at
    -- all; then presence_private.visible_to.
    SELECT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = target)
       AND coalesce((SELECT v.presence AND v.last_seen
                     FROM presence_private.visible_to(viewer, target) AS v), false);
$$;

COMMENT ON FUNCTION presence_private.can_see_events(uuid, uuid) IS
    'May viewer see the presence events of target? target''s public.users row is visible to the reader (RLS) and presence_private.visible_to lets viewer see both presence and last seen (never while target is invisible).';

REVOKE ALL ON FUNCTION presence_private.can_see_events(uuid, uuid) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION presence_private.can_see_events(uuid, uuid) TO authenticated, service_role;

-- The rule per event. can_see_events is per (viewer, target) with target's settings
-- NOW; each user event also carries the audience target's settings gave it WHEN it was
-- logged (presence_private.event_audience, below). Both must allow the viewer: so what
-- happened while a user was invisible (or hid presence or last seen) stays hidden after
-- they loosen the setting, and tightening it hides the past too. Events with no
-- snapshot (logged before this migration) follow the current rule alone.
-- No SET clause, so that the planner inlines it into the policy: every name and
-- operator is qualified.
CREATE OR REPLACE FUNCTION presence_private.can_see_event(viewer uuid, target uuid, audience text)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    -- CASE: the cheap refusal first, and the hook asked only for contacts events.
    SELECT CASE
        WHEN audience OPERATOR(pg_catalog.=) 'nobody' THEN false
        WHEN audience OPERATOR(pg_catalog.=) 'contacts'
             AND NOT presence_private.contact_check(viewer, target) THEN false
        ELSE presence_private.can_see_events(viewer, target)
    END;
$$;

COMMENT ON FUNCTION presence_private.can_see_event(uuid, uuid, text) IS
    'May viewer see an event of target logged with this audience? The audience when it was logged (everyone; contacts: public.presence_can_see via contact_check; nobody; NULL: no snapshot) AND can_see_events(viewer, target) now. The per-event rule of the log''s policy.';

REVOKE ALL ON FUNCTION presence_private.can_see_event(uuid, uuid, text) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION presence_private.can_see_event(uuid, uuid, text) TO authenticated, service_role;

-- The snapshot written onto each user event (online, offline, status) by the log's
-- trigger: the stricter of target's presence and last-seen settings (an event shows
-- both: when the user came or went), nobody while invisible, and nobody for an event
-- that happened before the end of the last invisible period (logged late: a timeout
-- the sweep notices after the user turned invisible mode off). One primary-key probe
-- of public.presence_privacy (no row: everyone). plpgsql without SET (its plan is
-- cached; the caller, a SECURITY DEFINER trigger, pins search_path = ''), every name
-- and operator qualified.
CREATE OR REPLACE FUNCTION presence_private.event_audience(target uuid, at timestamptz)
RETURNS text
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    s record;
BEGIN
    SELECT p.invisible, p.visible_since, p.presence_visibility, p.last_seen_visibility
    INTO s
    FROM public.presence_privacy AS p
    WHERE p.user_id OPERATOR(pg_catalog.=) target;
    IF NOT FOUND THEN
        RETURN 'everyone';
    END IF;
    IF s.invisible
       OR at OPERATOR(pg_catalog.<) s.visible_since
       OR s.presence_visibility OPERATOR(pg_catalog.=) 'nobody'
       OR s.last_seen_visibility OPERATOR(pg_catalog.=) 'nobody' THEN
        RETURN 'nobody';
    END IF;
    IF s.presence_visibility OPERATOR(pg_catalog.=) 'contacts'
       OR s.last_seen_visibility OPERATOR(pg_catalog.=) 'contacts' THEN
        RETURN 'contacts';
    END IF;
    RETURN 'everyone';
END;
$$;

COMMENT ON FUNCTION presence_private.event_audience(uuid, timestamptz) IS
    'Who else may see an event of target that happened at `at`, by target''s settings when it is logged: the stricter of presence and last seen (everyone, contacts, nobody), nobody while invisible or for an event from before the end of the last invisible period. Written onto each user event.';

-- Only the log's triggers call it (as the owner).
REVOKE ALL ON FUNCTION presence_private.event_audience(uuid, timestamptz)
FROM PUBLIC, anon, authenticated, service_role;

-- ------------------------------------------------------------------------------------
-- Settings RPCs

CREATE OR REPLACE FUNCTION public.presence_set_invisible(invisible boolean, user_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    target uuid;
BEGIN
    IF invisible IS NULL THEN
        RAISE EXCEPTION 'presence: invisible must be true or false (got NULL)'
            USING ERRCODE = '22023';
    END IF;
    target := presence_private.settings_owner(user_id, 'presence_set_invisible');
    PERFORM presence_private.set_invisible(ARRAY[target], invisible);
    RETURN presence_private.privacy_of(target);
END;
$$;

COMMENT ON FUNCTION public.presence_set_invisible(boolean, uuid) IS
    'Turns invisible mode on or off for the signed-in user (user_id: only your own, or any with the service key); returns the settings.';

CREATE OR REPLACE FUNCTION public.presence_set_visibility(
    presence text DEFAULT NULL,
    last_seen text DEFAULT NULL,
    user_id uuid DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    target uuid;
BEGIN
    IF presence IS NOT NULL AND presence NOT IN ('everyone', 'contacts', 'nobody') THEN
        RAISE EXCEPTION 'presence: unknown visibility % for presence', presence_private.echo(presence)
            USING ERRCODE = '22023',
                  HINT = 'Use everyone, contacts or nobody (NULL keeps the current one).';
    END IF;
    IF last_seen IS NOT NULL AND last_seen NOT IN ('everyone', 'contacts', 'nobody') THEN
        RAISE EXCEPTION 'presence: unknown visibility % for last_seen', presence_private.echo(last_seen)
            USING ERRCODE = '22023',
                  HINT = 'Use everyone, contacts or nobody (NULL keeps the current one).';
    END IF;
    target := presence_private.settings_owner(user_id, 'presence_set_visibility');
    IF presence IS NOT NULL OR last_seen IS NOT NULL THEN
        INSERT INTO public.presence_privacy AS p
            (user_id, presence_visibility, last_seen_visibility, updated_at)
        VALUES (target, coalesce(presence_set_visibility.presence, 'everyone'),
                coalesce(presence_set_visibility.last_seen, 'everyone'), now())
        ON CONFLICT ON CONSTRAINT presence_privacy_pkey DO UPDATE
        SET presence_visibility = coalesce(presence_set_visibility.presence, p.presence_visibility),
            last_seen_visibility = coalesce(presence_set_visibility.last_seen, p.last_seen_visibility),
            updated_at = excluded.updated_at;
    END IF;
    RETURN presence_private.privacy_of(target);
END;
$$;

COMMENT ON FUNCTION public.presence_set_visibility(text, text, uuid) IS
    'Sets who may see the signed-in user''s presence and last seen: everyone, contacts or nobody (NULL keeps a setting; user_id: only your own, or any with the service key); returns the settings.';

CREATE OR REPLACE FUNCTION public.presence_my_privacy()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    RETURN presence_private.privacy_of(presence_private.settings_owner(NULL, 'presence_my_privacy'));
END;
$$;

COMMENT ON FUNCTION public.presence_my_privacy() IS
    'The signed-in user''s privacy settings: {"user_id", "invisible", "invisible_since", "presence", "last_seen"}.';

-- A server (PresenceTracker) turns invisible mode on or off for many users at once.
CREATE OR REPLACE FUNCTION public.presence_set_invisible_for(user_ids uuid[], invisible boolean)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    unknown integer;
    detail text;
    changed integer;
BEGIN
    IF invisible IS NULL THEN
        RAISE EXCEPTION 'presence: invisible must be true or false (got NULL)'
            USING ERRCODE = '22023';
    END IF;
    IF user_ids IS NULL THEN
        RAISE EXCEPTION 'presence: user_ids must be an array of uuids (got NULL)'
            USING ERRCODE = '22023';
    END IF;
    IF cardinality(user_ids) > presence_private.max_batch() THEN
        RAISE EXCEPTION 'presence: at most % users per call (got %)',
            presence_private.max_batch(), cardinality(user_ids)
            USING ERRCODE = '22023',
                  HINT = 'Split the users into several calls.';
    END IF;
    IF array_position(user_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'presence: user_ids must not contain null (position %)',
            array_position(user_ids, NULL)
            USING ERRCODE = '22023';
    END IF;
    SELECT count(*), array_to_string((array_agg(x.uid::text ORDER BY x.uid))[1:5], ', ')
    INTO unknown, detail
    FROM (
        SELECT DISTINCT b.uid FROM unnest(user_ids) AS b (uid)
        WHERE NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = b.uid)
    ) AS x;
    IF unknown > 0 THEN
        RAISE EXCEPTION 'presence: % user ids have no public.users row; nothing was changed', unknown
            USING ERRCODE = '23503',
                  DETAIL = 'unknown: ' || detail || CASE WHEN unknown > 5 THEN ', ...' ELSE '' END;
    END IF;
    changed := presence_private.set_invisible(user_ids, invisible);
    RETURN jsonb_build_object('changed', changed, 'at', now());
END;
$$;

COMMENT ON FUNCTION public.presence_set_invisible_for(uuid[], boolean) IS
    'service_role: turns invisible mode on or off for up to 10,000 users, all or nothing; returns {"changed", "at"}.';

REVOKE ALL ON FUNCTION
    public.presence_set_invisible(boolean, uuid),
    public.presence_set_visibility(text, text, uuid),
    public.presence_my_privacy(),
    public.presence_set_invisible_for(uuid[], boolean)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    public.presence_set_invisible(boolean, uuid),
    public.presence_set_visibility(text, text, uuid),
    public.presence_my_privacy()
TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.presence_set_invisible_for(uuid[], boolean) TO service_role;

-- ------------------------------------------------------------------------------------
-- Direct table reads: the API roles lose SELECT on the presence columns of
-- public.users (RLS hides rows, not columns). A table-wide SELECT of anon,
-- authenticated or PUBLIC becomes SELECT on the table's other columns; column grants
-- on the presence columns are revoked. Each narrowing is recorded for the rollback.
-- Supabase Realtime (postgres_changes) sends a subscriber only the columns its role may
-- select, and refuses filters on the others. Idempotent: a second run finds nothing
-- to narrow.

CREATE TABLE IF NOT EXISTS presence_private.privacy_narrowed_select (
    grantee text NOT NULL,
    column_name text NOT NULL,
    narrowed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grantee, column_name)
);

COMMENT ON TABLE presence_private.privacy_narrowed_select IS
    'SELECT privileges on public.users that migration 20240000000007_privacy narrowed (column_name * = table-wide); its rollback grants them back.';

REVOKE ALL ON TABLE presence_private.privacy_narrowed_select
FROM PUBLIC, anon, authenticated, service_role;

DO $$
DECLARE
    grant_row record;
    other_columns text;
    hidden constant text[] := ARRAY['status', 'last_heartbeat', 'online_since'];
BEGIN
    FOR grant_row IN
        SELECT DISTINCT
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(r.rolname) END AS grantee
        FROM pg_catalog.pg_class AS c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = 'public.users'::regclass
          AND a.privilege_type = 'SELECT'
          AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated'))
        ORDER BY 1
    LOOP
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(att.attname), ', ' ORDER BY att.attnum)
        INTO other_columns
        FROM pg_catalog.pg_attribute AS att
        WHERE att.attrelid = 'public.users'::regclass AND att.attnum > 0 AND NOT att.attisdropped
          AND att.attname <> ALL (hidden);
        INSERT INTO presence_private.privacy_narrowed_select (grantee, column_name)
        VALUES (grant_row.grantee, '*')
        ON CONFLICT (grantee, column_name) DO NOTHING;
        -- Revoking the table privilege also revokes that privilege on every column.
        EXECUTE pg_catalog.format('REVOKE SELECT ON TABLE public.users FROM %s', grant_row.grantee);
        IF other_columns IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT SELECT (%s) ON TABLE public.users TO %s',
                other_columns, grant_row.grantee);
        END IF;
        RAISE NOTICE 'presence: SELECT on public.users for % narrowed to the columns the app owns (%): presence is read through public.user_presence and the presence RPCs, which apply each user''s privacy settings',
            grant_row.grantee, coalesce(other_columns, 'none');
    END LOOP;

    FOR grant_row IN
        SELECT DISTINCT
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(r.rolname) END AS grantee,
               att.attname AS column_name
        FROM pg_catalog.pg_attribute AS att
        CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) AS a
        LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
        WHERE att.attrelid = 'public.users'::regclass
          AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated'))
          AND a.privilege_type = 'SELECT' AND att.attname = ANY (hidden)
        ORDER BY 1, 2
    LOOP
        INSERT INTO presence_private.privacy_narrowed_select (grantee, column_name)
        VALUES (grant_row.grantee, grant_row.column_name)
        ON CONFLICT (grantee, column_name) DO NOTHING;
        EXECUTE pg_catalog.format('REVOKE SELECT (%I) ON TABLE public.users FROM %s',
            grant_row.column_name, grant_row.grantee);
    END LOOP;

    -- Realtime sends no presence column now, but an UPDATE of a user's row still
    -- reaches every subscriber allowed to see the row, at the moment it happens.
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_publication_tables AS t
        WHERE t.pubname = 'supabase_realtime' AND t.schemaname = 'public' AND t.tablename = 'users'
    ) THEN
        RAISE NOTICE 'presence: public.users is in the supabase_realtime publication: subscribers get no presence columns, but the times of its updates follow each user''s presence transitions, whatever their privacy settings. Subscribe to public.presence_events instead (privacy-aware), or remove the table: ALTER PUBLICATION supabase_realtime DROP TABLE public.users;';
    END IF;
END;
$$;

-- ------------------------------------------------------------------------------------
-- The setup report (schema_version 5): what verify_setup() judges, now with privacy:
-- public.presence_privacy (in "relations"), the settings RPCs (in "functions"), and a
-- "privacy" section (the hook, the internals, the SELECT grants on the presence columns
-- of public.users, Realtime). The same text as 20240000000006_events' report otherwise.
-- Kept at the end of this file, apart from the privacy objects themselves.

-- Saved once for the rollback (never a definition that already knows privacy).
INSERT INTO presence_private.privacy_replaced_definitions (object, position, ddl, comment_ddl)
SELECT 'public.presence_setup_report()', 7, pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
                         pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM pg_catalog.pg_proc AS p
WHERE p.oid = pg_catalog.to_regprocedure('public.presence_setup_report()')
  AND pg_catalog.strpos(p.prosrc, 'presence_privacy') = 0
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
        'schema_version', 5,
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
                         ('presence_events'), ('presence_privacy')) AS rel (name)
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
                ('presence_my_privacy', 'public.presence_my_privacy()'),
                ('presence_my_sessions', 'public.presence_my_sessions()'),
                ('presence_online_per_day', 'public.presence_online_per_day(uuid, date, date, text)'),
                ('presence_prune_events', 'public.presence_prune_events(integer)'),
                ('presence_prune_job_history', 'public.presence_prune_job_history(integer)'),
                ('presence_schedule_sweep', 'public.presence_schedule_sweep()'),
                ('presence_session_beat', 'public.presence_session_beat(uuid, text, text, jsonb)'),
                ('presence_session_history',
                 'public.presence_session_history(uuid, timestamptz, timestamptz, integer)'),
                ('presence_session_leave', 'public.presence_session_leave(uuid)'),
                ('presence_set_invisible', 'public.presence_set_invisible(boolean, uuid)'),
                ('presence_set_invisible_for', 'public.presence_set_invisible_for(uuid[], boolean)'),
                ('presence_set_visibility', 'public.presence_set_visibility(text, text, uuid)'),
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
        ),
        -- Privacy (migration 7): the app's hook and who may run it, the internals every
        -- read path goes through, who may SELECT the presence columns of public.users
        -- directly (nobody but the owner and service_role: the reads apply the rules),
        -- and whether Realtime publishes public.users.
        'privacy', jsonb_build_object(
            'installed', to_regclass('public.presence_privacy') IS NOT NULL,
            'hook', (
                SELECT jsonb_build_object(
                    'exists', p.oid IS NOT NULL,
                    'is_default', coalesce(btrim(p.prosrc) = 'SELECT true', false),
                    'security_definer', coalesce(p.prosecdef, false),
                    'config', to_jsonb(p.proconfig),
                    'execute', (
                        SELECT coalesce(jsonb_object_agg(r.rolname,
                                   p.oid IS NOT NULL AND has_function_privilege(r.oid, p.oid, 'EXECUTE')),
                               '{}'::jsonb)
                        FROM pg_catalog.pg_roles AS r
                        WHERE r.rolname = ANY (api_roles)
                    )
                )
                FROM (SELECT to_regprocedure('public.presence_can_see(uuid, uuid)') AS oid) AS h
                LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = h.oid
            ),
            'objects', (
                SELECT jsonb_object_agg(o.name,
                    CASE WHEN o.name LIKE '%(%' THEN to_regprocedure(o.name) IS NOT NULL
                         ELSE to_regclass(o.name) IS NOT NULL END)
                FROM (VALUES
                    ('presence_private.anyone_restricting()'),
                    ('presence_private.contact_check(uuid, uuid)'),
                    ('presence_private.forget_hidden_period()'),
                    ('presence_private.lists_every_user()'),
                    ('presence_private.live_session_rank'),
                    ('presence_private.privacy_of(uuid)'),
                    ('presence_private.privacy_settings'),
                    ('presence_private.set_invisible(uuid[], boolean)'),
                    ('presence_private.settings_owner(uuid, text)'),
                    ('presence_private.stored_presence'),
                    ('presence_private.stored_presence_now'),
                    ('presence_private.user_presence_all_rows'),
                    ('presence_private.user_restricting(uuid)'),
                    ('presence_private.viewer_sees_all()'),
                    ('presence_private.visible_to(uuid, uuid)')
                ) AS o (name)
            ),
            -- Presence columns each API role can SELECT (through any grant), and the
            -- grants on public.users that give them: table-wide or per column, to the
            -- role itself or to PUBLIC.
            'readable_presence_columns', (
                SELECT coalesce(jsonb_object_agg(r.rolname, (
                    SELECT coalesce(jsonb_agg(a.attname ORDER BY a.attnum), '[]'::jsonb)
                    FROM pg_catalog.pg_attribute AS a
                    WHERE a.attrelid = to_regclass('public.users') AND NOT a.attisdropped
                      AND a.attname IN ('status', 'last_heartbeat', 'online_since')
                      AND has_column_privilege(r.oid, a.attrelid, a.attnum, 'SELECT')
                )), '{}'::jsonb)
                FROM pg_catalog.pg_roles AS r
                WHERE r.rolname IN ('anon', 'authenticated') AND to_regclass('public.users') IS NOT NULL
            ),
            'select_grants', (
                SELECT coalesce(jsonb_object_agg(g.grantee, jsonb_build_object(
                    'table', EXISTS (
                        SELECT 1
                        FROM pg_catalog.pg_class AS c, pg_catalog.aclexplode(c.relacl) AS x
                        WHERE c.oid = to_regclass('public.users') AND x.privilege_type = 'SELECT'
                          AND x.grantee = g.oid),
                    'columns', (
                        SELECT coalesce(jsonb_agg(a.attname ORDER BY a.attnum), '[]'::jsonb)
                        FROM pg_catalog.pg_attribute AS a, pg_catalog.aclexplode(a.attacl) AS x
                        WHERE a.attrelid = to_regclass('public.users') AND NOT a.attisdropped
                          AND a.attname IN ('status', 'last_heartbeat', 'online_since')
                          AND x.privilege_type = 'SELECT' AND x.grantee = g.oid)
                )), '{}'::jsonb)
                FROM (
                    SELECT 'PUBLIC' AS grantee, 0::oid AS oid
                    UNION ALL
                    SELECT r.rolname::text, r.oid FROM pg_catalog.pg_roles AS r
                    WHERE r.rolname IN ('anon', 'authenticated')
                ) AS g
                WHERE to_regclass('public.users') IS NOT NULL
            ),
            'users_in_realtime', EXISTS (
                SELECT 1 FROM pg_catalog.pg_publication_tables AS t
                WHERE t.pubname = 'supabase_realtime' AND t.schemaname = 'public'
                  AND t.tablename = 'users')
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
    'JSON report of the presence setup (schema version, functions and their settings, grants, RLS, policies, sessions and presence_private, the event log and its triggers, privacy: the hook, its internals, the presence columns'' SELECT grants and Realtime, sign-up trigger, pg_cron, job, recent runs, run history size) for verify_setup().';

REVOKE EXECUTE ON FUNCTION public.presence_setup_report() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.presence_setup_report() TO postgres, service_role;
