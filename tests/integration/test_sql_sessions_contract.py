"""The seed contract under sessions: the note's troubleshooting query, run verbatim,
keeps listing exactly the users the sweep will mark offline, across devices, the
last_heartbeat throttle, leaves and timeouts.

A 150-second timeline is simulated: time is moved (every stored timestamp shifted
back, corrected for the real time the test itself takes), beats are real RPC calls in
the PostgREST call shape. At every whole second the test compares three things:
the query's result, what a sweep would do right now (run in a transaction that is
rolled back), and a model of which sessions are live.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pytest
from sessions_support import NOTE_AFFECTED_ROWS, advance, beat, leave, new_id

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

TIMEOUT = 45.0
REFRESH_AGE = 45.0 - 2 * 15.0  # timeout - 2 x heartbeat interval
SWEEP_EVERY = 20
END = 150
# Beat intervals of a jittered client (15 s +- 10 %), some above 15 s and some below.
JITTER = (14.2, 15.9, 13.6, 16.4, 15.1, 14.8)


@dataclass
class Device:
    user: str
    session: str
    status: str
    first: float
    last_beat_before: float  # beats stop before this time (silent, or leaves)
    leaves: bool = False
    gap_at: float | None = None  # one beat skipped here (a late beat: 2 intervals)
    last: float | None = None

    def beats(self) -> Iterator[float]:
        t = self.first
        gap_at = self.gap_at
        for step in itertools.cycle(JITTER):
            if t >= self.last_beat_before:
                return
            yield t
            if gap_at is not None and t + step >= gap_at:
                gap_at = None
                t += 29.5  # one beat lost: the next one comes two intervals later
            else:
                t += step


@dataclass
class Clock:
    """Simulated seconds since the start; the database sees exactly that much pass."""

    db: PresenceDatabase
    sim: float = 0.0
    real: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.real = self.db_now()

    def db_now(self) -> datetime:
        (row,) = self.db.query("SELECT clock_timestamp() AS now")
        now: datetime = row["now"]
        return now

    def to(self, t: float) -> None:
        real = self.db_now()
        elapsed = (real - self.real).total_seconds()
        advance(self.db, (t - self.sim) - elapsed)
        self.sim, self.real = t, real


@contextmanager
def rolled_back(db: PresenceDatabase) -> Iterator[psycopg.Connection[Any]]:
    with db.connect() as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def sweep_would_mark_offline(db: PresenceDatabase) -> set[str]:
    with rolled_back(db) as conn:
        query = "SELECT id::text FROM public.users WHERE status <> 'offline'"
        before = {r[0] for r in conn.execute(query)}
        conn.execute("SELECT public.mark_inactive_users_offline()")
        after = {r[0] for r in conn.execute(query)}
    return before - after


def listed(db: PresenceDatabase) -> set[str]:
    return {str(r["id"]) for r in db.query(NOTE_AFFECTED_ROWS)}


def stored_rows(db: PresenceDatabase) -> dict[str, dict[str, Any]]:
    rows = db.query(
        "SELECT id::text, status, extract(epoch FROM now() - last_heartbeat)::float AS age "
        "FROM public.users"
    )
    return {r["id"]: r for r in rows}


def test_troubleshooting_query_lists_exactly_what_the_sweep_will_mark_offline(
    presence_db: PresenceDatabase,
) -> None:
    db = presence_db
    users = {name: db.create_user() for name in ("steady", "two", "dies", "both", "leaves", "late")}
    legacy = db.create_user()  # a 0.1.0 row: online, beat at t = -0.5, never again
    db.query(
        "UPDATE public.users SET status = 'online', "
        "last_heartbeat = now() - interval '0.5 s', online_since = now() - interval '1 min' "
        "WHERE id = %s",
        (legacy,),
    )
    devices = [
        Device(users["steady"], new_id(), "online", 0.3, END),
        Device(users["two"], new_id(), "away", 0.4, END),
        Device(users["two"], new_id(), "online", 0.6, 40),  # goes silent; `two` stays
        Device(users["dies"], new_id(), "busy", 0.7, 31),  # silent: dead at ~75
        Device(users["both"], new_id(), "online", 1.3, 50.5, leaves=True),
        Device(users["both"], new_id(), "away", 1.6, 50),  # silent: dead at ~93
        Device(users["leaves"], new_id(), "online", 2.3, 60.5, leaves=True),
        Device(users["late"], new_id(), "online", 2.6, END, gap_at=60),
    ]
    events: list[tuple[float, str, Device]] = []
    for device in devices:
        events += [(t, "beat", device) for t in device.beats()]
        if device.leaves:
            events.append((device.last_beat_before, "leave", device))
    grid = [(float(t), "check", None) for t in range(1, END + 1)]
    timeline = sorted([*events, *grid], key=lambda e: (e[0], e[1] != "beat"))

    refreshes = {"model": 0, "db": 0}
    steady_stored: float | None = None  # the model of `steady`'s stored last_heartbeat
    clock = Clock(db)
    checked = 0
    for t, kind, device in timeline:
        clock.to(t)
        if kind == "beat":
            assert device is not None
            beat(db, device.user, device.session, device.status)
            device.last = t
            if device.user == users["steady"]:
                age = stored_rows(db)[device.user]["age"]
                if steady_stored is None or steady_stored < t - REFRESH_AGE:
                    steady_stored = t
                    refreshes["model"] += 1
                refreshes["db"] += age < 0.2
                assert abs((t - age) - steady_stored) < 0.2, (t, age, steady_stored)
            continue
        if kind == "leave":
            assert device is not None
            leave(db, device.user, device.session)
            device.leaves, device.last = False, None
            continue
        # A whole second: compare the query, the sweep and the model.
        if int(t) % SWEEP_EVERY == 0:
            db.query("SELECT public.mark_inactive_users_offline()")
        rows = stored_rows(db)
        live = {d.user for d in devices if d.last is not None and d.last > t - TIMEOUT} | (
            {legacy} if t < TIMEOUT - 0.5 else set()
        )
        dead_not_swept = {u for u, r in rows.items() if r["status"] != "offline"} - live
        got = listed(db)
        assert got == dead_not_swept, (t, got, dead_not_swept)
        assert sweep_would_mark_offline(db) == got, t
        # A live user's stored beat lags their latest beat by at most REFRESH_AGE.
        for d in devices:
            if d.user in live and d.last is not None:
                latest = max(x.last for x in devices if x.user == d.user and x.last is not None)
                assert rows[d.user]["age"] <= (t - latest) + REFRESH_AGE + 0.2, (t, d.user)
        checked += 1

    assert checked == END
    assert refreshes["db"] == refreshes["model"]
    beats_of_steady = sum(1 for _, kind, d in events if kind == "beat" and d is devices[0])
    # The throttle: `steady` wrote public.users on far fewer beats than it sent.
    assert refreshes["db"] < beats_of_steady * 0.75
    print(
        f"\nsteady user: {beats_of_steady} beats, {refreshes['db']} writes to public.users "
        f"({refreshes['db'] / beats_of_steady:.2f} per beat)"
    )
