"""Helpers for the watcher tests: transitions made on another thread, and a watchdog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from events_support import events
from sessions_support import beat, leave, new_id

from presence_sdk.testing import PresenceDatabase

#: Events one :func:`cycle` logs: session_start, online, session_end, offline.
EVENTS_PER_CYCLE = 4


def cycle(db: PresenceDatabase, user: str) -> None:
    """One session of ``user`` that starts and leaves: four events."""
    session = new_id()
    beat(db, user, session)
    leave(db, user, session)


@contextmanager
def producing(
    db: PresenceDatabase, users: list[str], cycles: int, *, gap: float = 0.0
) -> Iterator[threading.Thread]:
    """Run ``cycles`` cycles per user on a background thread (joined on exit)."""

    def run() -> None:
        for _ in range(cycles):
            for user in users:
                cycle(db, user)
            time.sleep(gap)

    thread = threading.Thread(target=run, name="transitions")
    thread.start()
    try:
        yield thread
    finally:
        thread.join(60)


@contextmanager
def watchdog(stop: Callable[[], object], seconds: float = 30.0) -> Iterator[None]:
    """Call ``stop`` if the block is still running after ``seconds`` (a hung test
    then fails on its assertions instead of hanging the suite)."""
    timer = threading.Timer(seconds, stop)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def all_ids(db: PresenceDatabase) -> list[int]:
    """Every event id in the log, in order."""
    return [r["id"] for r in events(db)]


def terminate_others(db: PresenceDatabase) -> int:
    """pg_terminate_backend every other connection to ``db`` (watchers, emulators)."""
    (row,) = db.query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    terminated: int = row["n"]
    return terminated
