"""Presence events and history without I/O: the values, and the queries that read them.

The SQL (migration ``20240000000006_events``) logs every presence transition in
``public.presence_events``; ``presence_events_since`` returns them in id order without
ever skipping an id that an open transaction may still commit, and the history RPCs
(``presence_session_history``, ``presence_online_per_day``) compute from the same log.
Every builder here validates its input (:class:`~presence_sdk.InvalidInputError`,
nothing sent) and returns a :class:`~presence_sdk._queries.Query` that the sync and
async shells run the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from presence_sdk._exceptions import InvalidInputError, RequestError
from presence_sdk._queries import Query, UserId, to_user_id

__all__ = [
    "EVENTS_CHANNEL",
    "MAX_EVENT_ID",
    "MAX_EVENT_PAGE",
    "EventKind",
    "EventPage",
    "EventReason",
    "OnlineDay",
    "PresenceEvent",
    "SessionRecord",
    "check_after_id",
    "check_page_size",
    "events_since",
    "online_per_day",
    "session_history",
]

#: The ``pg_notify`` channel of the log; each payload is ``{"id": N, "kind": "..."}``.
EVENTS_CHANNEL: Final = "presence_events"

#: Largest page ``presence_events_since`` and ``presence_session_history`` return.
MAX_EVENT_PAGE: Final = 1000

#: Largest event id (PostgreSQL ``bigint``).
MAX_EVENT_ID: Final = 2**63 - 1

#: What happened: a user came ``online``/went ``offline``/changed ``status``, or one of
#: their sessions started, ended or changed status.
EventKind = Literal["online", "offline", "status", "session_start", "session_end", "session_status"]

#: Why: ``join`` (a session started), ``leave``, ``timeout`` (no beat for the timeout),
#: ``evicted`` (over the per-user session cap) or ``status`` (a status change).
EventReason = Literal["join", "leave", "timeout", "evicted", "status"]


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _uuid(value: Any) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


@dataclass(frozen=True, kw_only=True, slots=True)
class PresenceEvent:
    """One presence transition from the log.

    Attributes:
        id: Position in the log (increasing). Pass the last one you processed back as
            ``after_id`` to resume without loss or repeats.
        occurred_at: When it happened (a timeout: the last beat plus the timeout).
        kind: ``online``, ``offline``, ``status`` (user events, ``session_id`` None),
            ``session_start``, ``session_end``, ``session_status``.
        user_id: Whose presence changed.
        session_id: The session of a ``session_*`` event (only your own are visible).
        old_status: Status before (None for a session start).
        new_status: Status after (None for a session end).
        reason: ``join``, ``leave``, ``timeout``, ``evicted`` or ``status``.
        device: The session's device label, if it had one.
    """

    id: int
    occurred_at: datetime
    kind: EventKind
    user_id: uuid.UUID
    session_id: uuid.UUID | None
    old_status: str | None
    new_status: str | None
    reason: EventReason
    device: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PresenceEvent:
        """Build from one event as ``presence_events_since`` returns it (JSON)."""
        user = _uuid(row["user_id"])
        if user is None:
            raise ValueError(row)
        return cls(
            id=int(row["id"]),
            occurred_at=_time(row["occurred_at"]),
            kind=row["kind"],
            user_id=user,
            session_id=_uuid(row.get("session_id")),
            old_status=row.get("old_status"),
            new_status=row.get("new_status"),
            reason=row["reason"],
            device=row.get("device"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class EventPage:
    """One page of the log.

    Attributes:
        events: The events visible to the caller, in id order.
        last_id: Where to resume (``after_id`` of the next call): the last event's id,
            or further when the caller may not see the events in between.
        more: True when more events may be read right away.
    """

    events: tuple[PresenceEvent, ...]
    last_id: int
    more: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionRecord:
    """One session of a user, from the log.

    Attributes:
        session_id: The session (connection) id.
        device: Its device label, if any.
        status: Its status when it started.
        started_at: When it started.
        ended_at: When it ended (None while it lasts).
        end_reason: ``leave``, ``timeout`` or ``evicted`` (None while it lasts).
    """

    session_id: uuid.UUID
    device: str | None
    status: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: EventReason | None


@dataclass(frozen=True, kw_only=True, slots=True)
class OnlineDay:
    """Time a user was online on one day (in the time zone asked for).

    Attributes:
        day: The calendar day.
        online: How long the user was online that day.
    """

    day: date
    online: timedelta


def _parsed(parse: Any) -> Any:
    def guarded(data: Any) -> Any:
        try:
            return parse(data)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            msg = f"unexpected response from the presence SQL: {data!r:.200}"
            raise RequestError(msg) from exc

    return guarded


def check_after_id(after_id: object) -> int:
    """``after_id`` if it is an event id or 0; InvalidInputError otherwise."""
    if isinstance(after_id, bool) or not isinstance(after_id, int):
        msg = f"after_id must be an integer event id (0: from the start), not {after_id!r:.50}"
        raise InvalidInputError(msg)
    if not 0 <= after_id <= MAX_EVENT_ID:
        msg = f"after_id must be from 0 to {MAX_EVENT_ID}, not {after_id}"
        raise InvalidInputError(msg)
    return after_id


def check_page_size(limit: object, *, name: str = "limit") -> int:
    """``limit`` if it is a page size from 1 to :data:`MAX_EVENT_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EVENT_PAGE:
        msg = f"{name} must be an integer from 1 to {MAX_EVENT_PAGE}, not {limit!r:.50}"
        raise InvalidInputError(msg)
    return limit


def events_since(after_id: int = 0, limit: int = 100) -> Query[EventPage]:
    """Events after ``after_id`` (at most ``limit``), as the caller may see them."""
    after = check_after_id(after_id)
    size = check_page_size(limit)

    def parse(data: Any) -> EventPage:
        return EventPage(
            events=tuple(PresenceEvent.from_row(row) for row in data["events"]),
            last_id=int(data["last_id"]),
            more=bool(data["more"]),
        )

    return Query("presence_events_since", {"after_id": after, "max_rows": size}, _parsed(parse))


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        msg = f"{name} must be a datetime, not {value!r:.50}"
        raise InvalidInputError(msg)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{name} must be timezone-aware (e.g. datetime.now(UTC)), not {value!r}"
        raise InvalidInputError(msg)
    return value


def session_history(
    user_id: UserId, start: datetime, end: datetime | None = None, limit: int = 100
) -> Query[list[SessionRecord]]:
    """The sessions of ``user_id`` overlapping ``[start, end)`` (end: now), oldest first.

    A signed-in user sees only their own sessions (service role: anyone's). The server
    refuses ranges longer than, or older than, the log's retention.
    """
    uid = to_user_id(user_id)
    begin = _aware(start, "start")
    stop = None if end is None else _aware(end, "end")
    if stop is not None and stop <= begin:
        msg = f"end ({stop.isoformat()}) must be after start ({begin.isoformat()})"
        raise InvalidInputError(msg)
    size = check_page_size(limit)

    def parse(data: Any) -> list[SessionRecord]:
        return [
            SessionRecord(
                session_id=uuid.UUID(str(row["session_id"])),
                device=row.get("device"),
                status=row.get("status"),
                started_at=_time(row["started_at"]),
                ended_at=None if row.get("ended_at") is None else _time(row["ended_at"]),
                end_reason=row.get("end_reason"),
            )
            for row in data
        ]

    params: dict[str, Any] = {
        "user_id": str(uid),
        "from_time": begin.isoformat(),
        "max_rows": size,
    }
    if stop is not None:
        params["to_time"] = stop.isoformat()
    return Query("presence_session_history", params, _parsed(parse))


def _day(value: object, name: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        msg = f"{name} must be a date (not a datetime), not {value!r:.50}"
        raise InvalidInputError(msg)
    return value


def online_per_day(
    user_id: UserId, first_day: date, last_day: date, time_zone: str = "UTC"
) -> Query[list[OnlineDay]]:
    """Time ``user_id`` was online on each day from ``first_day`` to ``last_day``.

    Days are calendar days in ``time_zone`` (an IANA name such as ``Europe/Paris``), so
    a day may have 23 or 25 hours. Exact from the log; respects its visibility.
    """
    uid = to_user_id(user_id)
    first, last = _day(first_day, "first_day"), _day(last_day, "last_day")
    if last < first:
        msg = f"last_day ({last}) must not be before first_day ({first})"
        raise InvalidInputError(msg)
    if not isinstance(time_zone, str) or not time_zone or len(time_zone) > 64:
        msg = f"time_zone must be an IANA time zone name, not {time_zone!r:.70}"
        raise InvalidInputError(msg)
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {time_zone!r} (use an IANA name such as 'Europe/Paris')"
        raise InvalidInputError(msg) from exc

    def parse(data: Any) -> list[OnlineDay]:
        return [
            OnlineDay(
                day=date.fromisoformat(str(row["day"])),
                online=timedelta(seconds=float(row["online_seconds"])),
            )
            for row in data
        ]

    params = {
        "user_id": str(uid),
        "from_day": first.isoformat(),
        "to_day": last.isoformat(),
        "time_zone": time_zone,
    }
    return Query("presence_online_per_day", params, _parsed(parse))
