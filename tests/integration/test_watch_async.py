"""AsyncPresenceWatcher / AsyncPresenceClient.watch(): the asyncio twins of test_watch.

Transitions are made on another thread while the event loop iterates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from e2e_support import async_client, routed
from watch_support import EVENTS_PER_CYCLE, all_ids, cycle, producing, terminate_others

from presence_sdk import (
    AsyncPresenceClient,
    AsyncPresenceWatcher,
    PermissionDeniedError,
    PresenceEvent,
)
from presence_sdk.testing import PresenceDatabase

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

FAST = 0.05


async def take(watcher: AsyncPresenceWatcher, n: int) -> list[PresenceEvent]:
    got: list[PresenceEvent] = []

    async def collect() -> None:
        async for event in watcher:
            got.append(event)
            if len(got) == n:
                return

    await asyncio.wait_for(collect(), 30)
    return got


async def test_listen_delivers_every_event_in_order(presence_db: PresenceDatabase) -> None:
    users = [presence_db.create_user() for _ in range(2)]
    async with AsyncPresenceWatcher(dsn=presence_db.dsn, poll_interval=5) as watcher:
        with producing(presence_db, users, 3, gap=0.02):
            got = await take(watcher, 2 * 3 * EVENTS_PER_CYCLE)
    assert [e.id for e in got] == all_ids(presence_db)
    assert watcher.last_id == got[-1].id


async def test_polling_through_the_async_client_survives_a_terminated_connection(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    with routed(presence_db) as (emulator, _):
        supabase = async_client(emulator, emulator.service_role_key)
        client = AsyncPresenceClient(supabase)
        async with client.watch(poll_interval=FAST, page_size=3) as watcher:
            for _ in range(2):
                cycle(presence_db, user)
            got = await take(watcher, 5)
            assert terminate_others(presence_db) >= 1
            for _ in range(2):
                cycle(presence_db, user)
            got += await take(watcher, 4 * EVENTS_PER_CYCLE - 5)
        await supabase.postgrest.session.aclose()
    assert [e.id for e in got] == all_ids(presence_db)


async def test_listen_survives_a_terminated_connection_and_resumes_after_a_restart(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    for _ in range(2):
        cycle(presence_db, user)
    async with AsyncPresenceWatcher(dsn=presence_db.dsn, poll_interval=FAST) as watcher:
        got = await take(watcher, 3)
        terminate_others(presence_db)
        cycle(presence_db, user)
        got += await take(watcher, 3 * EVENTS_PER_CYCLE - 3 - 2)
        saved = watcher.last_id
    cycle(presence_db, user)
    async with AsyncPresenceWatcher(dsn=presence_db.dsn, after_id=saved) as again:
        got += await take(again, 2 + EVENTS_PER_CYCLE)
    assert [e.id for e in got] == all_ids(presence_db)


async def test_a_dsn_without_rights_fails_at_the_first_read(presence_db: PresenceDatabase) -> None:
    presence_db.query(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nobody_here') "
        "THEN CREATE ROLE nobody_here LOGIN; END IF; END $$"
    )
    dsn = presence_db.dsn.replace("user=postgres", "user=nobody_here")
    async with AsyncPresenceWatcher(dsn=dsn) as watcher:
        iterator: AsyncIterator[PresenceEvent] = aiter(watcher)
        with pytest.raises(PermissionDeniedError):
            await anext(iterator)
