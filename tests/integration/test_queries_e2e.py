"""Presence queries end to end: supabase-py → PostgREST emulation → the real SQL.

The SQL derives presence at read time with the caller's rights, so results follow
RLS; keyset pagination must stay stable while heartbeats rewrite the rows.
"""

from __future__ import annotations

import random
import threading
import uuid

import pytest
from e2e_support import async_client, create_users, routed, sync_client

from presence_sdk import AsyncPresenceClient, PresenceClient
from presence_sdk._exceptions import AuthenticationError, InvalidInputError
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration


def test_reads_match_the_database(presence_db: PresenceDatabase) -> None:
    online, away = create_users(presence_db, 2, online=True)
    presence_db.query("UPDATE public.users SET status = 'away' WHERE id = %s", (away,))
    silent = presence_db.create_user(status="busy", last_heartbeat="2000-01-01T00:00:00Z")
    never = presence_db.create_user()
    reader = presence_db.create_user()
    with routed(presence_db) as (emulator, _):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(reader)))
        assert presence.get(online).online is True
        assert presence.get(away).status == "away"
        stale = presence.get(silent)
        assert (stale.status, stale.online) == ("offline", False)  # derived, not stored
        assert stale.last_seen is not None
        assert stale.last_seen.year == 2000
        assert presence.get(never).last_heartbeat is None
        unknown = uuid.uuid4()
        assert presence.get(unknown).online is False
        assert presence.is_online(online) is True
        assert presence.is_online(silent) is False
        assert presence.is_online(unknown) is False
        counts = presence.counts()
        assert (counts.online, counts.away, counts.busy, counts.offline) == (1, 1, 0, 3)
        page = presence.online_users(limit=10)
        assert sorted(str(p.user_id) for p in page) == sorted([online, away])
        assert page.next_after is None


def test_results_respect_rls(presence_db: PresenceDatabase) -> None:
    me, other = create_users(presence_db, 2, online=True)
    # An app whose users may only see themselves.
    presence_db.query("DROP POLICY users_select_authenticated ON public.users")
    presence_db.query(
        "CREATE POLICY users_select_self ON public.users FOR SELECT TO authenticated "
        "USING (id = (SELECT auth.uid()))"
    )
    with routed(presence_db) as (emulator, _):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(me)))
        assert presence.get(me).online is True
        hidden = presence.get(other)
        assert (hidden.online, hidden.last_heartbeat) == (False, None)
        assert presence.is_online(other) is False
        assert list(presence.lookup([other, me])) == [uuid.UUID(me)]
        assert [str(p.user_id) for p in presence.online_users()] == [me]
        assert presence.counts().total == 1

        anonymous = PresenceClient(sync_client(emulator))  # anon may not read presence
        with pytest.raises(AuthenticationError) as info:
            anonymous.counts()
        assert (info.value.status, info.value.code) == (401, "42501")


def test_pagination_is_stable_under_concurrent_beats(presence_db: PresenceDatabase) -> None:
    users = create_users(presence_db, 240, online=True)
    reader = presence_db.create_user()
    stop = threading.Event()
    beats = {"n": 0}

    def beat_forever() -> None:
        rng = random.Random(1)
        with presence_db.connect() as conn:
            while not stop.is_set():
                user = rng.choice(users)
                conn.execute(
                    "SELECT set_config('request.jwt.claims', %s, false)",
                    (f'{{"sub": "{user}", "role": "authenticated"}}',),
                )
                conn.execute(
                    "SELECT public.presence_heartbeat(%s)", (rng.choice(["online", "busy"]),)
                )
                beats["n"] += 1

    beater = threading.Thread(target=beat_forever)
    beater.start()
    try:
        with routed(presence_db) as (emulator, router):
            presence = PresenceClient(sync_client(emulator, emulator.user_token(reader)))
            seen: list[uuid.UUID] = []
            page = presence.online_users(limit=25)
            pages = 1
            seen += [p.user_id for p in page]
            while page.next_after is not None:
                page = presence.online_users(limit=25, after=page.next_after)
                seen += [p.user_id for p in page]
                pages += 1
            requests = router["rpc"].call_count
    finally:
        stop.set()
        beater.join()
    assert beats["n"] > 0
    assert len(seen) == len(set(seen)) == 240  # none twice, none lost
    assert seen == sorted(seen, key=str)
    assert {str(u) for u in seen} == set(users)
    assert pages == 240 // 25 + 1
    assert requests == pages


def test_bulk_lookup_of_1000_ids_is_one_round_trip(presence_db: PresenceDatabase) -> None:
    users = create_users(presence_db, 995, online=True)
    missing = [str(uuid.uuid4()) for _ in range(5)]
    wanted = users + missing
    random.Random(2).shuffle(wanted)
    reader = presence_db.create_user()
    with routed(presence_db) as (emulator, router):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(reader)))
        found = presence.lookup(wanted)
        assert router["rpc"].call_count == 1
        assert [str(u) for u in found] == [u for u in wanted if u not in missing]
        assert all(p.online for p in found.values())
        with pytest.raises(InvalidInputError):
            presence.lookup([*wanted, str(uuid.uuid4())])
        assert router["rpc"].call_count == 1


@pytest.mark.asyncio
async def test_async_queries(presence_db: PresenceDatabase) -> None:
    a, b = create_users(presence_db, 2, online=True)
    with routed(presence_db) as (emulator, _):
        presence = AsyncPresenceClient(async_client(emulator, emulator.user_token(a)))
        assert (await presence.get(b)).online is True
        assert await presence.is_online(a) is True
        assert list(await presence.lookup([b, a])) == [uuid.UUID(b), uuid.UUID(a)]
        first = await presence.online_users(limit=1)
        second = await presence.online_users(limit=1, after=first.next_after)
        assert sorted([*first, *second], key=lambda p: str(p.user_id)) == [*first, *second]
        assert (await presence.counts()).online == 2
