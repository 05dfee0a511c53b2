"""Presence per connection (migration 5): sessions aggregated per user, real PostgreSQL.

Every call goes through the PostgREST call shape (role switch + JWT claims). Time is
moved with :func:`sessions_support.advance` instead of waited for. The per-test
databases have no pg_cron job, so nothing sweeps unless a test calls the sweep.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sessions_support import (
    advance,
    beat,
    leave,
    new_id,
    note_affected,
    presence,
    sessions_of,
    stored,
    sweep,
)

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

TIMEOUT = 45


def test_two_devices_one_leaves_the_user_stays_online(presence_db: PresenceDatabase) -> None:
    user, reader = presence_db.create_user(), presence_db.create_user()
    phone, laptop = new_id(), new_id()
    started = beat(presence_db, user, phone, device="phone")
    beat(presence_db, user, laptop, device="laptop")

    leave(presence_db, user, phone)
    now = presence(presence_db, user, reader=reader)
    assert (now["online"], now["status"]) == (True, "online")
    assert datetime.fromisoformat(now["online_since"]) > started  # the laptop's start
    assert stored(presence_db, user)["status"] == "online"
    assert [s["session_id"] for s in sessions_of(presence_db, user)] == [laptop]

    left_at = leave(presence_db, user, laptop)
    gone = presence(presence_db, user, reader=reader)
    assert (gone["online"], gone["status"], gone["online_since"]) == (False, "offline", None)
    assert datetime.fromisoformat(gone["last_seen"]) == left_at
    # Offline at once in the stored row too (no sweep needed), last seen = the leave.
    assert stored(presence_db, user) == {
        "status": "offline",
        "last_heartbeat": left_at,
        "online_since": None,
    }
    assert sessions_of(presence_db, user) == []


def test_a_silent_device_times_out_while_the_other_keeps_the_user_online(
    presence_db: PresenceDatabase,
) -> None:
    user, reader = presence_db.create_user(), presence_db.create_user()
    silent, active = new_id(), new_id()
    beat(presence_db, user, silent, "online")
    beat(presence_db, user, active, "away")
    assert presence(presence_db, user, reader=reader)["status"] == "online"

    # 50 s pass; only `active` beats meanwhile.
    for _ in range(5):
        advance(presence_db, 10)
        beat(presence_db, user, active, "away")
    # Read exactly, before any sweep: the silent session no longer counts.
    now = presence(presence_db, user, reader=reader)
    assert (now["online"], now["status"]) == (True, "away")
    mine = presence_db.rpc("presence_my_sessions", user_id=user)
    assert {s["session_id"]: s["live"] for s in mine} == {silent: False, active: True}

    # The sweep ends the silent session and catches the stored status up.
    assert sweep(presence_db) == 1
    assert [s["session_id"] for s in sessions_of(presence_db, user)] == [active]
    assert stored(presence_db, user)["status"] == "away"
    assert presence(presence_db, user, reader=reader) == now
    assert note_affected(presence_db) == set()


def online_for(db: PresenceDatabase, user: str) -> float:
    """Seconds since the user's online_since, as presence_get reports it."""
    (row,) = db.query(
        "SELECT extract(epoch FROM now() - p.online_since)::float AS age "
        "FROM public.user_presence AS p WHERE p.user_id = %s",
        (user,),
    )
    age: float = row["age"]
    return age


def test_online_since_is_the_start_of_the_earliest_live_session(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    first, second = new_id(), new_id()
    beat(presence_db, user, first)  # t = 0
    advance(presence_db, 30)
    beat(presence_db, user, second)  # t = 30
    beat(presence_db, user, first)
    # (slack for the real time the test takes: the alternatives are 30 s apart)
    assert 30 <= online_for(presence_db, user) < 45  # since `first` started (not 0)

    # `first` goes silent after t = 30 and times out at t = 75: from then on the user
    # has been online since `second` started (reads at once; stored after the sweep).
    advance(presence_db, 20)
    beat(presence_db, user, second)  # t = 50
    assert 50 <= online_for(presence_db, user) < 65  # still `first` (not 20)
    advance(presence_db, 30)
    beat(presence_db, user, second)  # t = 80
    assert 50 <= online_for(presence_db, user) < 65  # now `second` (not 80)
    sweep(presence_db)
    (row,) = presence_db.query(
        "SELECT u.online_since = p.online_since AS same FROM public.users AS u "
        "JOIN public.user_presence AS p ON p.user_id = u.id WHERE u.id = %s",
        (user,),
    )
    assert row["same"] is True


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["online"], "online"),
        (["away"], "away"),
        (["busy"], "busy"),
        (["away", "online"], "online"),
        (["busy", "online"], "online"),
        (["away", "busy"], "busy"),
        (["away", "busy", "online"], "online"),
        (["away", "away"], "away"),
    ],
)
def test_the_status_rule_across_devices(
    presence_db: PresenceDatabase, statuses: list[str], expected: str
) -> None:
    """online > busy > away: the most reachable device wins."""
    user, reader = presence_db.create_user(), presence_db.create_user()
    for status in statuses:
        beat(presence_db, user, new_id(), status)
    assert presence(presence_db, user, reader=reader)["status"] == expected
    assert stored(presence_db, user)["status"] == expected
    counts = presence_db.rpc("presence_counts", user_id=reader)
    assert counts[expected] == 1
    assert sum(counts.values()) == 2


def test_set_status_on_one_device_does_not_overwrite_the_other(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    phone, laptop = new_id(), new_id()
    beat(presence_db, user, phone, "online")
    beat(presence_db, user, laptop, "online")
    beat(presence_db, user, laptop, "away")
    assert presence(presence_db, user)["status"] == "online"
    beat(presence_db, user, phone, "busy")
    assert stored(presence_db, user)["status"] == "busy"
    leave(presence_db, user, phone)
    assert stored(presence_db, user)["status"] == "away"
    assert presence(presence_db, user)["status"] == "away"


def test_the_session_cap_evicts_the_least_recently_beating(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    ids = [new_id() for _ in range(22)]
    for session in ids[:20]:
        beat(presence_db, user, session)
        advance(presence_db, 0.5)
    beat(presence_db, user, ids[0])  # the oldest session beats again: it stays
    assert len(sessions_of(presence_db, user)) == 20

    beat(presence_db, user, ids[20])
    beat(presence_db, user, ids[21])
    kept = {s["session_id"] for s in sessions_of(presence_db, user)}
    assert len(kept) == 20
    # ids[1] and ids[2] beat least recently: they went first.
    assert kept == set(ids) - {ids[1], ids[2]}
    assert presence(presence_db, user)["online"] is True


def test_dead_sessions_go_before_live_ones_at_the_cap(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    dead = new_id()
    beat(presence_db, user, dead)
    advance(presence_db, TIMEOUT + 5)
    live = [new_id() for _ in range(20)]
    for session in live:
        beat(presence_db, user, session)
    assert {s["session_id"] for s in sessions_of(presence_db, user)} == set(live)


def test_device_and_metadata_are_kept_unless_given(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session, device="web", metadata={"tab": 1})
    beat(presence_db, user, session, "away")
    (row,) = sessions_of(presence_db, user)
    assert (row["device"], row["metadata"], row["status"]) == ("web", {"tab": 1}, "away")
    beat(presence_db, user, session, device="ios", metadata={})
    (row,) = sessions_of(presence_db, user)
    assert (row["device"], row["metadata"]) == ("ios", {})


def test_a_beat_after_the_timeout_starts_the_session_again(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    advance(presence_db, TIMEOUT + 1)
    assert presence(presence_db, user)["online"] is False  # not swept: still stored online
    again = beat(presence_db, user, session)
    (row,) = sessions_of(presence_db, user)
    assert row["started_at"] == row["last_beat"] == again
    assert datetime.fromisoformat(presence(presence_db, user)["online_since"]) == again
    assert stored(presence_db, user)["online_since"] == again


def test_the_implicit_session_of_0_1_0_clients(presence_db: PresenceDatabase) -> None:
    """presence_heartbeat/presence_leave keep their signatures: one session per user,
    whose id is the user's id; presence_leave ends only that one."""
    user = presence_db.create_user()
    presence_db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=user)
    assert [(s["session_id"], s["status"]) for s in sessions_of(presence_db, user)] == [
        (user, "busy")
    ]
    device = new_id()
    beat(presence_db, user, device, "away")
    presence_db.rpc("presence_leave", user_id=user)
    assert [s["session_id"] for s in sessions_of(presence_db, user)] == [device]
    assert (presence(presence_db, user)["status"], stored(presence_db, user)["status"]) == (
        "away",
        "away",
    )
    leave(presence_db, user, device)
    assert presence(presence_db, user)["online"] is False
    # The implicit session is an ordinary session id for the new RPCs too.
    beat(presence_db, user, user, "online", device="legacy")
    assert sessions_of(presence_db, user)[0]["device"] == "legacy"


def test_my_sessions_lists_only_mine(presence_db: PresenceDatabase) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    mine = new_id()
    beat(presence_db, me, mine, "busy", device="desk", metadata={"v": 2})
    beat(presence_db, other, new_id())
    (row,) = presence_db.rpc("presence_my_sessions", user_id=me)
    assert row["session_id"] == mine
    assert (row["status"], row["device"], row["metadata"], row["live"]) == (
        "busy",
        "desk",
        {"v": 2},
        True,
    )
    assert set(row) == {
        "session_id",
        "status",
        "device",
        "metadata",
        "started_at",
        "last_beat",
        "live",
    }


def test_a_user_without_sessions_reads_as_0_1_0_did(presence_db: PresenceDatabase) -> None:
    """Rows written before the upgrade (or by hand) have no session: the stored
    columns are read exactly as 0.1.0 read them, and the first session adopts them."""
    user = presence_db.create_user()
    presence_db.query(
        "UPDATE public.users SET status = 'busy', last_heartbeat = now() - interval '10 s', "
        "online_since = now() - interval '1 hour' WHERE id = %s",
        (user,),
    )
    before = presence(presence_db, user)
    assert (before["online"], before["status"]) == (True, "busy")
    beat(presence_db, user, new_id(), "away")
    after = presence(presence_db, user)
    # The stored presence became the implicit session: still busy, same start.
    assert (after["status"], after["online_since"]) == ("busy", before["online_since"])
    assert {s["session_id"] for s in sessions_of(presence_db, user)} >= {user}


def test_the_sweep_counts_users_whose_presence_changed(presence_db: PresenceDatabase) -> None:
    alone, two_devices, fresh = (presence_db.create_user() for _ in range(3))
    beat(presence_db, alone, new_id())
    beat(presence_db, two_devices, new_id(), "online")
    advance(presence_db, TIMEOUT + 1)
    beat(presence_db, two_devices, new_id(), "online")  # a new device: still online
    beat(presence_db, fresh, new_id())
    # `alone` goes offline; `two_devices` loses a dead session but its presence does
    # not change (same status, its online_since already follows the live session).
    assert sweep(presence_db) == 1
    assert stored(presence_db, alone)["status"] == "offline"
    assert presence_db.query("SELECT count(*) AS n FROM public.presence_sessions") == [{"n": 2}]
    assert sweep(presence_db) == 0


def test_last_seen_of_a_timed_out_user_is_the_exact_latest_beat(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    phone, laptop = new_id(), new_id()
    beat(presence_db, user, phone)
    advance(presence_db, 5)
    beat(presence_db, user, laptop)  # the latest beat, not written to public.users
    advance(presence_db, TIMEOUT + 5)
    (row,) = presence_db.query(
        "SELECT max(last_beat) AS latest FROM public.presence_sessions WHERE user_id = %s",
        (user,),
    )
    read = presence(presence_db, user)
    assert read["online"] is False
    assert datetime.fromisoformat(read["last_seen"]) == row["latest"]
    sweep(presence_db)
    assert stored(presence_db, user)["last_heartbeat"] == row["latest"]
    assert presence(presence_db, user) == read


def test_presence_list_online_follows_the_sessions(presence_db: PresenceDatabase) -> None:
    reader = presence_db.create_user()
    online = sorted(presence_db.create_user() for _ in range(5))
    for user in online:
        beat(presence_db, user, new_id(), "away")
        beat(presence_db, user, new_id(), "online")
    silent = presence_db.create_user()
    beat(presence_db, silent, new_id())
    advance(presence_db, TIMEOUT + 1)
    for user in online:
        beat(presence_db, user, new_id(), "busy")
    page = presence_db.rpc("presence_list_online", {"page_size": 3}, user_id=reader)
    rest = presence_db.rpc(
        "presence_list_online", {"after_user_id": page[-1]["user_id"]}, user_id=reader
    )
    assert [r["user_id"] for r in page + rest] == online
    assert {r["status"] for r in page + rest} == {"busy"}
    assert presence_db.rpc("presence_counts", user_id=reader) == {
        "online": 0,
        "away": 0,
        "busy": 5,
        "offline": 2,
        "offline_estimated": False,
    }
