"""What the service-role batch RPCs answer, read without I/O: results, and the
errors that name the entries at fault.

``presence_track_beat`` is all or nothing. When it refuses a call because of some of
its entries, the sessions migration says which in the error: ``PT409`` "N sessions
belong to other users" with DETAIL ``<sid> (given user <uid>); ...``; ``23503`` "N
user ids have no public.users row" with DETAIL ``unknown: <uid>, ...``; ``22023`` "N of
M session entries are invalid" with DETAIL ``#<position>: <problem>; ...``. Each
DETAIL names at most five; the message counts them all. A call over the server's
limit is refused with ``22023`` "at most N sessions per call".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from presence_sdk._exceptions import RejectedError, TransientError
from presence_sdk._models import _parse_time

__all__ = ["Offenders", "TrackResult", "batch_limit", "offenders", "parse_track_result"]

_COUNT = re.compile(r"presence: (\d+) ")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OTHER_USERS_SESSION = re.compile(rf"({_UUID.pattern}) \(given user")
_ENTRY_NUMBER = re.compile(r"#(\d+):")
_MAX_PER_CALL = re.compile(r"at most (\d+) sessions per call")


@dataclass(frozen=True, slots=True)
class TrackResult:
    """What a batch RPC answered: the server's time and how many sessions it took."""

    at: datetime
    count: int


def parse_track_result(value: Any, time_key: str) -> TrackResult:
    """``{"<time_key>": timestamp, "count": n}``; TransientError for anything else
    (a 2xx that is not the presence SQL's answer: a proxy, a captive portal)."""
    if isinstance(value, Mapping):
        try:
            at = _parse_time(value[time_key])
            count = value["count"]
            if at is not None and isinstance(count, int) and not isinstance(count, bool):
                return TrackResult(at, count)
        except (KeyError, TypeError, ValueError):
            pass
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    msg = (
        f"the server answered a batch call with {shown}, not the presence SQL's "
        f'{{"{time_key}": ..., "count": ...}} (is something else answering in '
        "PostgREST's place?)"
    )
    raise TransientError(msg)


@dataclass(frozen=True, slots=True)
class Offenders:
    """The entries of one refused call that its error names.

    Attributes:
        sessions: Session ids named (other users' sessions, invalid entries).
        users: User ids named (unknown users: all their sessions are at fault).
        all_named: Whether the error named every offender (else more remain).
    """

    sessions: frozenset[uuid.UUID]
    users: frozenset[uuid.UUID]
    all_named: bool


def batch_limit(error: RejectedError) -> int | None:
    """The server's sessions-per-call limit, if ``error`` is that refusal."""
    match = _MAX_PER_CALL.search(error.message)
    if error.code != "22023" or match is None or int(match[1]) < 1:
        return None
    return int(match[1])


def offenders(
    error: RejectedError, sent: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> Offenders | None:
    """The entries of ``sent`` ((session id, user id) in the order sent) that ``error``
    names, or None if it is not about entries or names none of them."""
    detail = error.details or ""
    count_match = _COUNT.search(error.message)
    count = int(count_match[1]) if count_match else None
    if error.code == "PT409" and "belong to other users" in error.message:
        named = {uuid.UUID(m) for m in _OTHER_USERS_SESSION.findall(detail)}
        sessions = frozenset(sid for sid, _ in sent if sid in named)
        found = _found(sessions, frozenset(), count, len(sessions))
    elif error.code == "23503" and "public.users" in error.message:
        named = {uuid.UUID(m) for m in _UUID.findall(detail)}
        users = frozenset(uid for _, uid in sent if uid in named)
        found = _found(frozenset(), users, count, len(users))
    elif error.code == "22023" and "session entries are invalid" in error.message:
        positions = {int(m) for m in _ENTRY_NUMBER.findall(detail)}
        sessions = frozenset(sent[p - 1][0] for p in positions if 1 <= p <= len(sent))
        found = _found(sessions, frozenset(), count, len(sessions))
    else:
        return None
    if not found.sessions and not found.users:
        return None  # names nothing we sent: cannot tell which entries are at fault
    return found


def _found(
    sessions: frozenset[uuid.UUID], users: frozenset[uuid.UUID], count: int | None, named: int
) -> Offenders:
    return Offenders(sessions, users, count is not None and count <= named)
