-- Rollback of 20240000000005_sessions. Idempotent. Run the rollbacks of later
-- migrations first.
--
-- 1. Folds every user's sessions back into public.users, so that a 0.1.0 database
--    keeps meaning the same: status = the aggregate of the live sessions (offline if
--    none), last_heartbeat = the latest beat, online_since = the start of the earliest
--    live session. Live users stay online; their 0.1.0 clients keep beating the row.
-- 2. Restores the definitions migration 5 replaced (user_presence, presence_heartbeat,
--    presence_leave, presence_list_online, presence_counts,
--    mark_inactive_users_offline), as saved in presence_private.replaced_definitions.
-- 3. Drops what migration 5 added. Session details (devices, metadata) are lost: the
--    0.1.0 schema has no place for them.
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function, ban-drop-table, ban-drop-view, ban-drop-schema
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DO $$
DECLARE
    saved record;
BEGIN
    IF to_regclass('public.presence_sessions') IS NOT NULL THEN
        UPDATE public.users AS u
        SET status = CASE WHEN a.live > 0 THEN a.status ELSE 'offline' END,
            online_since = CASE WHEN a.live > 0 THEN a.online_since END,
            last_heartbeat = greatest(u.last_heartbeat, a.last_beat)
        FROM (
            SELECT
                s.user_id,
                count(*) FILTER (WHERE s.last_beat > now() - make_interval(secs => c.timeout_seconds)) AS live,
                CASE
                    WHEN bool_or(s.status = 'online'
                                 AND s.last_beat > now() - make_interval(secs => c.timeout_seconds))
                        THEN 'online'
                    WHEN bool_or(s.status = 'busy'
                                 AND s.last_beat > now() - make_interval(secs => c.timeout_seconds))
                        THEN 'busy'
                    ELSE 'away'
                END AS status,
                min(s.started_at) FILTER (WHERE s.last_beat > now() - make_interval(secs => c.timeout_seconds)) AS online_since,
                max(s.last_beat) AS last_beat
            FROM public.presence_sessions AS s
            CROSS JOIN public.presence_config AS c
            GROUP BY s.user_id
        ) AS a
        WHERE u.id = a.user_id;
    END IF;

    IF to_regclass('presence_private.replaced_definitions') IS NOT NULL THEN
        FOR saved IN
            SELECT d.object, d.ddl, d.comment_ddl
            FROM presence_private.replaced_definitions AS d
            ORDER BY d.position
        LOOP
            EXECUTE saved.ddl;
            IF saved.comment_ddl IS NOT NULL THEN
                EXECUTE saved.comment_ddl;
            END IF;
        END LOOP;
    END IF;

    -- Never leave 0.1.0 functions pointing at dropped objects.
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname IN ('presence_heartbeat', 'presence_leave', 'presence_list_online',
                            'presence_counts', 'mark_inactive_users_offline')
          AND strpos(p.prosrc, 'presence_private') > 0
    ) OR strpos(coalesce(pg_catalog.pg_get_viewdef(to_regclass('public.user_presence')), ''),
                'presence_private') > 0 THEN
        RAISE EXCEPTION 'presence: cannot roll back 20240000000005_sessions: the saved 0.1.0 definitions are missing'
            USING HINT = 'Re-apply migrations 20240000000001 to 20240000000003 first (they restore the 0.1.0 functions), then run this rollback again.';
    END IF;
END;
$$;

DROP FUNCTION IF EXISTS public.presence_track_end(uuid[]);
DROP FUNCTION IF EXISTS public.presence_track_beat(jsonb);
DROP FUNCTION IF EXISTS public.presence_my_sessions();
DROP FUNCTION IF EXISTS public.presence_session_leave(uuid);
DROP FUNCTION IF EXISTS public.presence_session_beat(uuid, text, text, jsonb);

DROP VIEW IF EXISTS presence_private.user_presence_now;
DROP VIEW IF EXISTS presence_private.session_presence;
DROP FUNCTION IF EXISTS presence_private.leave(uuid, uuid, boolean);
DROP FUNCTION IF EXISTS presence_private.beat(uuid, uuid, text, text, jsonb);
DROP FUNCTION IF EXISTS presence_private.evict_over_cap(uuid[]);
DROP FUNCTION IF EXISTS presence_private.adopt_legacy(uuid[]);
DROP FUNCTION IF EXISTS presence_private.sync_users(uuid[], timestamptz[]);
DROP FUNCTION IF EXISTS presence_private.live_after();
DROP FUNCTION IF EXISTS presence_private.echo(text);
DROP FUNCTION IF EXISTS presence_private.max_batch();
DROP FUNCTION IF EXISTS presence_private.max_sessions_per_user();
DROP TABLE IF EXISTS presence_private.replaced_definitions;
DROP TABLE IF EXISTS public.presence_sessions;
-- After the table: its policy calls it.
DROP FUNCTION IF EXISTS presence_private.caller_id();
-- RESTRICT: fails rather than drop anything someone else put there.
DROP SCHEMA IF EXISTS presence_private RESTRICT;
