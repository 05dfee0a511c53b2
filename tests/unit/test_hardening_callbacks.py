"""Defect 5: callbacks may call any public method without deadlock or stall.

0.1.0's ``stop()`` held the client lock while joining the heartbeat thread; a callback
on that thread (``on_error`` for a failed leave, ``on_state_change(STOPPED)``) that
called ``stop()``/``start()``/``beat()`` blocked on the lock, and the app's own
``stop()`` stalled for the whole ``stop_timeout`` ("gave up waiting (network slow?)").
A ``stop()`` from the ``STARTING`` callback was lost (the run went on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from client_support import wait_until
from hardening_support import heartbeat_threads, quick, sync_client
from misbehaving_server import MisbehavingServer, status

from presence_sdk import PresenceClient, PresenceError, PresenceState

#: A stop_timeout long enough that a stall cannot hide in the noise.
CONFIG = quick(interval=5.0, timeout=20.0, stop_timeout=3.0)


def _stop_takes(presence: PresenceClient) -> float:
    started = time.monotonic()
    presence.stop()
    return time.monotonic() - started


def test_on_error_calling_stop_does_not_stall_the_apps_stop(
    misbehaving: MisbehavingServer, caplog: pytest.LogCaptureFixture
) -> None:
    misbehaving.always("presence_session_leave", status(500, message="database down"))
    seen: list[PresenceError] = []

    def on_error(error: PresenceError) -> None:
        seen.append(error)
        presence.stop()  # e.g. "give up on presence when anything goes wrong"

    presence = sync_client(misbehaving, CONFIG, on_error=on_error)
    try:
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        assert _stop_takes(presence) < 1.0  # 0.1.0: the whole stop_timeout (3 s)
        assert seen  # the failed leave was reported, and its callback returned
        assert presence.state is PresenceState.STOPPED
        assert not any("gave up waiting" in r.getMessage() for r in caplog.records)
    finally:
        presence.close()


@pytest.mark.parametrize("action", ["start", "beat", "stop", "set_status"])
def test_on_state_change_stopped_may_call_any_method(
    misbehaving: MisbehavingServer, action: str
) -> None:
    done: list[str] = []

    def on_state_change(old: PresenceState, new: PresenceState) -> None:
        if new is PresenceState.STOPPED and not done:
            done.append(action)
            method: Callable[..., object] = getattr(presence, action)
            method("away") if action == "set_status" else method()

    presence = sync_client(misbehaving, CONFIG, on_state_change=on_state_change)
    try:
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        assert _stop_takes(presence) < 1.0
        wait_until(lambda: done == [action])
        if action == "start":  # the callback restarted the client
            wait_until(lambda: presence.state is PresenceState.ONLINE)
    finally:
        presence.close()
    wait_until(lambda: not heartbeat_threads())


def test_stop_from_the_starting_callback_is_not_lost(misbehaving: MisbehavingServer) -> None:
    def on_state_change(old: PresenceState, new: PresenceState) -> None:
        if new is PresenceState.STARTING:
            presence.stop()  # e.g. the app learnt the user signed out meanwhile

    presence = sync_client(misbehaving, CONFIG, on_state_change=on_state_change)
    try:
        presence.start()
        wait_until(lambda: presence.state is PresenceState.STOPPED and not heartbeat_threads())
    finally:
        presence.close()


def test_callbacks_run_outside_the_lock_and_in_order(
    misbehaving: MisbehavingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="presence_sdk")
    states: list[tuple[PresenceState, PresenceState, bool]] = []

    def on_state_change(old: PresenceState, new: PresenceState) -> None:
        # The callback's thread does not hold the client's (reentrant) lock. Asking
        # whether it is free instead would race with the heartbeat thread taking it
        # for a moment, and a reentrant acquire would succeed even under the lock.
        free = not presence._lock._is_owned()  # type: ignore[attr-defined]
        states.append((old, new, free))

    presence = sync_client(misbehaving, CONFIG, on_state_change=on_state_change)
    with presence:
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert [(o, n) for o, n, _ in states] == [
        (PresenceState.STOPPED, PresenceState.STARTING),
        (PresenceState.STARTING, PresenceState.ONLINE),
        (PresenceState.ONLINE, PresenceState.STOPPING),
        (PresenceState.STOPPING, PresenceState.STOPPED),
    ]
    assert all(free for _, _, free in states)
