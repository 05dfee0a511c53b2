-- Rollback of 20240000000002_presence_api. Idempotent. Run the rollbacks of later
-- migrations first.
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function, ban-drop-view
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DROP FUNCTION IF EXISTS public.presence_configure(integer, integer, integer);
DROP FUNCTION IF EXISTS public.presence_counts();
DROP FUNCTION IF EXISTS public.presence_list_online(integer, uuid);
DROP FUNCTION IF EXISTS public.presence_is_online(uuid);
DROP FUNCTION IF EXISTS public.presence_get(uuid[]);
DROP FUNCTION IF EXISTS public.presence_settings();
DROP FUNCTION IF EXISTS public.presence_leave();
DROP FUNCTION IF EXISTS public.presence_heartbeat(text);
DROP VIEW IF EXISTS public.user_presence;
DO $$
BEGIN
    IF to_regclass('public.presence_config') IS NOT NULL THEN
        DROP POLICY IF EXISTS presence_config_read ON public.presence_config;
        REVOKE SELECT ON TABLE public.presence_config FROM anon, authenticated;
    END IF;
END;
$$;
