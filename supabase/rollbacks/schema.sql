-- Rollback of supabase/schema.sql. Destroys the users table and its data: run the
-- migration rollbacks (newest first) before this one.
--
-- A rollback removes what its migration added, so dropping is its purpose.
-- squawk-ignore-file ban-drop-function, ban-drop-table
SET lock_timeout = '5s';
SET statement_timeout = '60s';

DROP TRIGGER IF EXISTS on_auth_user_created_presence ON auth.users;
DROP FUNCTION IF EXISTS public.handle_new_auth_user();
DROP TABLE IF EXISTS public.users;
