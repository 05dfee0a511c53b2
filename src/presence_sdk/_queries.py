"""Presence queries without I/O: validate input, build RPC parameters, parse results.

Every builder raises :class:`~presence_sdk.InvalidInputError` for bad input before
anything is sent, and returns a :class:`Query` (RPC name, parameters, parser) that the
sync and async clients run the same way. The SQL behind them (``presence_get``,
``presence_is_online``, ``presence_list_online``, ``presence_counts``) derives presence
at read time and runs with the caller's rights, so results respect RLS.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from presence_sdk._exceptions import InvalidInputError, RequestError
from presence_sdk._models import OnlinePage, Presence, StatusCounts

__all__ = [
    "MAX_LOOKUP_IDS",
    "MAX_PAGE_SIZE",
    "Query",
    "UserId",
    "counts",
    "get",
    "is_online",
    "lookup",
    "online_users",
    "to_user_id",
]

T = TypeVar("T")

#: A user id: a :class:`uuid.UUID` or its text form.
UserId = uuid.UUID | str

#: Most ids one :func:`lookup` may ask for (``presence_get`` refuses more).
MAX_LOOKUP_IDS: Final = 1000

#: Largest page of :func:`online_users` (``presence_list_online`` refuses more).
MAX_PAGE_SIZE: Final = 1000


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One read: call ``fn`` with ``params`` and turn its JSON into ``T`` with ``parse``.

    ``fn`` is None when there is nothing to ask the server (``parse(None)`` is the answer).
    """

    fn: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], T] = field(default=lambda data: data)


def to_user_id(value: object, *, name: str = "user_id") -> uuid.UUID:
    """``value`` as a UUID; InvalidInputError for anything else."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    msg = f"{name} must be a UUID, not {value!r}"
    raise InvalidInputError(msg)


def _parsed(parse: Callable[[Any], T]) -> Callable[[Any], T]:
    def guarded(data: Any) -> T:
        try:
            return parse(data)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            msg = f"unexpected response from the presence SQL: {data!r:.200}"
            raise RequestError(msg) from exc

    return guarded


def _never_seen(user_id: uuid.UUID) -> Presence:
    return Presence(
        user_id=user_id, status="offline", online=False, last_heartbeat=None, last_seen=None
    )


def _rows(data: Any) -> list[Presence]:
    if not isinstance(data, list):
        raise TypeError(data)
    return [Presence.from_row(row) for row in data]


def get(user_id: UserId) -> Query[Presence]:
    """The presence of one user.

    A user that does not exist or that the caller may not see (RLS) reads as offline
    and never seen (``last_heartbeat`` None), like ``presence_is_online`` answers false.
    """
    uid = to_user_id(user_id)

    def parse(data: Any) -> Presence:
        rows = _rows(data)
        return rows[0] if rows else _never_seen(uid)

    return Query("presence_get", {"user_ids": [str(uid)]}, _parsed(parse))


def is_online(user_id: UserId) -> Query[bool]:
    """Whether one user is online now (false for unknown or invisible users)."""
    uid = to_user_id(user_id)

    def parse(data: Any) -> bool:
        if not isinstance(data, bool):
            raise TypeError(data)
        return data

    return Query("presence_is_online", {"user_id": str(uid)}, _parsed(parse))


def lookup(user_ids: Iterable[UserId]) -> Query[dict[uuid.UUID, Presence]]:
    """The presence of many users in one round trip.

    Returns a dict in the order asked (duplicates asked once); ids the server does not
    know, or that the caller may not see, are left out. At most
    :data:`MAX_LOOKUP_IDS` distinct ids; an empty input asks nothing.
    """
    if isinstance(user_ids, str | bytes | uuid.UUID) or not isinstance(user_ids, Iterable):
        msg = f"user_ids must be an iterable of UUIDs, not {user_ids!r:.100}"
        raise InvalidInputError(msg)
    wanted: dict[uuid.UUID, None] = {}
    for value in user_ids:
        wanted[to_user_id(value, name="each of user_ids")] = None
        if len(wanted) > MAX_LOOKUP_IDS:
            msg = f"at most {MAX_LOOKUP_IDS} user ids per lookup (split the list)"
            raise InvalidInputError(msg)
    if not wanted:
        return Query(None, {}, lambda _: {})

    def parse(data: Any) -> dict[uuid.UUID, Presence]:
        return {p.user_id: p for p in _rows(data)}

    return Query("presence_get", {"user_ids": [str(u) for u in wanted]}, _parsed(parse))


def online_users(limit: int = 100, after: UserId | None = None) -> Query[OnlinePage]:
    """One page of online users ordered by id (keyset pagination).

    Args:
        limit: Page size, 1 to :data:`MAX_PAGE_SIZE`.
        after: Start after this user id: the previous page's ``next_after``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        msg = f"limit must be an integer from 1 to {MAX_PAGE_SIZE}, not {limit!r}"
        raise InvalidInputError(msg)
    start = None if after is None else str(to_user_id(after, name="after"))

    def parse(data: Any) -> OnlinePage:
        users = tuple(_rows(data))
        last = users[-1].user_id if len(users) == limit else None
        return OnlinePage(users=users, next_after=last)

    params = {"page_size": limit, "after_user_id": start}
    return Query("presence_list_online", params, _parsed(parse))


def counts() -> Query[StatusCounts]:
    """Number of visible users per effective status, exact now (offline may be an
    estimate on big tables: ``offline_estimated``)."""

    def parse(data: Any) -> StatusCounts:
        return StatusCounts(
            online=int(data["online"]),
            away=int(data["away"]),
            busy=int(data["busy"]),
            offline=int(data["offline"]),
            offline_estimated=bool(data.get("offline_estimated", False)),
        )

    return Query("presence_counts", {}, _parsed(parse))
