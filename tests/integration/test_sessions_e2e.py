"""Sessions end to end: the clients and the tracker over real HTTP (LocalPostgREST) on
the real SQL: two devices of one user, the tracker with 10,000 sessions, the
fallback of new clients on databases without the sessions SQL."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import async_poll, create_users, poll

from presence_sdk import (
    AsyncPresenceTracker,
    PresenceClient,
    PresenceConfig,
    PresenceState,
    PresenceTracker,
    SessionsRejectedError,
    TrackerConfig,
    migrations,
    schema_sql,
)
from presence_sdk._sessions import metadata_size
from presence_sdk.testing import (
    LocalPostgREST,
    PresenceDatabase,
    PresenceTestServer,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

QUICK = PresenceConfig(interval=0.3, jitter=0.0, request_timeout=5.0, stop_timeout=5.0)
OLD_0_1_0 = Path(__file__).with_name("sql_0_1_0")


@pytest.fixture
def api(presence_db: PresenceDatabase) -> Iterator[LocalPostgREST]:
    with LocalPostgREST(presence_db.emulator()) as server:
        yield server


def client(api: LocalPostgREST, user: str, **kwargs: Any) -> PresenceClient:
    return PresenceClient.from_url(
        api.url,
        api.emulator.anon_key,
        access_token=api.emulator.user_token(user),
        config=kwargs.pop("config", QUICK),
        **kwargs,
    )


def presence(db: PresenceDatabase, user: str) -> dict[str, Any]:
    (row,) = db.query(
        "SELECT p.status, p.online, u.status AS stored FROM public.user_presence AS p "
        "JOIN public.users AS u ON u.id = p.user_id WHERE p.user_id = %s",
        (user,),
    )
    return row


def live_sessions(db: PresenceDatabase, user: str) -> list[dict[str, Any]]:
    return db.query(
        "SELECT session_id, status, device, metadata FROM public.presence_sessions "
        "WHERE user_id = %s ORDER BY device",
        (user,),
    )


# -- two devices of one user ----------------------------------------------------------------


def test_two_devices_of_one_user(presence_db: PresenceDatabase, api: LocalPostgREST) -> None:
    user = presence_db.create_user()
    phone = client(api, user, device="phone", metadata={"os": "ios"})
    laptop = client(api, user, device="laptop")
    assert phone.session_id != laptop.session_id
    try:
        phone.start()
        laptop.start()
        poll(lambda: len(live_sessions(presence_db, user)) == 2)
        sessions = live_sessions(presence_db, user)
        assert [(s["device"], s["session_id"]) for s in sessions] == [
            ("laptop", laptop.session_id),
            ("phone", phone.session_id),
        ]
        assert sessions[1]["metadata"] == {"os": "ios"}

        # The status rule across devices: online beats away.
        phone.set_status("away")
        poll(lambda: {s["status"] for s in live_sessions(presence_db, user)} == {"online", "away"})
        assert presence(presence_db, user)["status"] == "online"

        # One device leaves: the user stays online, through the other, at once.
        laptop.stop()
        assert [s["device"] for s in live_sessions(presence_db, user)] == ["phone"]
        now = presence(presence_db, user)
        assert now["online"] is True
        assert (now["status"], now["stored"]) == ("away", "away")  # the phone's status
        assert phone.state is PresenceState.ONLINE

        # The last device leaves: offline at once, no waiting for the timeout.
        phone.stop()
        assert live_sessions(presence_db, user) == []
        assert presence(presence_db, user) == {
            "status": "offline",
            "online": False,
            "stored": "offline",
        }
    finally:
        phone.close()
        laptop.close()


def test_my_sessions_lists_the_devices_of_the_signed_in_user(
    presence_db: PresenceDatabase, api: LocalPostgREST
) -> None:
    user, other = presence_db.create_user(), presence_db.create_user()
    with client(api, user, device="web"), client(api, other, device="bot"):
        poll(lambda: len(live_sessions(presence_db, user)) == 1)
        mine = presence_db.rpc("presence_my_sessions", user_id=user)
        assert [(s["device"], s["live"]) for s in mine] == [("web", True)]


# -- old databases ----------------------------------------------------------------------------


def _old_sql(kind: str) -> list[str]:
    """The SQL of a database that predates sessions."""
    if kind == "0.1.0":  # what 0.1.0 shipped, verbatim
        return [
            p.read_text()
            for p in [OLD_0_1_0 / "schema.sql", *sorted(OLD_0_1_0.glob("migrations/*.sql"))]
        ]
    files = [schema_sql()]
    for migration in migrations():  # today's files, up to the one that adds sessions
        if "presence_session_beat" in migration.up:
            break
        files.append(migration.up)
    return files


@pytest.mark.parametrize("kind", ["0.1.0", "current files before sessions"])
def test_new_clients_keep_working_on_a_database_without_sessions(
    presence_server: PresenceTestServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
            for sql in _old_sql(kind):
                conn.execute(sql)
        assert not db.query("SELECT 1 FROM pg_proc WHERE proname = 'presence_session_beat'")
        user = db.create_user()
        with LocalPostgREST(db.emulator()) as api, caplog.at_level(logging.WARNING, "presence_sdk"):
            presence_client = client(api, user, device="web")
            with presence_client:
                poll(
                    lambda: (
                        db.query("SELECT status FROM public.users WHERE id = %s", (user,))[0][
                            "status"
                        ]
                        == "online"
                    )
                )
                presence_client.set_status("busy")
                poll(
                    lambda: (
                        db.query("SELECT status FROM public.users WHERE id = %s", (user,))[0][
                            "status"
                        ]
                        == "busy"
                    )
                )
                assert presence_client.state is PresenceState.ONLINE
                assert presence_client.stats.beats_failed == 0
            (stored,) = db.query("SELECT status FROM public.users WHERE id = %s", (user,))
            assert stored["status"] == "offline"  # the 0.1 leave
            paths = api.emulator.requests
            assert paths.count("/rest/v1/rpc/presence_session_beat") == 1  # probed once
            assert "/rest/v1/rpc/presence_leave" in paths
        warnings = [r for r in caplog.records if "presence_heartbeat()/" in r.getMessage()]
        assert len(warnings) == 1


# -- the tracker ----------------------------------------------------------------------------------


def count_live(db: PresenceDatabase) -> int:
    (row,) = db.query("SELECT count(*) AS n FROM public.presence_sessions")
    return int(row["n"])


def online_users(db: PresenceDatabase) -> int:
    (row,) = db.query("SELECT count(*) AS n FROM public.user_presence WHERE online")
    return int(row["n"])


def test_tracker_keeps_10000_sessions_alive_then_stop_takes_them_all_offline(
    presence_db: PresenceDatabase, api: LocalPostgREST
) -> None:
    users = create_users(presence_db, 10_000)
    # A long interval: one round is enough to show the batching (a steady round costs
    # the suite as much again); untrack and stop are what must be prompt.
    config = TrackerConfig(interval=30.0, jitter=0.0, request_timeout=30.0, stop_timeout=60.0)
    tracker = PresenceTracker.from_url(api.url, api.emulator.service_role_key, config=config)
    try:
        for user in users:
            tracker.track(user, device="ws")
        started = time.monotonic()
        tracker.start()
        poll(lambda: tracker.stats.rounds >= 1, timeout=60)
        first_round = time.monotonic() - started
        assert count_live(presence_db) == 10_000
        assert online_users(presence_db) == 10_000
        stats = tracker.stats
        assert stats.sessions_beaten == 10_000
        assert stats.batches_sent == 10  # 1,000 per call
        assert stats.batches_failed == 0
        assert stats.state is PresenceState.ONLINE
        # untrack ends promptly, between rounds.
        gone = list(tracker.tracked())[:10]
        for sid in gone:
            tracker.untrack(sid)
        poll(lambda: count_live(presence_db) == 9_990, timeout=10)
        stopped = time.monotonic()
        tracker.stop()
        stop_seconds = time.monotonic() - stopped
    finally:
        tracker.close()
    assert count_live(presence_db) == 0
    assert online_users(presence_db) == 0
    (stored,) = presence_db.query(
        "SELECT count(*) FILTER (WHERE status = 'offline') AS offline, count(*) AS n "
        "FROM public.users"
    )
    assert stored == {"offline": 10_000, "n": 10_000}
    print(f"\n10,000 sessions: first round {first_round:.2f}s, stop {stop_seconds:.2f}s")


def test_tracker_drops_what_the_real_sql_refuses_and_beats_the_rest(
    presence_db: PresenceDatabase, api: LocalPostgREST
) -> None:
    users = create_users(presence_db, 20)
    someone = presence_db.create_user()
    taken = str(uuid.uuid4())  # a session of someone else, opened through the user RPC
    presence_db.rpc("presence_session_beat", {"session_id": taken}, user_id=someone)
    ghosts = [str(uuid.uuid4()) for _ in range(7)]  # no public.users rows
    errors: list[Exception] = []
    config = TrackerConfig(interval=2.0, jitter=0.0, batch_size=10)
    with PresenceTracker.from_url(
        api.url, api.emulator.service_role_key, config=config, on_error=errors.append
    ) as tracker:
        good = [tracker.track(u) for u in users]
        bad = [tracker.track(g) for g in ghosts]
        stolen = tracker.track(users[0], session_id=taken)
        poll(lambda: count_live(presence_db) == 21)  # the 20 good ones and someone's own
        poll(lambda: tracker.state is PresenceState.ONLINE)
        assert tracker.stats.sessions_dropped == 8
        assert set(tracker.tracked()) == set(good)
    dropped = {sid for e in errors if isinstance(e, SessionsRejectedError) for sid in e.session_ids}
    assert dropped == {*bad, stolen}
    assert {e.code for e in errors if isinstance(e, SessionsRejectedError)} == {"23503", "PT409"}
    assert all(isinstance(e, SessionsRejectedError) for e in errors)
    assert count_live(presence_db) == 1  # someone's session was never touched


@pytest.mark.asyncio
async def test_async_tracker_end_to_end(presence_db: PresenceDatabase, api: LocalPostgREST) -> None:
    users = create_users(presence_db, 50)
    config = TrackerConfig(interval=1.0, jitter=0.0)
    async with AsyncPresenceTracker.from_url(
        api.url, api.emulator.service_role_key, config=config
    ) as tracker:
        sessions = [tracker.track(u, status="busy") for u in users]
        await async_poll(lambda: count_live(presence_db) == 50)
        assert online_users(presence_db) == 50
        tracker.untrack(sessions[0])
        await async_poll(lambda: count_live(presence_db) == 49)
        assert presence(presence_db, users[0])["online"] is False
        assert presence(presence_db, users[1])["status"] == "busy"
    assert online_users(presence_db) == 0


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"room": "lobby", "n": 3, "ok": True, "none": None},
        {"nested": {"list": [1, 2, {"deep": "é ü ✓ 🎉"}], "empty": []}},
        {"escapes": 'quote " backslash \\ newline \n tab \t bell \x07'},
        {"b": 1, "a": 2, "longer key": -0.5},
    ],
)
def test_metadata_is_measured_as_postgres_measures_it(
    presence_db: PresenceDatabase, metadata: dict[str, Any]
) -> None:
    # The SQL's CHECK is octet_length(metadata::text) <= 1024; the clients refuse
    # oversized metadata before any I/O by measuring it the same way.
    (row,) = presence_db.query(
        "SELECT octet_length(%s::jsonb::text) AS size", (json.dumps(metadata),)
    )
    assert metadata_size(metadata) == row["size"]
