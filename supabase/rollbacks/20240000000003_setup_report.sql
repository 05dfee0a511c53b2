-- Rollback of 20240000000003_setup_report. Idempotent.
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DROP FUNCTION IF EXISTS public.presence_setup_report();
