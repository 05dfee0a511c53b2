-- Example: "contacts" are friends. Replaces presence_sdk's privacy hook
-- public.presence_can_see(viewer, target) with a lookup in a friendships table.
--
-- Run it once, as the database owner (Supabase: SQL editor), after the presence
-- migrations. Re-running it is harmless. Users whose presence or last seen is set to
-- 'contacts' (presence_set_visibility) are then seen by their friends only.
--
-- The hook is called by presence_private.contact_check with the owner's rights, once
-- per user read whose setting is 'contacts'. Keep it a fast, indexed lookup. If it
-- raises or returns NULL, the presence is hidden and the server log says why (LOG).

CREATE TABLE IF NOT EXISTS public.friendships (
    user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    friend_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, friend_id),
    CONSTRAINT friendships_not_self CHECK (user_id <> friend_id)
);

COMMENT ON TABLE public.friendships IS
    'Who is a friend of whom (one row per direction). Read by public.presence_can_see.';

-- The app decides who may add friendships; here each user manages their own list.
ALTER TABLE public.friendships ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS friendships_own ON public.friendships;
CREATE POLICY friendships_own ON public.friendships
    FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid()))
    WITH CHECK (user_id = (SELECT auth.uid()));
REVOKE ALL ON TABLE public.friendships FROM PUBLIC, anon;
GRANT SELECT, INSERT, DELETE ON TABLE public.friendships TO authenticated;

-- viewer sees what target shows to contacts when target listed viewer as a friend.
-- SECURITY DEFINER: it reads every friendship, whatever the RLS above shows the
-- viewer. STABLE, empty search_path, fully qualified names.
CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.friendships AS f
        WHERE f.user_id = target AND f.friend_id = viewer
    );
$$;

COMMENT ON FUNCTION public.presence_can_see(uuid, uuid) IS
    'App hook for presence privacy: viewer is a contact of target when target listed viewer in public.friendships.';

-- Nobody calls the hook directly: it would tell anyone who is whose friend.
REVOKE ALL ON FUNCTION public.presence_can_see(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
