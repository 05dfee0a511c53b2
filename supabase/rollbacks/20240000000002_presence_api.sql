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
-- The read policy and SELECT grant on public.presence_config belong to
-- 20240000000001_add_heartbeat (its rollback drops the table).
