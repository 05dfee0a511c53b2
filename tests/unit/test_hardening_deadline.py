"""Defect 4: ``request_timeout`` bounds the whole request in the sync client too.

httpx's timeouts are per network operation: a response body trickled a byte a second
never trips them. 0.1.0's sync heartbeat stayed stuck in STARTING for minutes with 0
beats and 0 errors (the async client was bounded by ``asyncio.timeout``).
"""

from __future__ import annotations

import time

import pytest
from client_support import async_wait_until, wait_until
from hardening_support import async_client, quick, sync_client
from misbehaving_server import MisbehavingServer, trickle

from presence_sdk import PresenceState
from presence_sdk._exceptions import TransientError

#: A heartbeat answer that takes 30 s to arrive, a byte every 0.1 s: each read returns
#: well within httpx's per-read timeout (``request_timeout``, 0.5 s).
SLOW_BODY = trickle(b'"2025-01-02T03:04:05.123456+00:00"' + b" " * 266, per_second=10.0)
CONFIG = quick(interval=5.0, timeout=20.0, request_timeout=0.5, max_attempts=1)


def test_sync_heartbeat_gives_up_on_a_trickling_response(misbehaving: MisbehavingServer) -> None:
    misbehaving.then("presence_session_beat", SLOW_BODY)
    errors: list[BaseException] = []
    with sync_client(misbehaving, CONFIG, on_error=errors.append) as presence:
        started = time.monotonic()
        wait_until(lambda: presence.stats.beats_failed == 1, timeout=3.0)
        assert time.monotonic() - started < 1.5  # 0.5 s, not a minute
        assert presence.state is PresenceState.DEGRADED
        wait_until(lambda: bool(errors))
        assert isinstance(errors[0], TransientError)
        assert "timed out" in str(errors[0])
        # The request was aborted, not left running: the server saw the client go.
        wait_until(lambda: misbehaving.aborted == ["trickle"], timeout=2.0)


def test_sync_beat_and_queries_are_bounded_too(misbehaving: MisbehavingServer) -> None:
    misbehaving.then("presence_session_beat", SLOW_BODY)
    misbehaving.then("presence_counts", SLOW_BODY)
    presence = sync_client(misbehaving, CONFIG)
    try:
        for call in (presence.beat, presence.counts):
            started = time.monotonic()
            with pytest.raises(TransientError, match="timed out"):
                call()
            assert time.monotonic() - started < 1.5
        assert presence.beat() is not None  # the next request is served normally
    finally:
        presence.close()


@pytest.mark.asyncio
async def test_async_heartbeat_gives_up_on_a_trickling_response(
    misbehaving: MisbehavingServer,
) -> None:
    misbehaving.then("presence_session_beat", SLOW_BODY)
    async with async_client(misbehaving, CONFIG) as presence:
        started = time.monotonic()
        await async_wait_until(lambda: presence.stats.beats_failed == 1, within=3.0)
        assert time.monotonic() - started < 1.5
        assert presence.state is PresenceState.DEGRADED
