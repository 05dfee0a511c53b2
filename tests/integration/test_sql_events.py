"""The presence event log (migration 6): one event per transition, real PostgreSQL.

Calls go through the PostgREST call shape. Time is moved (sessions_support.advance),
not waited for; events already logged keep their times, so expected times are read
from the stored rows just before the transition.
"""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from events_support import advance, at, events, newest_id, shape
from sessions_support import beat, leave, new_id, stored, sweep

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

TIMEOUT = timedelta(seconds=45)


def test_two_devices_log_starts_ends_and_the_user_edges(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    phone, laptop = new_id(), new_id()
    started = beat(presence_db, user, phone, device="phone")
    beat(presence_db, user, laptop, device="laptop")
    phone_left = leave(presence_db, user, phone)
    laptop_left = leave(presence_db, user, laptop)

    rows = events(presence_db, user)
    assert shape(rows) == [
        ("session_start", phone, "join"),
        ("online", None, "join"),
        ("session_start", laptop, "join"),
        ("session_end", phone, "leave"),
        ("session_end", laptop, "leave"),
        ("offline", None, "leave"),
    ]
    assert [r["device"] for r in rows] == ["phone", None, "laptop", "phone", "laptop", None]
    assert [at(r["occurred_at"]) for r in rows] == [
        started,
        started,
        rows[2]["occurred_at"],
        phone_left,
        laptop_left,
        laptop_left,
    ]
    assert (rows[1]["old_status"], rows[1]["new_status"]) == ("offline", "online")
    assert (rows[5]["old_status"], rows[5]["new_status"]) == ("online", "offline")
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids)


def test_steady_beats_emit_no_event(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session, device="web")
    before = [r["id"] for r in events(presence_db)]
    for _ in range(10):
        advance(presence_db, 4)  # 40 s of beats every 4 s: never a timeout
        beat(presence_db, user, session)
    assert [r["id"] for r in events(presence_db)] == before


def test_steady_beats_do_not_write_public_users(presence_db: PresenceDatabase) -> None:
    """What Realtime postgres_changes on public.users sees: no change per steady beat."""
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    (first,) = presence_db.query("SELECT xmin::text AS x FROM public.users WHERE id = %s", (user,))
    for _ in range(5):
        beat(presence_db, user, session)
    (after,) = presence_db.query("SELECT xmin::text AS x FROM public.users WHERE id = %s", (user,))
    assert after == first  # no new row version: nothing for Realtime to publish
    assert shape(events(presence_db, user)) == [
        ("session_start", session, "join"),
        ("online", None, "join"),
    ]


def test_a_timeout_is_logged_at_last_beat_plus_timeout_not_at_the_sweep(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session, "away")
    advance(presence_db, 65)  # timed out 20 s ago; the sweep only comes now
    (live,) = presence_db.query(
        "SELECT last_beat FROM public.presence_sessions WHERE session_id = %s", (session,)
    )
    mark = newest_id(presence_db)
    assert sweep(presence_db) == 1

    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [("session_end", session, "timeout"), ("offline", None, "timeout")]
    assert [r["occurred_at"] for r in rows] == [live["last_beat"] + TIMEOUT] * 2
    assert rows[0]["old_status"] == "away"
    assert (rows[1]["old_status"], rows[1]["new_status"]) == ("away", "offline")


def test_a_status_change_logs_the_session_and_the_user(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    phone, laptop = new_id(), new_id()
    beat(presence_db, user, phone, "online")
    beat(presence_db, user, laptop, "away")
    mark = newest_id(presence_db)

    changed_at = beat(presence_db, user, phone, "busy")  # aggregate: online -> busy
    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [("session_status", phone, "status"), ("status", None, "status")]
    assert [(r["old_status"], r["new_status"]) for r in rows] == [
        ("online", "busy"),
        ("online", "busy"),
    ]
    assert {at(r["occurred_at"]) for r in rows} == {changed_at}

    # The busy phone leaves: the aggregate falls to away at the leave.
    mark = newest_id(presence_db)
    left_at = leave(presence_db, user, phone)
    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [("session_end", phone, "leave"), ("status", None, "leave")]
    assert (rows[1]["old_status"], rows[1]["new_status"], rows[1]["occurred_at"]) == (
        "busy",
        "away",
        left_at,
    )


def test_a_device_timing_out_under_a_live_one_changes_the_status_at_its_timeout(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    silent, active = new_id(), new_id()
    beat(presence_db, user, silent, "online")
    beat(presence_db, user, active, "away")
    advance(presence_db, 30)
    beat(presence_db, user, active, "away")
    advance(presence_db, 30)
    beat(presence_db, user, active, "away")
    (dead,) = presence_db.query(
        "SELECT last_beat FROM public.presence_sessions WHERE session_id = %s", (silent,)
    )
    mark = newest_id(presence_db)
    sweep(presence_db)
    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [("session_end", silent, "timeout"), ("status", None, "timeout")]
    assert {r["occurred_at"] for r in rows} == {dead["last_beat"] + TIMEOUT}
    assert stored(presence_db, user)["status"] == "away"


def test_coming_back_after_a_timeout_logs_the_gap(presence_db: PresenceDatabase) -> None:
    """The sweep never ran: the beat that revives the session logs both edges."""
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    advance(presence_db, 100)
    (dead,) = presence_db.query(
        "SELECT last_beat FROM public.presence_sessions WHERE session_id = %s", (session,)
    )
    mark = newest_id(presence_db)
    back = beat(presence_db, user, session)

    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [
        ("session_end", session, "timeout"),
        ("session_start", session, "join"),
        ("offline", None, "timeout"),
        ("online", None, "join"),
    ]
    gone = dead["last_beat"] + TIMEOUT
    assert [r["occurred_at"] for r in rows] == [gone, back, gone, back]


def test_a_new_device_after_all_others_timed_out_logs_the_gap(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    old, new = new_id(), new_id()
    beat(presence_db, user, old)
    advance(presence_db, 100)
    (dead,) = presence_db.query(
        "SELECT last_beat FROM public.presence_sessions WHERE session_id = %s", (old,)
    )
    mark = newest_id(presence_db)
    back = beat(presence_db, user, new)
    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [
        ("session_start", new, "join"),
        ("offline", None, "timeout"),
        ("online", None, "join"),
    ]
    assert [r["occurred_at"] for r in rows] == [back, dead["last_beat"] + TIMEOUT, back]
    # The dead session ends later, at its own timeout, without another user edge.
    mark = newest_id(presence_db)
    sweep(presence_db)
    rows = events(presence_db, user, after=mark)
    assert shape(rows) == [("session_end", old, "timeout")]
    assert rows[0]["occurred_at"] == dead["last_beat"] + TIMEOUT


def test_the_session_cap_logs_evictions(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    sessions = [new_id() for _ in range(20)]
    for session in sessions:
        beat(presence_db, user, session)
    mark = newest_id(presence_db)
    extra = new_id()
    beat(presence_db, user, extra)
    assert shape(events(presence_db, user, after=mark)) == [
        ("session_start", extra, "join"),
        ("session_end", sessions[0], "evicted"),
    ]


def test_a_writer_can_name_the_reason(presence_db: PresenceDatabase) -> None:
    """The seam for other writers: presence.end_reason, local to the transaction."""
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    mark = newest_id(presence_db)
    with presence_db.connect() as conn, conn.transaction():
        conn.execute("SELECT set_config('presence.end_reason', 'evicted', true)")
        conn.execute("SELECT public.presence_track_end(ARRAY[%s]::uuid[])", (session,))
    assert shape(events(presence_db, user, after=mark)) == [
        ("session_end", session, "evicted"),
        ("offline", None, "evicted"),
    ]


def test_a_batch_logs_every_transition(presence_db: PresenceDatabase) -> None:
    users = [presence_db.create_user() for _ in range(50)]
    entries = [{"session_id": new_id(), "user_id": u, "status": "online"} for u in users]
    presence_db.rpc("presence_track_beat", {"sessions": entries}, role="service_role")
    rows = events(presence_db)
    assert sorted((r["kind"], r["user_id"]) for r in rows) == sorted(
        [("session_start", u) for u in users] + [("online", u) for u in users]
    )
    mark = newest_id(presence_db)
    presence_db.rpc("presence_track_beat", {"sessions": entries}, role="service_role")
    assert events(presence_db, after=mark) == []  # steady
    presence_db.rpc(
        "presence_track_end",
        {"session_ids": [e["session_id"] for e in entries]},
        role="service_role",
    )
    rows = events(presence_db, after=mark)
    assert sorted((r["kind"], r["reason"], r["user_id"]) for r in rows) == sorted(
        [("session_end", "leave", u) for u in users] + [("offline", "leave", u) for u in users]
    )


def test_0_1_0_rows_without_sessions_are_logged_too(presence_db: PresenceDatabase) -> None:
    """A users row written directly (as 0.1.0 or an app would) still has its edges."""
    user = presence_db.create_user()
    presence_db.query(
        "UPDATE public.users SET status = 'online', last_heartbeat = now() - interval '100 s', "
        "online_since = now() - interval '200 s' WHERE id = %s",
        (user,),
    )
    (row,) = presence_db.query("SELECT last_heartbeat FROM public.users WHERE id = %s", (user,))
    sweep(presence_db)
    rows = events(presence_db, user)
    assert shape(rows) == [("online", None, "join"), ("offline", None, "timeout")]
    assert rows[1]["occurred_at"] == row["last_heartbeat"] + TIMEOUT
    # A direct status write is a status transition.
    presence_db.query(
        "UPDATE public.users SET status = 'busy', last_heartbeat = now() - interval '5 s' "
        "WHERE id = %s",
        (user,),
    )
    presence_db.query("UPDATE public.users SET status = 'offline' WHERE id = %s", (user,))
    assert [r["reason"] for r in events(presence_db, user)[-2:]] == ["join", "status"]


def test_each_event_is_notified_with_its_id_and_kind(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    session = new_id()
    with psycopg.connect(presence_db.dsn, autocommit=True) as listener:
        listener.execute("LISTEN presence_events")
        beat(presence_db, user, session)
        leave(presence_db, user, session)
        got = list(listener.notifies(timeout=5, stop_after=4))
    logged = events(presence_db, user)
    assert [n.channel for n in got] == ["presence_events"] * 4
    assert sorted((json.loads(n.payload)["id"], json.loads(n.payload)["kind"]) for n in got) == [
        (r["id"], r["kind"]) for r in logged
    ]


def test_deleting_a_user_logs_nothing_for_them(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id())
    mark = newest_id(presence_db)
    presence_db.query("DELETE FROM auth.users WHERE id = %s", (user,))
    assert events(presence_db, after=mark) == []
