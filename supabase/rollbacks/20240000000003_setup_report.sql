-- Rollback of 20240000000003_setup_report. Idempotent.
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DROP FUNCTION IF EXISTS public.presence_setup_report();
