"""The four smaller hardening items of the same review.

* an AsyncPresenceClient used from a second event loop (0.1.0: RuntimeError "bound to
  a different event loop" once its lock had been contended in the first);
* a heartbeat answer that is not the server's time (0.1.0: a 200 with HTML meant
  FAILED with a 300 s backoff, a 200 with other JSON or no body counted as a beat);
* ``stats.retries`` counting a failed session refresh as a retry (none was sent);
* server settings outside sane bounds (a broken proxy) used as they came.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from client_support import async_wait_until, wait_until
from hardening_support import async_client, quick, sync_client
from misbehaving_server import MisbehavingServer, body, json_answer, status

from presence_sdk import ConfigurationError, PresenceClient, PresenceError, PresenceState
from presence_sdk._exceptions import AuthenticationError, TransientError

# -- a second event loop ------------------------------------------------------------


def test_async_client_works_in_a_second_event_loop(misbehaving: MisbehavingServer) -> None:
    presence = async_client(misbehaving)

    async def contended() -> None:
        # Two beats at once: the second waits for the client's lock, binding it to
        # this loop; then a run, stopped, and the connections released in this loop.
        first, second = await asyncio.gather(presence.beat(), presence.beat())
        assert first is not None
        assert second is not None
        async with presence:
            await async_wait_until(lambda: presence.state is PresenceState.ONLINE)

    asyncio.run(contended())
    asyncio.run(contended())  # 0.1.0: RuntimeError (lock bound to the first loop)
    assert presence.stats.beats_sent >= 6


def test_async_client_in_use_in_another_loop_is_a_clear_error(
    misbehaving: MisbehavingServer,
) -> None:
    presence = async_client(misbehaving, quick(interval=5.0, timeout=20.0))
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(presence.start())  # running in the first loop

        async def from_second_loop() -> None:
            with pytest.raises(ConfigurationError, match="another event loop"):
                await presence.beat()

        asyncio.run(from_second_loop())
        first.run_until_complete(presence.close())
    finally:
        first.close()


# -- answers that are not the server's time --------------------------------------------

NOT_A_TIMESTAMP = {
    "html-200": body(b"<html><body>Welcome to the hotel wifi</body></html>"),
    "json-object-200": json_answer({"ok": True}),
    "empty-200": body(b"", content_type="application/json"),
    "number-200": json_answer(42),
}


@pytest.mark.parametrize("answer", sorted(NOT_A_TIMESTAMP))
def test_sync_a_heartbeat_answer_that_is_not_a_timestamp_is_transient(
    misbehaving: MisbehavingServer, answer: str
) -> None:
    misbehaving.always("presence_session_beat", NOT_A_TIMESTAMP[answer])
    errors: list[PresenceError] = []
    with sync_client(misbehaving, quick(max_attempts=2), on_error=errors.append) as presence:
        # Reported, retried and beaten again on the normal schedule (0.2 s): no
        # long backoff, never a beat.
        wait_until(lambda: len(errors) >= 2, timeout=1.5)
        assert presence.state is PresenceState.DEGRADED
        stats = presence.stats
        assert stats.beats_sent == 0
        assert stats.retries >= 2
    assert all(isinstance(error, TransientError) for error in errors)


@pytest.mark.asyncio
@pytest.mark.parametrize("answer", ["empty-200", "html-200"])
async def test_async_a_heartbeat_answer_that_is_not_a_timestamp_is_transient(
    misbehaving: MisbehavingServer, answer: str
) -> None:
    misbehaving.always("presence_session_beat", NOT_A_TIMESTAMP[answer])
    errors: list[PresenceError] = []
    config = quick(max_attempts=2)
    async with async_client(misbehaving, config, on_error=errors.append) as presence:
        await async_wait_until(lambda: len(errors) >= 2, within=1.5)
        assert presence.state is PresenceState.DEGRADED
        assert presence.stats.beats_sent == 0
    assert all(isinstance(error, TransientError) for error in errors)


# -- retries counted ------------------------------------------------------------------


def test_a_failed_session_refresh_is_not_counted_as_a_retry(
    misbehaving: MisbehavingServer,
) -> None:
    misbehaving.always("presence_session_beat", status(401, code="PGRST301", message="JWT expired"))
    misbehaving.always(
        "/auth/v1/token",
        json_answer({"error": "invalid_grant", "error_description": "bad refresh"}, 400),
    )
    presence = sync_client(misbehaving, refresh_token="refresh-1")
    try:
        with pytest.raises(AuthenticationError, match="JWT expired"):
            presence.beat()
        assert len(misbehaving.seen("/auth/v1/token")) == 1  # the refresh was tried...
        assert len(misbehaving.seen("presence_session_beat")) == 1  # ...no retry was sent
        assert presence.stats.retries == 0
    finally:
        presence.close()


# -- insane server settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "interval"),
    [
        ({"heartbeat_interval_seconds": -1, "timeout_seconds": 3}, 1.0),  # default: t/3
        ({"heartbeat_interval_seconds": 0, "timeout_seconds": 3}, 1.0),
        ({"heartbeat_interval_seconds": 100, "timeout_seconds": 3}, 1.5),  # at most t/2
        ({"heartbeat_interval_seconds": 0.001, "timeout_seconds": 3}, 1.0),  # at least 1 s
    ],
)
def test_insane_server_settings_are_clamped_and_logged_once(
    misbehaving: MisbehavingServer,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    interval: float,
) -> None:
    misbehaving.always("presence_settings", json_answer(settings))
    caplog.set_level(logging.WARNING, logger="presence_sdk")
    config = quick(interval=None, timeout=None)  # the server's timings
    presence = PresenceClient.from_url(
        misbehaving.url, misbehaving.anon_key, access_token="x", config=config
    )
    with presence:
        wait_until(lambda: len(misbehaving.seen("presence_settings")) == 1)
        wait_until(lambda: presence.stats.timeout == 3.0)
        assert presence.stats.interval == interval
        presence.set_status("away")  # one more beat: still one warning
        wait_until(lambda: len(misbehaving.seen("presence_session_beat")) >= 2)
    beats = len(misbehaving.seen("presence_session_beat"))
    assert beats <= 3  # no hot loop
    clamped = [r for r in caplog.records if "presence_settings()" in r.getMessage()]
    assert len(clamped) == 1
