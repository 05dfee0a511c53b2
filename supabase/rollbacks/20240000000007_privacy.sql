-- Rollback of 20240000000007_privacy. Idempotent. Run the rollbacks of later
-- migrations first.
--
-- 1. Gives the API roles back the SELECT on public.users that the migration narrowed
--    (as recorded in presence_private.privacy_narrowed_select): the presence columns
--    are readable by every signed-in user again.
-- 2. Restores the definitions the migration replaced (presence_private.user_presence_now,
--    public.presence_counts, presence_is_online, presence_get, presence_list_online,
--    presence_private.can_see_events, the event log's per-event seams
--    presence_private.can_see_event and presence_private.event_audience, and the setup
--    report of schema_version 4), as saved in presence_private.privacy_replaced_definitions; those the migration created (no
--    event log yet) are dropped. Events logged with a privacy snapshot (audience
--    contacts or nobody) stay hidden from others under the event log's default rule.
-- 3. Drops what the migration added. Privacy settings are lost. The app's hook
--    public.presence_can_see is dropped only while it is still the default.
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function, ban-drop-table, ban-drop-view
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DO $$
DECLARE
    narrowed record;
    saved record;
BEGIN
    IF to_regclass('presence_private.privacy_narrowed_select') IS NOT NULL THEN
        FOR narrowed IN
            SELECT n.grantee, n.column_name
            FROM presence_private.privacy_narrowed_select AS n
            ORDER BY n.grantee, n.column_name
        LOOP
            IF narrowed.column_name = '*' THEN
                -- The REVOKE also removes the column grants that replaced it.
                EXECUTE format('REVOKE SELECT ON TABLE public.users FROM %s', narrowed.grantee);
                EXECUTE format('GRANT SELECT ON TABLE public.users TO %s', narrowed.grantee);
            ELSIF EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = 'public.users'::regclass AND a.attname = narrowed.column_name
                  AND NOT a.attisdropped
            ) THEN
                EXECUTE format('GRANT SELECT (%I) ON TABLE public.users TO %s',
                    narrowed.column_name, narrowed.grantee);
            END IF;
        END LOOP;
    END IF;

    IF to_regclass('presence_private.privacy_replaced_definitions') IS NOT NULL THEN
        FOR saved IN
            SELECT d.object, d.ddl, d.comment_ddl
            FROM presence_private.privacy_replaced_definitions AS d
            ORDER BY d.position
        LOOP
            EXECUTE saved.ddl;
            IF saved.comment_ddl IS NOT NULL THEN
                EXECUTE saved.comment_ddl;
            END IF;
        END LOOP;
        IF NOT EXISTS (
            SELECT 1 FROM presence_private.privacy_replaced_definitions AS d
            WHERE d.object = 'presence_private.can_see_events(uuid,uuid)'
        ) AND to_regclass('public.presence_events') IS NULL THEN
            -- Created here (no event log yet). With the log, its policy needs the
            -- function: the check below refuses instead.
            DROP FUNCTION IF EXISTS presence_private.can_see_events(uuid, uuid);
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM presence_private.privacy_replaced_definitions AS d
            WHERE d.object = 'presence_private.can_see_event(uuid,uuid,text)'
        ) AND to_regclass('public.presence_events') IS NULL THEN
            DROP FUNCTION IF EXISTS presence_private.can_see_event(uuid, uuid, text);
            DROP FUNCTION IF EXISTS presence_private.event_audience(uuid, timestamptz);
        END IF;
    END IF;

    -- Never leave the reads pointing at dropped objects.
    IF strpos(coalesce(pg_catalog.pg_get_viewdef(to_regclass('presence_private.user_presence_now')), ''),
              'visible_to') > 0
       OR EXISTS (
           SELECT 1 FROM pg_catalog.pg_proc AS p
           WHERE p.oid IN (to_regprocedure('public.presence_counts()'),
                           to_regprocedure('public.presence_is_online(uuid)'),
                           to_regprocedure('public.presence_get(uuid[])'),
                           to_regprocedure('public.presence_list_online(integer, uuid)'),
                           to_regprocedure('presence_private.can_see_events(uuid, uuid)'))
             AND strpos(p.prosrc, 'visible_to') > 0
       )
       OR strpos(coalesce((SELECT p.prosrc FROM pg_catalog.pg_proc AS p
                           WHERE p.oid = to_regprocedure('public.presence_setup_report()')), ''),
                 'presence_privacy') > 0
       OR EXISTS (
           SELECT 1 FROM pg_catalog.pg_proc AS p
           WHERE p.oid IN (to_regprocedure('presence_private.can_see_event(uuid, uuid, text)'),
                           to_regprocedure('presence_private.event_audience(uuid, timestamptz)'))
             AND (strpos(p.prosrc, 'contact_check') > 0 OR strpos(p.prosrc, 'presence_privacy') > 0)
       ) THEN
        RAISE EXCEPTION 'presence: cannot roll back 20240000000007_privacy: the saved definitions are missing'
            USING HINT = 'Re-apply migration 20240000000005_sessions (and every later one) first, then run this rollback again.';
    END IF;

    IF to_regprocedure('public.presence_can_see(uuid, uuid)') IS NOT NULL THEN
        IF (SELECT btrim(p.prosrc) FROM pg_catalog.pg_proc AS p
            WHERE p.oid = to_regprocedure('public.presence_can_see(uuid, uuid)')) = 'SELECT true' THEN
            DROP FUNCTION public.presence_can_see(uuid, uuid);
        ELSE
            RAISE NOTICE 'presence: kept public.presence_can_see(uuid, uuid): it is the app''s own rule (drop it yourself if it is no longer needed)';
        END IF;
    END IF;
END;
$$;

-- No read uses it any more (the saved definitions are back).
DROP VIEW IF EXISTS presence_private.user_presence_all_rows;
DROP VIEW IF EXISTS presence_private.stored_presence_now;
DROP VIEW IF EXISTS presence_private.live_session_rank;
-- The name an earlier draft of the migration gave live_session_rank.
DROP VIEW IF EXISTS presence_private.live_session_status;

DROP FUNCTION IF EXISTS public.presence_set_invisible_for(uuid[], boolean);
DROP FUNCTION IF EXISTS public.presence_my_privacy();
DROP FUNCTION IF EXISTS public.presence_set_visibility(text, text, uuid);
DROP FUNCTION IF EXISTS public.presence_set_invisible(boolean, uuid);

DROP FUNCTION IF EXISTS presence_private.privacy_of(uuid);
DROP FUNCTION IF EXISTS presence_private.settings_owner(uuid, text);
DROP FUNCTION IF EXISTS presence_private.caller_role();
DROP TRIGGER IF EXISTS presence_privacy_forget_hidden_period ON public.users;
DROP FUNCTION IF EXISTS presence_private.forget_hidden_period();
DROP FUNCTION IF EXISTS presence_private.set_invisible(uuid[], boolean);
DROP FUNCTION IF EXISTS presence_private.log_mask_edges(uuid[], boolean);
DROP FUNCTION IF EXISTS presence_private.visible_to(uuid, uuid);
DROP FUNCTION IF EXISTS presence_private.anyone_restricting();
DROP FUNCTION IF EXISTS presence_private.user_restricting(uuid);
DROP VIEW IF EXISTS presence_private.privacy_settings;
DROP VIEW IF EXISTS presence_private.stored_presence;
DROP FUNCTION IF EXISTS presence_private.contact_check(uuid, uuid);
DROP FUNCTION IF EXISTS presence_private.viewer_sees_all();
DROP FUNCTION IF EXISTS presence_private.lists_every_user();
DROP FUNCTION IF EXISTS presence_private.exact_count_max_rows();

DROP TABLE IF EXISTS public.presence_privacy;
DROP TABLE IF EXISTS presence_private.privacy_replaced_definitions;
DROP TABLE IF EXISTS presence_private.privacy_narrowed_select;
