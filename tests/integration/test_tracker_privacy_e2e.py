"""Invisible mode through the trackers end to end: PresenceTracker / AsyncPresenceTracker
→ supabase-py → real HTTP (LocalPostgREST) → the privacy SQL. A server hides the users
it speaks for; other users' clients see them offline at once, the service role sees the
truth, and the sessions stay alive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from e2e_support import create_users, poll

from presence_sdk import (
    AsyncPresenceTracker,
    PresenceClient,
    PresenceConfig,
    PresenceTracker,
    RejectedError,
    TrackerConfig,
)
from presence_sdk.testing import LocalPostgREST, PresenceDatabase

pytestmark = pytest.mark.integration

QUICK = PresenceConfig(interval=0.3, jitter=0.0, request_timeout=5.0, stop_timeout=5.0)
TRACKER = TrackerConfig(interval=1.0, jitter=0.0, request_timeout=5.0, stop_timeout=5.0)


@pytest.fixture
def api(presence_db: PresenceDatabase) -> Iterator[LocalPostgREST]:
    with LocalPostgREST(presence_db.emulator()) as server:
        yield server


def reader(api: LocalPostgREST, user: str) -> PresenceClient:
    return PresenceClient.from_url(
        api.url, api.emulator.anon_key, access_token=api.emulator.user_token(user), config=QUICK
    )


def live_sessions(db: PresenceDatabase, users: list[str]) -> int:
    (row,) = db.query(
        "SELECT count(*) AS n FROM public.presence_sessions WHERE user_id = ANY(%s::uuid[])",
        (users,),
    )
    return int(row["n"])


def test_tracker_hides_its_users_from_others_and_shows_them_again(
    presence_db: PresenceDatabase, api: LocalPostgREST
) -> None:
    users = create_users(presence_db, 3)
    stranger = presence_db.create_user()
    with PresenceTracker.from_url(
        api.url, api.emulator.service_role_key, config=TRACKER
    ) as tracker:
        for user in users:
            tracker.track(user, device="ws")
        poll(lambda: live_sessions(presence_db, users) == 3)
        with reader(api, stranger) as other:
            assert [other.is_online(u) for u in users] == [True, True, True]
            assert tracker.set_invisible(users[:2]) == 2
            assert [other.is_online(u) for u in users] == [False, False, True]
            assert other.counts().online == 2  # the third user, and the reader (its client beats)
            assert tracker.set_invisible(users[:2]) == 0  # already invisible
            # The sessions stay alive, and each user sees the truth about themselves.
            assert live_sessions(presence_db, users) == 3
            with reader(api, users[0]) as me:
                assert me.get(users[0]).online is True
                assert me.privacy().invisible is True
            # Nothing changes for ids without a row: all or nothing.
            with pytest.raises(RejectedError) as refused:
                tracker.set_invisible([users[2], str(uuid.uuid4())])
            assert refused.value.code == "23503"
            assert other.is_online(users[2]) is True
            assert tracker.set_invisible(users, invisible=False) == 2
            assert [other.is_online(u) for u in users] == [True, True, True]


def test_async_tracker_set_invisible(presence_db: PresenceDatabase, api: LocalPostgREST) -> None:
    users = create_users(presence_db, 2, online=True)
    stranger = presence_db.create_user()

    async def main() -> None:
        async with AsyncPresenceTracker.from_url(
            api.url, api.emulator.service_role_key, config=TRACKER
        ) as tracker:
            assert await tracker.set_invisible([users[0]]) == 1

    asyncio.run(main())
    with reader(api, stranger) as other:
        assert [other.is_online(u) for u in users] == [False, True]
