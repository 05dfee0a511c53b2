"""Presence queries without I/O: validation before anything is sent, params, parsing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from presence_sdk import OnlinePage, Presence, StatusCounts
from presence_sdk import _queries as queries
from presence_sdk._exceptions import InvalidInputError, RequestError

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")
C = uuid.UUID("00000000-0000-4000-8000-00000000000c")
BEAT = "2025-01-02T03:04:05.5+00:00"


def row(user_id: uuid.UUID, status: str = "online", *, online: bool = True) -> dict[str, Any]:
    return {
        "user_id": str(user_id),
        "status": status if online else "offline",
        "online": online,
        "last_heartbeat": BEAT,
        "last_seen": BEAT,
        "online_since": BEAT if online else None,
    }


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "1234", 42, None, b"\x00" * 16, 1.5])
def test_bad_user_ids_are_rejected_before_io(bad: Any) -> None:
    for build in (queries.get, queries.is_online):
        with pytest.raises(InvalidInputError, match="UUID"):
            build(bad)
    with pytest.raises(InvalidInputError):
        queries.lookup([A, bad])
    with pytest.raises(InvalidInputError):
        queries.online_users(10, after=bad if bad is not None else "x")


def test_user_ids_are_normalized() -> None:
    assert queries.to_user_id(str(A).upper()) == A
    assert queries.to_user_id(A.hex) == A
    assert queries.get(str(A)).params == {"user_ids": [str(A)]}
    assert queries.is_online(A).params == {"user_id": str(A)}


def test_get_parses_a_row_or_reads_never_seen_as_offline() -> None:
    query = queries.get(A)
    assert query.fn == "presence_get"
    presence = query.parse([row(A, "away")])
    assert presence == Presence(
        user_id=A,
        status="away",
        online=True,
        last_heartbeat=datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
        last_seen=datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
        online_since=datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
    )
    unknown = query.parse([])
    assert unknown.user_id == A
    assert (unknown.status, unknown.online, unknown.last_heartbeat) == ("offline", False, None)


def test_is_online_parses_a_boolean() -> None:
    query = queries.is_online(A)
    assert query.fn == "presence_is_online"
    assert query.parse(True) is True
    assert query.parse(False) is False
    with pytest.raises(RequestError, match="unexpected response"):
        query.parse("yes")


def test_lookup_keeps_the_order_asked_dedupes_and_omits_missing() -> None:
    query = queries.lookup([C, str(A), C, B])
    assert query.fn == "presence_get"
    assert query.params == {"user_ids": [str(C), str(A), str(B)]}
    result = query.parse([row(C), row(B, online=False)])
    assert list(result) == [C, B]
    assert result[B].status == "offline"
    assert A not in result


def test_lookup_limits() -> None:
    ids = [uuid.uuid4() for _ in range(queries.MAX_LOOKUP_IDS)]
    assert len(queries.lookup(ids).params["user_ids"]) == 1000
    assert len(queries.lookup(ids + ids[:5]).params["user_ids"]) == 1000  # duplicates are free
    with pytest.raises(InvalidInputError, match="at most 1000"):
        queries.lookup([*ids, uuid.uuid4()])
    empty = queries.lookup(iter(()))
    assert empty.fn is None
    assert empty.parse(None) == {}


@pytest.mark.parametrize("bad", [str(A), A, 5, None, b"ids"])
def test_lookup_needs_an_iterable_of_ids(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="iterable"):
        queries.lookup(bad)


@pytest.mark.parametrize("limit", [0, -1, 1001, 2.5, "10", True, None])
def test_online_users_limit_range(limit: Any) -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        queries.online_users(limit)


def test_online_users_pages_by_keyset() -> None:
    first = queries.online_users(2)
    assert first.fn == "presence_list_online"
    assert first.params == {"page_size": 2, "after_user_id": None}
    page = first.parse([row(A), row(B, "busy")])
    assert isinstance(page, OnlinePage)
    assert [p.user_id for p in page] == [A, B]
    assert len(page) == 2
    assert page.next_after == B  # a full page: there may be more

    second = queries.online_users(2, after=page.next_after)
    assert second.params == {"page_size": 2, "after_user_id": str(B)}
    last = second.parse([row(C)])
    assert last.next_after is None
    assert queries.online_users(1000).params["page_size"] == 1000


def test_counts_parses_the_json_object() -> None:
    query = queries.counts()
    assert query.fn == "presence_counts"
    counts = query.parse({"online": 3, "away": 1, "busy": 2, "offline": 10})
    assert counts == StatusCounts(online=3, away=1, busy=2, offline=10)
    assert (counts.present, counts.total) == (6, 16)
    with pytest.raises(RequestError):
        query.parse({"online": 1})


def test_malformed_rows_become_request_errors() -> None:
    with pytest.raises(RequestError, match="unexpected response"):
        queries.get(A).parse({"not": "a list"})
    with pytest.raises(RequestError):
        queries.online_users().parse([{"user_id": "nope"}])
