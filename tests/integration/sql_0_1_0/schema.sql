-- presence_sdk base schema: the `public.users` table the presence migrations build on.
--
-- Run once on a fresh project, before the files in supabase/migrations/ (in name
-- order). Idempotent: running it again changes nothing. Projects that already have a
-- `public.users` table with `id uuid` and `status text` can skip it: the migrations
-- work on such a table too.
--
-- Assumes the Supabase environment: schema `auth` with `auth.users` and `auth.uid()`,
-- roles `anon`, `authenticated` and `service_role`.
--
-- Rollback (destroys profile data, so it is a manual step):
--   DROP TRIGGER IF EXISTS on_auth_user_created_presence ON auth.users;
--   DROP FUNCTION IF EXISTS public.handle_new_auth_user();
--   DROP TABLE IF EXISTS public.users;
-- (also in supabase/rollbacks/schema.sql)

SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE TABLE IF NOT EXISTS public.users (
    id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'offline'
        CONSTRAINT users_status_check
        CHECK (status IN ('online', 'away', 'busy', 'offline')),
    display_name text
        CONSTRAINT users_display_name_check
        CHECK (char_length(display_name) BETWEEN 1 AND 100),
    avatar_url text
        CONSTRAINT users_avatar_url_check
        CHECK (char_length(avatar_url) <= 2048 AND avatar_url ~ '^https?://'),
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.users IS
    'Application users (one row per auth.users row) with their presence status.';
COMMENT ON COLUMN public.users.status IS
    'Presence status as last reported: online, away, busy or offline.';

ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;

-- Signed-in users may see each other (that is what presence is for); anonymous
-- visitors see nothing.
DROP POLICY IF EXISTS users_select_authenticated ON public.users;
CREATE POLICY users_select_authenticated ON public.users
    FOR SELECT TO authenticated
    USING (true);

-- Users may edit their own profile columns only. Presence columns are written by the
-- SECURITY DEFINER functions of the migrations, never directly by clients, so that
-- the server clock is the only clock.
DROP POLICY IF EXISTS users_update_own ON public.users;
CREATE POLICY users_update_own ON public.users
    FOR UPDATE TO authenticated
    USING (id = (SELECT auth.uid()))
    WITH CHECK (id = (SELECT auth.uid()));

REVOKE ALL ON TABLE public.users FROM anon, authenticated;
GRANT SELECT ON TABLE public.users TO authenticated;
GRANT UPDATE (display_name, avatar_url) ON TABLE public.users TO authenticated;
GRANT ALL ON TABLE public.users TO service_role;

-- Every new auth user gets a profile row, so a heartbeat always has a row to update.
CREATE OR REPLACE FUNCTION public.handle_new_auth_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    INSERT INTO public.users (id) VALUES (NEW.id) ON CONFLICT (id) DO NOTHING;
    RETURN NEW;
END;
$$;

REVOKE EXECUTE ON FUNCTION public.handle_new_auth_user() FROM PUBLIC, anon, authenticated;

DROP TRIGGER IF EXISTS on_auth_user_created_presence ON auth.users;
CREATE TRIGGER on_auth_user_created_presence
    AFTER INSERT ON auth.users
    FOR EACH ROW EXECUTE FUNCTION public.handle_new_auth_user();
