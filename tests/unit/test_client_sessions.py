"""Per-client presence sessions: ids, device/metadata, and the 0.1-database fallback
(real supabase-py, the network mocked with respx)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from client_support import (
    FAST,
    async_supabase,
    async_wait_until,
    mock_server,
    ok,
    pgrst_error,
    sync_supabase,
    user_token,
    wait_until,
)

from presence_sdk import AsyncPresenceClient, InvalidInputError, PresenceClient, PresenceState
from presence_sdk._core import Call, Driver, RunControl
from presence_sdk._exceptions import NotInstalledError
from presence_sdk._heartbeat import Heartbeat

MISSING = {"status": 404, "code": "PGRST202", "message": "Could not find the function"}


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with mock_server() as router:
        yield router


def body(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "presence_heartbeat()/" in r.getMessage()
    ]


def test_each_client_is_a_session_of_its_own() -> None:
    supabase = sync_supabase(user_token())
    first, second = PresenceClient(supabase), PresenceClient(supabase)
    assert isinstance(first.session_id, uuid.UUID)
    assert first.session_id != second.session_id
    pinned = uuid.uuid4()
    assert PresenceClient(supabase, session_id=str(pinned)).session_id == pinned
    assert str(pinned) in repr(PresenceClient(supabase, session_id=pinned))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"session_id": "not-a-uuid"}, "session_id must be a UUID"),
        ({"session_id": 42}, "session_id must be a UUID"),
        ({"device": ""}, "device must be 1 to 64 characters"),
        ({"device": "x" * 65}, "device must be 1 to 64 characters"),
        ({"device": 7}, "device must be a string"),
        ({"device": "a\x00b"}, "NUL"),
        ({"metadata": ["not", "an", "object"]}, "metadata must be a JSON object"),
        ({"metadata": {"blob": "x" * 1100}}, "at most 1024 bytes"),
        ({"metadata": {"n": float("nan")}}, "NaN"),
        ({"metadata": {1: "int key"}}, "keys must be strings"),
        ({"metadata": {"obj": object()}}, "JSON-serialisable"),
        ({"metadata": {"text": "a\x00"}}, "NUL"),
    ],
)
def test_bad_session_input_raises_at_construction(
    server: respx.MockRouter, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        PresenceClient(sync_supabase(user_token()), **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        AsyncPresenceClient(async_supabase(user_token()), **kwargs)
    assert not any(route.called for route in server.routes)


def test_metadata_size_is_measured_as_postgres_prints_jsonb() -> None:
    # 1024 bytes exactly as jsonb text ({"k": "..."} with ": "), multi-byte characters
    # counted in UTF-8 bytes: accepted; one byte more: refused.
    text = "é" * 507 + "a"  # 2 * 507 + 1 bytes, plus 9 for {"k": ""}
    fits = {"k": text}
    assert len(json.dumps(fits, ensure_ascii=False).encode()) == 1024
    assert PresenceClient(sync_supabase(), metadata=fits).metadata == fits
    with pytest.raises(InvalidInputError, match="not 1025"):
        PresenceClient(sync_supabase(), metadata={"k": text + "x"})


def test_beats_and_leave_carry_the_session(server: respx.MockRouter) -> None:
    metadata = {"app": "web", "tab": 3}
    presence = PresenceClient(
        sync_supabase(user_token()), config=FAST, device="firefox", metadata=metadata
    )
    metadata["tab"] = 4  # the client keeps its own copy
    with presence:
        wait_until(lambda: server["heartbeat"].call_count >= 2)
    sid = str(presence.session_id)
    assert body(server["heartbeat"], 0) == {
        "session_id": sid,
        "new_status": "online",
        "device": "firefox",
        "metadata": {"app": "web", "tab": 3},
    }
    assert body(server["heartbeat"], 1)["session_id"] == sid  # the same session all along
    assert body(server["leave"]) == {"session_id": sid}
    assert not server["legacy_heartbeat"].called
    assert not server["legacy_leave"].called
    assert presence.device == "firefox"
    assert presence.metadata == {"app": "web", "tab": 3}


def test_a_0_1_database_gets_the_per_user_rpcs_with_one_warning(
    server: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    server["heartbeat"].mock(return_value=pgrst_error(**MISSING))
    server["leave"].mock(return_value=pgrst_error(**MISSING))
    presence = PresenceClient(sync_supabase(user_token()), config=FAST)
    with caplog.at_level(logging.WARNING, logger="presence_sdk"):
        with presence:
            wait_until(lambda: server["legacy_heartbeat"].call_count >= 3)
            assert presence.state is PresenceState.ONLINE
            assert presence.stats.beats_failed == 0
        # Probed once per run, not per beat; the leave matches the beats.
        assert server["heartbeat"].call_count == 1
        assert server["legacy_leave"].call_count == 1
        assert not server["leave"].called
        assert body(server["legacy_heartbeat"]) == {"new_status": "online"}
        assert len(fallback_warnings(caplog)) == 1

        # A later run probes again (the database may have been migrated meanwhile)...
        with presence:
            wait_until(lambda: server["heartbeat"].call_count == 2)
            wait_until(lambda: server["legacy_heartbeat"].call_count >= 4)
        assert len(fallback_warnings(caplog)) == 1  # ...but warns once per client

        # ...and uses the sessions as soon as they are there.
        server["heartbeat"].mock(return_value=ok())
        legacy_before = server["legacy_heartbeat"].call_count
        with presence:
            wait_until(lambda: server["heartbeat"].call_count >= 4)
        assert server["legacy_heartbeat"].call_count == legacy_before
        assert body(server["leave"]) == {"session_id": str(presence.session_id)}


@pytest.mark.asyncio
async def test_async_client_falls_back_too(
    server: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    server["heartbeat"].mock(return_value=pgrst_error(**MISSING))
    with caplog.at_level(logging.WARNING, logger="presence_sdk"):
        async with AsyncPresenceClient(async_supabase(user_token()), config=FAST) as presence:
            await async_wait_until(lambda: server["legacy_heartbeat"].call_count >= 2)
            assert presence.state is PresenceState.ONLINE
    assert server["heartbeat"].call_count == 1
    assert server["legacy_leave"].call_count == 1
    assert len(fallback_warnings(caplog)) == 1


def test_leave_falls_back_when_only_the_session_leave_is_missing() -> None:
    # A database rolled back between the last beat and the stop: the leave still ends
    # the user's presence through 0.1's presence_leave, within the stop deadline.
    engine = Heartbeat(FAST)
    control = RunControl()
    engine.request_stop(control)
    driver = Driver(engine.leave(control))
    sent: list[Call] = []
    for effect in driver:
        assert isinstance(effect, Call)
        sent.append(effect)
        if effect.fn == "presence_session_leave":
            driver.fail(NotInstalledError("missing", code="PGRST202"))
        else:
            driver.reply("2025-01-02T03:04:05Z")
    assert [c.fn for c in sent] == ["presence_session_leave", "presence_leave"]
    assert engine.stats().last_error is None
