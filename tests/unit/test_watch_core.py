"""The watcher's I/O-free core: which effects, in which order, with which cursor."""

from __future__ import annotations

import random
import uuid
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import pytest

from presence_sdk import ConfigurationError, InvalidInputError, PermissionDeniedError
from presence_sdk._events import EventPage, PresenceEvent
from presence_sdk._exceptions import TransientError
from presence_sdk._watch import (
    Deliver,
    Fetch,
    Listen,
    Pause,
    Reconnect,
    Unlisten,
    Wait,
    WatchOptions,
    watch_effects,
)

USER = uuid.uuid4()


def event(n: int) -> PresenceEvent:
    return PresenceEvent(
        id=n,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        kind="online",
        user_id=USER,
        session_id=None,
        old_status="offline",
        new_status="online",
        reason="join",
    )


def page(ids: list[int], last_id: int | None = None, *, more: bool = False) -> EventPage:
    last = last_id if last_id is not None else (ids[-1] if ids else 0)
    return EventPage(events=tuple(event(i) for i in ids), last_id=last, more=more)


class Script:
    """Drive the core: reply to each effect from a script; record what it asked."""

    def __init__(self, options: WatchOptions) -> None:
        self.gen: Generator[Any, Any, None] = watch_effects(options, random.Random(7))
        self.effect: Any = self.gen.send(None)

    def reply(self, value: Any = None) -> Any:
        self.effect = self.gen.send(value)
        return self.effect

    def fail(self, error: BaseException) -> Any:
        self.effect = self.gen.throw(error)
        return self.effect

    def deliveries(self) -> list[int]:
        """Take every Deliver in a row; return their ids."""
        got = []
        while isinstance(self.effect, Deliver):
            got.append(self.effect.event.id)
            self.reply()
        return got


def test_polling_reads_delivers_then_waits_and_resumes_after_the_last_id() -> None:
    core = Script(WatchOptions(after_id=5, page_size=3, poll_interval=2.0))
    assert core.effect == Fetch(5, 3)
    core.reply(page([6, 7, 8], more=True))
    assert core.deliveries() == [6, 7, 8]
    assert core.effect == Fetch(8, 3)  # a full page: read on at once
    core.reply(page([9]))
    assert core.deliveries() == [9]
    assert core.effect == Wait(2.0)  # caught up: wait, no LISTEN when polling
    assert core.reply() == Fetch(9, 3)


def test_the_cursor_moves_past_events_the_reader_may_not_see() -> None:
    core = Script(WatchOptions())
    core.reply(page([], last_id=40))
    assert isinstance(core.effect, Wait)
    assert core.reply() == Fetch(40, 100)


def test_listening_starts_when_caught_up_and_reads_once_more() -> None:
    core = Script(WatchOptions(listen=True, page_size=2))
    core.reply(page([1, 2], more=True))
    assert core.deliveries() == [1, 2]
    core.reply(page([3]))
    assert core.deliveries() == [3]
    assert core.effect == Listen()
    # After LISTEN: read again (what committed before LISTEN took effect), then wait.
    assert core.reply() == Fetch(3, 2)
    assert core.reply(page([])) == Wait(1.0)
    assert core.reply() == Fetch(3, 2)


def test_a_consumer_falling_behind_stops_listening_and_pages() -> None:
    """Backpressure: a page or more behind, notifications are turned off."""
    core = Script(WatchOptions(listen=True, page_size=2))
    core.reply(page([]))
    assert core.effect == Listen()
    core.reply()
    core.reply(page([]))
    assert isinstance(core.effect, Wait)
    core.reply()
    core.reply(page([1, 2], more=True))  # a burst: more than a page waiting
    assert core.effect == Unlisten()
    core.reply()
    assert core.deliveries() == [1, 2]
    core.reply(page([3, 4], more=True))
    assert core.deliveries() == [3, 4]  # still paging, no second UNLISTEN
    core.reply(page([5]))
    assert core.deliveries() == [5]
    assert core.effect == Listen()


def test_a_transient_failure_backs_off_reconnects_and_rereads_from_the_same_id() -> None:
    core = Script(WatchOptions(listen=True, after_id=10, retry_initial=0.5, retry_cap=4.0))
    delays = []
    for _ in range(6):
        assert core.effect == Fetch(10, 100)
        pause = core.fail(TransientError("connection lost"))
        assert isinstance(pause, Pause)
        delays.append(pause.seconds)
        assert core.reply() == Reconnect()
        core.reply()
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[3:]) > max(delays[:1])  # grows (full jitter, seeded)
    core.reply(page([11]))
    assert core.deliveries() == [11]
    assert core.effect == Listen()  # listening again after the reconnect


def test_a_failed_reconnect_is_retried() -> None:
    core = Script(WatchOptions(after_id=3))
    core.fail(TransientError("down"))
    core.reply()
    assert core.effect == Reconnect()
    assert core.fail(TransientError("still down")) == Fetch(3, 100)


def test_other_errors_reach_the_consumer_at_once() -> None:
    core = Script(WatchOptions())
    with pytest.raises(PermissionDeniedError):
        core.fail(PermissionDeniedError("permission denied for function", code="42501"))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"after_id": -1}, InvalidInputError),
        ({"after_id": 2**63}, InvalidInputError),
        ({"after_id": True}, InvalidInputError),
        ({"after_id": "5"}, InvalidInputError),
        ({"page_size": 0}, InvalidInputError),
        ({"page_size": 1001}, InvalidInputError),
        ({"poll_interval": 0}, ConfigurationError),
        ({"poll_interval": float("nan")}, ConfigurationError),
        ({"poll_interval": 7200}, ConfigurationError),
        ({"retry_cap": -1}, ConfigurationError),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        WatchOptions(**kwargs)
