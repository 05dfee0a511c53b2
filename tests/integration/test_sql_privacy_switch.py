"""Going invisible, under load: a user who goes invisible never shows online to a
stranger on any path once the switch has returned, while their devices keep beating and
strangers keep polling every path (threads, real PostgreSQL, PostgREST call shape)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sessions_support import beat, new_id

from presence_sdk.testing import PresenceDatabase, call_rpc

pytestmark = pytest.mark.integration

POLLERS = 3
CYCLES = 3
PATHS = ("get", "is_online", "list_online", "counts", "view", "events")


@dataclass
class Seen:
    started: float
    ended: float
    online: dict[str, bool]


@dataclass
class Poller:
    """A stranger reading every path about ``target`` in a loop, one connection."""

    db: PresenceDatabase
    stranger: str
    target: str
    stop: threading.Event
    seen: list[Seen] = field(default_factory=list)
    error: BaseException | None = None

    def read_all(self, conn: psycopg.Connection[Any]) -> dict[str, bool]:
        claims = {"sub": self.stranger}

        def call(fn: str, params: dict[str, Any]) -> Any:
            return call_rpc(conn, fn, params, role="authenticated", claims=claims)

        (row,) = call("presence_get", {"user_ids": [self.target]})
        listed = call("presence_list_online", {"page_size": 1000})
        counts = call("presence_counts", {})
        online = {
            "get": row["online"] or row["status"] != "offline" or row["online_since"] is not None,
            "is_online": call("presence_is_online", {"user_id": self.target}),
            "list_online": any(r["user_id"] == self.target for r in listed),
            "counts": counts["online"] + counts["away"] + counts["busy"] > 0,
        }
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute(
                "SELECT set_config('request.jwt.claims', %s, true)",
                (json.dumps({"role": "authenticated", "sub": self.stranger}),),
            )
            both = conn.execute(
                "SELECT (SELECT p.online FROM public.user_presence AS p WHERE p.user_id = %(t)s),"
                " presence_private.can_see_events((SELECT auth.uid()), %(t)s)",
                {"t": self.target},
            ).fetchone()
        assert both is not None
        return online | {"view": bool(both[0]), "events": bool(both[1])}

    def run(self) -> None:
        try:
            with self.db.connect() as conn:
                while not self.stop.is_set():
                    started = time.monotonic()
                    online = self.read_all(conn)
                    self.seen.append(Seen(started, time.monotonic(), online))
        except BaseException as exc:  # reported by the test
            self.error = exc


def keep_beating(db: PresenceDatabase, user: str, stop: threading.Event, errors: list[Any]) -> None:
    """Two devices of ``user`` beating as fast as they can, and new ones joining."""
    devices = [new_id(), new_id()]
    try:
        while not stop.is_set():
            for device in devices:
                beat(db, user, device, "away")
            beat(db, user, new_id(), "online")  # a new device joins (the cap evicts)
    except BaseException as exc:
        errors.append(exc)


def wait_for(pollers: list[Poller], after: float, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(sum(s.started > after for s in p.seen) >= count for p in pollers):
            return
        time.sleep(0.01)
    raise AssertionError("the pollers made no progress")


def test_a_stranger_never_sees_an_invisible_user_online_on_any_path(
    presence_db: PresenceDatabase,
) -> None:
    target = presence_db.create_user()
    strangers = [presence_db.create_user() for _ in range(POLLERS)]
    beat(presence_db, target, new_id())
    stop = threading.Event()
    errors: list[Any] = []
    pollers = [Poller(presence_db, s, target, stop) for s in strangers]
    threads = [threading.Thread(target=p.run) for p in pollers]
    threads.append(threading.Thread(target=keep_beating, args=(presence_db, target, stop, errors)))
    for t in threads:
        t.start()
    switches: list[tuple[float, float, bool]] = []  # (called, returned, invisible)
    try:
        for _ in range(CYCLES):
            for invisible in (True, False):
                wait_for(pollers, time.monotonic(), 3)
                called = time.monotonic()
                presence_db.rpc("presence_set_invisible", {"invisible": invisible}, user_id=target)
                switches.append((called, time.monotonic(), invisible))
        wait_for(pollers, time.monotonic(), 3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert all(p.error is None for p in pollers), [p.error for p in pollers]

    def state_during(seen: Seen) -> bool | None:
        """Whether the user was invisible for the whole read (the last switch returned
        before it started, the next one was called after it ended); None otherwise."""
        state = False
        for called, returned, invisible in switches:
            if called <= seen.ended and returned >= seen.started:
                return None  # a switch overlapped the read
            if returned < seen.started:
                state = invisible
        return state

    checked = {True: 0, False: 0}
    for poller in pollers:
        for seen in poller.seen:
            invisible = state_during(seen)
            if invisible is None:
                continue
            checked[invisible] += 1
            if invisible:
                assert not any(seen.online.values()), seen
            else:
                assert set(seen.online.values()) == {True}, seen
            assert set(seen.online) == set(PATHS)
    # Every phase was really observed, many times.
    assert checked[True] >= POLLERS * CYCLES * 3
    assert checked[False] >= POLLERS * CYCLES * 3
