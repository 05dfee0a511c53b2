-- Rollback of 20240000000006_events. Idempotent. Run the rollbacks of later migrations
-- first.
--
-- Drops the event log with its triggers, RPCs and helpers, and the retention setting,
-- and puts back the setup report it replaced (schema_version 3, saved by the migration
-- in presence_private.replaced_definitions).
-- The events themselves are lost: export public.presence_events first if you need them.
-- Presence itself (public.users, public.presence_sessions) is untouched, and the sweep
-- keeps working (it calls the pruning only while it exists).
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function, ban-drop-table, ban-drop-column
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DROP TRIGGER IF EXISTS presence_events_user_update ON public.users;
DO $$
BEGIN
    IF to_regclass('public.presence_sessions') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS presence_events_session_insert ON public.presence_sessions;
        DROP TRIGGER IF EXISTS presence_events_session_delete ON public.presence_sessions;
        DROP TRIGGER IF EXISTS presence_events_session_update ON public.presence_sessions;
    END IF;
END;
$$;

DROP FUNCTION IF EXISTS public.presence_configure_events(integer);
DROP FUNCTION IF EXISTS public.presence_prune_events(integer);
DROP FUNCTION IF EXISTS public.presence_online_per_day(uuid, date, date, text);
DROP FUNCTION IF EXISTS public.presence_session_history(uuid, timestamptz, timestamptz, integer);
DROP FUNCTION IF EXISTS public.presence_events_since(bigint, integer);

DO $$
BEGIN
    IF to_regnamespace('presence_private') IS NOT NULL THEN
        DROP FUNCTION IF EXISTS presence_private.check_history_range(timestamptz, timestamptz);
        DROP FUNCTION IF EXISTS presence_private.events_horizon(bigint, integer);
        DROP FUNCTION IF EXISTS presence_private.log_user_changed();
        DROP FUNCTION IF EXISTS presence_private.log_session_changed();
        DROP FUNCTION IF EXISTS presence_private.log_sessions_ended();
        DROP FUNCTION IF EXISTS presence_private.log_sessions_started();
        DROP FUNCTION IF EXISTS presence_private.timeout();
        DROP FUNCTION IF EXISTS presence_private.events_begin();
        DROP FUNCTION IF EXISTS presence_private.events_lock_key();
    END IF;
END;
$$;

-- The policy calls can_see_events: the table (and its policy) goes first.
DROP TABLE IF EXISTS public.presence_events;

DO $$
BEGIN
    IF to_regnamespace('presence_private') IS NOT NULL THEN
        DROP FUNCTION IF EXISTS presence_private.can_see_event(uuid, uuid, text);
        DROP FUNCTION IF EXISTS presence_private.can_see_events(uuid, uuid);
        DROP FUNCTION IF EXISTS presence_private.event_audience(uuid, timestamptz);
    END IF;
END;
$$;

ALTER TABLE public.presence_config DROP COLUMN IF EXISTS events_retention_days;

DO $$
DECLARE
    saved record;
BEGIN
    IF to_regclass('presence_private.replaced_definitions') IS NULL THEN
        RETURN;
    END IF;
    FOR saved IN
        SELECT d.ddl, d.comment_ddl
        FROM presence_private.replaced_definitions AS d
        WHERE d.object = 'public.presence_setup_report()'
    LOOP
        EXECUTE saved.ddl;
        IF saved.comment_ddl IS NOT NULL THEN
            EXECUTE saved.comment_ddl;
        END IF;
    END LOOP;
    DELETE FROM presence_private.replaced_definitions AS d
    WHERE d.object = 'public.presence_setup_report()';
END;
$$;
