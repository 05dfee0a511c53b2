"""Defect 2: a server-imposed wait (``Retry-After``) is capped and ends with a success.

0.1.0 honoured any ``Retry-After``: one 429 asking for a day silenced the heartbeat
for a day (the server timed the user out after 45 s while the client said ONLINE),
and a later successful beat (``set_status()``) did not clear it.

Timings: interval 0.2 s, timeout 0.6 s, so a wait may end at most
``timeout - interval`` = 0.4 s after the last accepted beat (or after the 429).
"""

from __future__ import annotations

import logging
import time

import pytest
from client_support import async_wait_until, wait_until
from hardening_support import async_client, quick, sync_client
from misbehaving_server import MisbehavingServer, status

from presence_sdk import PresenceState

A_DAY = status(429, message="slow down", retry_after="86400")
CONFIG = quick(timeout=0.6)
#: A wait capped at 1.8 s: far from the 0.2 s interval that a cleared wait gives back.
LONG_TIMEOUT = quick(timeout=2.0)


def _beats(server: MisbehavingServer) -> int:
    return len(server.seen("presence_session_beat"))


def _capping_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "Retry-After" in r.getMessage()]


def test_sync_retry_after_is_capped_below_the_timeout(
    misbehaving: MisbehavingServer, caplog: pytest.LogCaptureFixture
) -> None:
    misbehaving.then("presence_session_beat", A_DAY, A_DAY)
    caplog.set_level(logging.DEBUG, logger="presence_sdk")
    with sync_client(misbehaving, CONFIG) as presence:
        started = time.monotonic()
        wait_until(lambda: presence.state is PresenceState.ONLINE, timeout=4.0)
        # Two capped waits of 0.4 s instead of two days.
        assert time.monotonic() - started < 2.0
        assert presence.stats.beats_failed == 2
    levels = [r.levelno for r in _capping_logs(caplog)]
    assert levels == [logging.WARNING, logging.DEBUG]  # said once, loudly


def test_sync_a_successful_beat_clears_the_server_imposed_wait(
    misbehaving: MisbehavingServer,
) -> None:
    with sync_client(misbehaving, LONG_TIMEOUT) as presence:
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        misbehaving.then("presence_session_beat", A_DAY)
        wait_until(lambda: presence.state is PresenceState.DEGRADED)
        presence.set_status("away")  # forces a beat now; the server accepts it
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        after = _beats(misbehaving)
        # Beats go on every interval again (0.2 s), not after the capped 1.8 s wait.
        wait_until(lambda: _beats(misbehaving) >= after + 3, timeout=1.2)


@pytest.mark.asyncio
async def test_async_retry_after_is_capped_below_the_timeout(
    misbehaving: MisbehavingServer,
) -> None:
    misbehaving.then("presence_session_beat", A_DAY, A_DAY)
    async with async_client(misbehaving, CONFIG) as presence:
        started = time.monotonic()
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE, within=4.0)
        assert time.monotonic() - started < 2.0
        assert presence.stats.beats_failed == 2


@pytest.mark.asyncio
async def test_async_a_successful_beat_clears_the_server_imposed_wait(
    misbehaving: MisbehavingServer,
) -> None:
    async with async_client(misbehaving, LONG_TIMEOUT) as presence:
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
        misbehaving.then("presence_session_beat", A_DAY)
        await async_wait_until(lambda: presence.state is PresenceState.DEGRADED)
        presence.set_status("busy")
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
        after = _beats(misbehaving)
        await async_wait_until(lambda: _beats(misbehaving) >= after + 3, within=1.2)
