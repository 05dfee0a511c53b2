"""Event and history queries without I/O: validation before anything is sent, parsing."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from presence_sdk import InvalidInputError, RequestError
from presence_sdk._events import events_since, online_per_day, session_history

USER = uuid.uuid4()
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_events_since_builds_the_rpc_and_parses_a_page() -> None:
    query = events_since(7, 50)
    assert (query.fn, dict(query.params)) == (
        "presence_events_since",
        {"after_id": 7, "max_rows": 50},
    )
    session = uuid.uuid4()
    page = query.parse(
        {
            "events": [
                {
                    "id": 8,
                    "occurred_at": "2026-03-01T12:00:00+00:00",
                    "kind": "session_end",
                    "user_id": str(USER),
                    "session_id": str(session),
                    "old_status": "away",
                    "new_status": None,
                    "reason": "timeout",
                    "device": "phone",
                }
            ],
            "last_id": 9,
            "more": False,
        }
    )
    (event,) = page.events
    assert (event.id, event.kind, event.reason, event.session_id) == (
        8,
        "session_end",
        "timeout",
        session,
    )
    assert event.occurred_at == NOW
    assert (page.last_id, page.more) == (9, False)
    with pytest.raises(RequestError, match="unexpected response"):
        query.parse({"events": "nope"})


@pytest.mark.parametrize(
    "args",
    [(-1, 10), (2**63, 10), (True, 10), (1.5, 10), ("3", 10), (0, 0), (0, 1001), (0, None)],
)
def test_bad_event_reads_are_refused_before_sending(args: tuple[Any, Any]) -> None:
    with pytest.raises(InvalidInputError):
        events_since(*args)


def test_session_history_builds_the_rpc_and_parses_sessions() -> None:
    query = session_history(str(USER), NOW - timedelta(hours=2), NOW, 10)
    assert query.fn == "presence_session_history"
    assert dict(query.params) == {
        "user_id": str(USER),
        "from_time": (NOW - timedelta(hours=2)).isoformat(),
        "to_time": NOW.isoformat(),
        "max_rows": 10,
    }
    session = uuid.uuid4()
    (record,) = query.parse(
        [
            {
                "session_id": str(session),
                "device": None,
                "status": "online",
                "started_at": "2026-03-01T11:00:00+00:00",
                "ended_at": None,
                "end_reason": None,
            }
        ]
    )
    assert (record.session_id, record.ended_at, record.end_reason) == (session, None, None)
    assert "to_time" not in session_history(USER, NOW).params  # default: now (server)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", NOW), "must be a UUID"),
        ((USER, NOW.replace(tzinfo=None)), "timezone-aware"),
        ((USER, "2026-03-01"), "must be a datetime"),
        ((USER, NOW, NOW - timedelta(seconds=1)), "must be after start"),
        ((USER, NOW, NOW), "must be after start"),
        ((USER, NOW, None, 0), "limit"),
    ],
)
def test_bad_history_ranges_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        session_history(*args)


def test_online_per_day_builds_the_rpc_and_parses_days() -> None:
    query = online_per_day(USER, date(2026, 3, 1), date(2026, 3, 2), "Europe/Paris")
    assert dict(query.params) == {
        "user_id": str(USER),
        "from_day": "2026-03-01",
        "to_day": "2026-03-02",
        "time_zone": "Europe/Paris",
    }
    days = query.parse([{"day": "2026-03-01", "online_seconds": 90.5}])
    assert [(d.day, d.online) for d in days] == [(date(2026, 3, 1), timedelta(seconds=90.5))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((USER, date(2026, 3, 2), date(2026, 3, 1)), "must not be before"),
        ((USER, NOW, date(2026, 3, 1)), "must be a date"),
        ((USER, date(2026, 3, 1), date(2026, 3, 1), "Mars/Olympus"), "unknown time zone"),
        ((USER, date(2026, 3, 1), date(2026, 3, 1), ""), "IANA"),
        ((USER, date(2026, 3, 1), date(2026, 3, 1), "../etc/passwd"), "unknown time zone"),
        ((USER, date(2026, 3, 1), date(2026, 3, 1), "x" * 100), "IANA"),
    ],
)
def test_bad_day_ranges_and_zones_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        online_per_day(*args)
