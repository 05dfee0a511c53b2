"""Presence privacy queries without I/O: validation before anything is sent, params,
parsing of the settings the RPCs return."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from presence_sdk import PrivacySettings
from presence_sdk import _privacy as privacy
from presence_sdk._exceptions import InvalidInputError, RequestError

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def answer(**over: Any) -> dict[str, Any]:
    return {
        "user_id": str(A),
        "invisible": False,
        "invisible_since": None,
        "presence": "everyone",
        "last_seen": "everyone",
    } | over


def test_set_visibility_sends_only_what_changes() -> None:
    query = privacy.set_visibility(presence="contacts")
    assert (query.fn, dict(query.params)) == ("presence_set_visibility", {"presence": "contacts"})
    both = privacy.set_visibility(presence="nobody", last_seen="contacts")
    assert dict(both.params) == {"presence": "nobody", "last_seen": "contacts"}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"presence": "friends"}, {"last_seen": "Everyone"}, {"presence": ""}, {"presence": 1}],
)
def test_bad_visibility_is_refused_before_io(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        privacy.set_visibility(**kwargs)


@pytest.mark.parametrize("bad", [None, 1, "yes", 0])
def test_invisible_must_be_a_bool(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="True or False"):
        privacy.set_invisible(bad)
    with pytest.raises(InvalidInputError, match="True or False"):
        privacy.set_invisible_for([A], bad)


def test_settings_are_parsed() -> None:
    since = "2025-01-02T03:04:05+00:00"
    query = privacy.set_invisible(True)
    assert (query.fn, dict(query.params)) == ("presence_set_invisible", {"invisible": True})
    got = query.parse(answer(invisible=True, invisible_since=since, last_seen="nobody"))
    assert got == PrivacySettings(
        user_id=A,
        invisible=True,
        invisible_since=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        presence="everyone",
        last_seen="nobody",
    )
    assert privacy.my_privacy().fn == "presence_my_privacy"


@pytest.mark.parametrize(
    "bad", [None, [], {}, answer(presence="friends"), {"user_id": "x"}, answer(user_id=None)]
)
def test_unexpected_answers_are_request_errors(bad: Any) -> None:
    with pytest.raises(RequestError, match="unexpected response"):
        privacy.my_privacy().parse(bad)


def test_set_invisible_for_dedups_and_checks_ids_before_io() -> None:
    query = privacy.set_invisible_for([A, str(A), B], True)
    assert query.fn == "presence_set_invisible_for"
    assert dict(query.params) == {"user_ids": [str(A), str(B)], "invisible": True}
    assert query.parse({"changed": 2, "at": "2025-01-01T00:00:00+00:00"}) == 2
    assert privacy.set_invisible_for([], False).fn is None  # nothing to ask
    assert privacy.set_invisible_for([], False).parse(None) == 0
    for bad in ("not-a-list", A, [A, "nope"], 5):
        with pytest.raises(InvalidInputError):
            privacy.set_invisible_for(bad, True)  # type: ignore[arg-type]
    many = (uuid.UUID(int=i) for i in range(privacy.MAX_INVISIBLE_BATCH + 1))
    with pytest.raises(InvalidInputError, match="at most 10000"):
        privacy.set_invisible_for(many, True)
    with pytest.raises(RequestError):
        query.parse({"count": 1})
