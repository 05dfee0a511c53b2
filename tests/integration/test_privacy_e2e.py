"""Presence privacy end to end: supabase-py (sync and async) → PostgREST emulation → the
real SQL. A user's settings change what another client reads, at once; the service-role
query a server-side tracker uses turns invisible mode on for many users."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from e2e_support import async_client, create_users, routed, sync_client
from privacy_support import install_friendships

from presence_sdk import AsyncPresenceClient, PresenceClient
from presence_sdk import _privacy as privacy
from presence_sdk._exceptions import InvalidInputError, PermissionDeniedError
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration


def test_sync_client_settings_apply_to_other_readers(presence_db: PresenceDatabase) -> None:
    me, friend, stranger = create_users(presence_db, 3, online=True)
    install_friendships(presence_db, (me, friend))
    with routed(presence_db) as (emulator, _):
        mine = PresenceClient(sync_client(emulator, emulator.user_token(me)))
        theirs = PresenceClient(sync_client(emulator, emulator.user_token(friend)))
        other = PresenceClient(sync_client(emulator, emulator.user_token(stranger)))
        mine.beat()
        assert mine.privacy().presence == "everyone"

        settings = mine.set_visibility(presence="contacts", last_seen="nobody")
        assert (settings.user_id, settings.presence, settings.last_seen) == (
            uuid.UUID(me), "contacts", "nobody",
        )  # fmt: skip
        assert theirs.is_online(me) is True
        assert theirs.get(me).last_seen is None
        assert other.is_online(me) is False
        assert other.counts().online == 2  # the friend and the stranger themselves

        invisible = mine.set_invisible()
        assert invisible.invisible is True
        assert invisible.invisible_since is not None
        assert theirs.is_online(me) is False
        assert mine.get(me).online is True  # I see the truth
        assert mine.privacy().invisible is True
        assert mine.set_invisible(False).invisible is False
        assert theirs.is_online(me) is True

        with pytest.raises(InvalidInputError):
            mine.set_visibility(presence="friends")  # type: ignore[arg-type]
        counts = other.counts()
        assert counts.offline_estimated is False
        assert counts.total == 3


def test_async_client_settings(presence_db: PresenceDatabase) -> None:
    me, stranger = create_users(presence_db, 2, online=True)

    async def main() -> None:
        with routed(presence_db) as (emulator, _):
            mine = AsyncPresenceClient(async_client(emulator, emulator.user_token(me)))
            other = AsyncPresenceClient(async_client(emulator, emulator.user_token(stranger)))
            await mine.beat()
            assert (await other.get(me)).online is True
            assert (await mine.set_invisible()).invisible is True
            assert (await other.get(me)).online is False
            settings = await mine.set_visibility(last_seen="nobody")
            assert (settings.invisible, settings.last_seen) == (True, "nobody")
            assert (await other.get(me)).last_seen is None
            assert (await mine.privacy()).last_seen == "nobody"
            await mine.set_invisible(False)
            assert (await other.is_online(me)) is True

    asyncio.run(main())


def test_the_trackers_invisible_query_is_for_the_service_role(
    presence_db: PresenceDatabase,
) -> None:
    users = create_users(presence_db, 3, online=True)
    reader = presence_db.create_user()
    with routed(presence_db) as (emulator, _):
        server = PresenceClient(sync_client(emulator, emulator.service_role_key))
        assert server._query(privacy.set_invisible_for(users, True)) == 3
        watcher = PresenceClient(sync_client(emulator, emulator.user_token(reader)))
        assert [watcher.is_online(u) for u in users] == [False, False, False]
        assert server.counts().online == 3  # the service role sees the truth
        assert server._query(privacy.set_invisible_for(users[:1], False)) == 1
        assert watcher.is_online(users[0]) is True
        user = PresenceClient(sync_client(emulator, emulator.user_token(reader)))
        with pytest.raises(PermissionDeniedError):
            user._query(privacy.set_invisible_for(users, True))
