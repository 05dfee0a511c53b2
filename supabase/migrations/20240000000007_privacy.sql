-- Migration 20240000000007_privacy: presence privacy, enforced by the database.
-- Invisible mode, and who may see presence and last seen (everyone, contacts, nobody),
-- applied on every read path; presence_counts() in time proportional to the users
-- who are online.
--
-- Adds:
--   * public.presence_privacy: one row per user who changed a setting (no row: the
--     defaults, visible to everyone, not invisible). RLS: a signed-in user reads their
--     own row; nobody writes it but the RPCs below. Partial index
--     presence_privacy_restricted_idx: the rows that restrict something (the reads ask
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
--   * presence_private.contact_check(viewer, target) (the fail-closed hook call),
--     presence_private.viewer_sees_all() (true for roles that bypass RLS: service_role,
--     the table owner), presence_private.stored_presence and
--     presence_private.privacy_settings (owner-rights views the invoker reads go
--     through), presence_private.user_presence_all_rows (the reads without the RLS
--     probe, for callers whose policies list every user:
--     presence_private.lists_every_user()), presence_private.live_session_status (the
--     live status of each user's sessions, for presence_counts),
--     presence_private.set_invisible(user_ids, on) (the one writer of invisible mode).
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
--   caller's policies list every user, and keep one plan per session),
--   public.presence_is_online (plpgsql: a plan per session), public.presence_counts()
--   (visibility applied to the users whose settings can hide them; cost in proportion
--   to the present users: offline is exact up to 10,000 users, else estimated from
--   table statistics, and says so in "offline_estimated"), presence_private.can_see_events(viewer, target) (the event
--   log's seam, created when absent: a viewer sees target's events only when they may
--   see both target's presence and last seen). Previous definitions are saved in
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
-- nothing, and never replaces the app's hook. Requires 20240000000004_sessions.
--
-- Rollback (supabase/rollbacks/20240000000007_privacy.sql):
--   GRANT SELECT back to every role this file narrowed (as recorded in
--     presence_private.privacy_narrowed_select);
--   EXECUTE each saved definition in presence_private.privacy_replaced_definitions
--     (a can_see_events this file created is dropped instead);
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
COMMENT ON COLUMN public.presence_privacy.frozen_last_seen IS
    'The last seen others are shown while the user is invisible: their last seen at the moment they went invisible (then, if they were online).';
COMMENT ON COLUMN public.presence_privacy.presence_visibility IS
    'Who may see the user''s presence (online, status, online since): everyone, contacts (public.presence_can_see) or nobody.';
COMMENT ON COLUMN public.presence_privacy.last_seen_visibility IS
    'Who may see the user''s last seen: everyone, contacts or nobody; never more than presence_visibility allows.';

-- The users whose settings can hide something from someone. The reads ask once per
-- query whether there is any (while there is none, nobody's presence is hidden and
-- the per-user rule is skipped), and presence_counts() looks up only these.
CREATE INDEX IF NOT EXISTS presence_privacy_restricted_idx
    ON public.presence_privacy (user_id)
    WHERE invisible OR presence_visibility <> 'everyone' OR last_seen_visibility <> 'everyone';

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
       p.presence_visibility, p.last_seen_visibility
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
RETURNS TABLE (presence boolean, last_seen boolean, invisible boolean, shown_last_seen timestamptz)
LANGUAGE sql
STABLE
AS $$
    SELECT
        r.truth OR (NOT r.invisible AND r.presence),
        r.truth OR (NOT r.invisible AND r.presence AND r.last_seen),
        r.truth AND r.invisible,
        CASE WHEN NOT r.truth AND r.invisible AND r.presence AND r.last_seen
             THEN r.frozen_last_seen END
    FROM (
        SELECT
            coalesce(viewer OPERATOR(pg_catalog.=) target, false)
                OR (SELECT presence_private.viewer_sees_all()) AS truth,
            coalesce(s.invisible, false) AS invisible,
            s.frozen_last_seen,
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

-- The one writer of invisible mode. Turning it on freezes what others see as last
-- seen: now if the user is online (they were seen until now), else their last seen.
-- Turning it on again keeps the first moment. Returns how many users changed.
CREATE OR REPLACE FUNCTION presence_private.set_invisible(user_ids uuid[], turn_on boolean)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    changed integer;
BEGIN
    IF turn_on THEN
        -- Owner rights: user_presence_now shows the truth here.
        INSERT INTO public.presence_privacy AS p
            (user_id, invisible, invisible_since, frozen_last_seen, updated_at)
        SELECT n.user_id, true, now(),
               CASE WHEN n.online THEN now() ELSE n.last_seen END, now()
        FROM presence_private.user_presence_now AS n
        WHERE n.user_id = ANY (user_ids)
        ORDER BY n.user_id
        ON CONFLICT ON CONSTRAINT presence_privacy_pkey DO UPDATE
        SET invisible = true,
            invisible_since = excluded.invisible_since,
            frozen_last_seen = excluded.frozen_last_seen,
            updated_at = excluded.updated_at
        WHERE NOT p.invisible;
    ELSE
        UPDATE public.presence_privacy AS p
        SET invisible = false, invisible_since = NULL, frozen_last_seen = NULL, updated_at = now()
        WHERE p.user_id = ANY (user_ids) AND p.invisible;
    END IF;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION presence_private.set_invisible(uuid[], boolean) IS
    'Turns invisible mode on or off for the given users (on: freezes the last seen others see); returns how many changed.';

-- Who a settings RPC acts for: the signed-in user, or (service_role only) user_id.
CREATE OR REPLACE FUNCTION presence_private.settings_owner(user_id uuid, fn text)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    uid uuid := auth.uid();
BEGIN
    IF user_id IS NOT NULL AND user_id IS DISTINCT FROM uid THEN
        IF coalesce(auth.role(), '') = 'service_role' THEN
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

REVOKE ALL ON FUNCTION
    presence_private.exact_count_max_rows(), presence_private.lists_every_user(),
    presence_private.viewer_sees_all(), presence_private.contact_check(uuid, uuid),
    presence_private.visible_to(uuid, uuid), presence_private.set_invisible(uuid[], boolean),
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

-- Every user's presence as the caller may see it (presence_private.visible_to), without
-- the RLS of public.users: for callers whose policies list every user (the reads
-- check presence_private.lists_every_user() first). Reads the stored columns with
-- owner rights; presence_private is never exposed through the API.
--
-- The rule is asked per user only while some user restricts what others see
-- (me.restricting: a settings row that is invisible or not 'everyone', found through
-- presence_privacy_restricted_idx once per query). Until then visible_to would answer
-- "everything" for every user, and asking it costs a probe of presence_privacy per
-- user: a scan of an empty table is a system call per row, about 40 % of a 1,000-id
-- lookup (docs/performance.md).
CREATE OR REPLACE VIEW presence_private.user_presence_all_rows
WITH (security_invoker = true)
AS
SELECT
    u.id AS user_id,
    u.status AS stored_status,
    (NOT me.restricting OR coalesce(v.presence, false)) AND d.online AS online,
    CASE WHEN (NOT me.restricting OR coalesce(v.presence, false)) AND d.online
         THEN d.status ELSE 'offline' END AS status,
    CASE WHEN NOT me.restricting OR coalesce(v.last_seen, false) THEN d.last_seen
         ELSE v.shown_last_seen END AS last_seen,
    CASE WHEN (NOT me.restricting OR coalesce(v.presence, false)) AND d.online
         THEN d.online_since END AS online_since
-- The flag and the caller, once per query (OFFSET 0: not re-evaluated per row). The
-- caller only when the rule runs: caller_id() parses the JWT claims, which nothing
-- else in the read needs. caller_id() resolves auth.uid() at call time, so this view
-- installs before the auth schema exists.
FROM (
    SELECT f.restricting,
           CASE WHEN f.restricting THEN presence_private.caller_id() END AS viewer
    FROM (
        SELECT EXISTS (SELECT FROM presence_private.privacy_settings AS s
                       WHERE s.invisible OR s.presence_visibility <> 'everyone'
                          OR s.last_seen_visibility <> 'everyone') AS restricting
        OFFSET 0
    ) AS f
    OFFSET 0
) AS me
CROSS JOIN presence_private.stored_presence AS u
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
) AS d
LEFT JOIN LATERAL (
    -- OFFSET 0: not pulled up, so the flag gates the whole lookup (a one-time filter)
    -- instead of filtering its result; a NULL answer hides (coalesce above).
    SELECT r.presence, r.last_seen, r.shown_last_seen
    FROM presence_private.visible_to(me.viewer, u.id) AS r
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

-- Per user with sessions: the status of their live sessions (online > busy > away, the
-- rule of presence_private.session_presence), NULL when none is live. One aggregate
-- where session_presence computes six: presence_counts() needs only this. Owner rights,
-- like session_presence (presence_sessions shows a user only their own rows).
CREATE OR REPLACE VIEW presence_private.live_session_status
AS
SELECT
    s.user_id,
    CASE max(CASE WHEN s.last_beat > now() - make_interval(secs => c.timeout_seconds)
                  THEN CASE s.status WHEN 'online' THEN 3 WHEN 'busy' THEN 2 ELSE 1 END
             END)
        WHEN 3 THEN 'online' WHEN 2 THEN 'busy' WHEN 1 THEN 'away'
    END AS status
FROM public.presence_sessions AS s
CROSS JOIN public.presence_config AS c
GROUP BY s.user_id;

COMMENT ON VIEW presence_private.live_session_status IS
    'Per user with sessions: the aggregate status of their live sessions (online > busy > away), NULL when none is live.';

REVOKE ALL ON TABLE presence_private.live_session_status
FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON TABLE presence_private.live_session_status TO authenticated, service_role;

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
    viewer uuid := auth.uid();
    live_after timestamptz := presence_private.live_after();
    every_user boolean := presence_private.lists_every_user();
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

    -- The aggregation rule of presence_private.user_presence_now, as one hash join of
    -- the users whose stored status is not offline (partial index
    -- users_presence_active_idx) with the live status of every user with sessions.
    IF every_user AND NOT hiding THEN
        -- Nothing to check per user: the caller lists every user and nobody is hidden.
        SELECT count(*) FILTER (WHERE l.status = 'online'),
               count(*) FILTER (WHERE l.status = 'away'),
               count(*) FILTER (WHERE l.status = 'busy'),
               count(*)
        INTO n_online, n_away, n_busy, n_present
        FROM (
            SELECT CASE WHEN a.user_id IS NULL THEN u.status ELSE a.status END AS status
            FROM presence_private.stored_presence AS u
            LEFT JOIN presence_private.live_session_status AS a ON a.user_id = u.id
            WHERE u.status <> 'offline'
              AND CASE WHEN a.user_id IS NULL THEN u.last_heartbeat > live_after
                       ELSE a.status IS NOT NULL END
        ) AS l;
    ELSE
        -- Per user: the RLS of public.users as the caller (unless it lists every user),
        -- and presence_private.visible_to for the users whose settings can hide them.
        SELECT count(*) FILTER (WHERE l.status = 'online'),
               count(*) FILTER (WHERE l.status = 'away'),
               count(*) FILTER (WHERE l.status = 'busy'),
               count(*)
        INTO n_online, n_away, n_busy, n_present
        FROM (
            SELECT u.id, CASE WHEN a.user_id IS NULL THEN u.status ELSE a.status END AS status
            FROM presence_private.stored_presence AS u
            LEFT JOIN presence_private.live_session_status AS a ON a.user_id = u.id
            WHERE u.status <> 'offline'
              AND CASE WHEN a.user_id IS NULL THEN u.last_heartbeat > live_after
                       ELSE a.status IS NOT NULL END
        ) AS l
        WHERE (every_user OR EXISTS (SELECT FROM public.users AS r WHERE r.id = l.id))
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

-- presence_is_online as plpgsql (its plan cached for the session) over the same view.
CREATE OR REPLACE FUNCTION public.presence_is_online(user_id uuid)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
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
    -- Both branches apply presence_private.visible_to (through the views).
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
