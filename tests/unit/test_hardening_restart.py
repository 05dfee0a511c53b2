"""Defect 1: a run that outlived its stop() must never undo a newer run.

stop() returns after ``stop_timeout`` even when a request hangs; the old heartbeat
thread then finishes on its own. It must not send its leave on top of the run that
``start()`` began meanwhile (0.1.0 did: the user read offline while the client said
online, until the next beat).
"""

from __future__ import annotations

import threading
import time

from client_support import wait_until
from hardening_support import endpoints, heartbeat_threads, quick, sync_client
from misbehaving_server import MisbehavingServer, hang

from presence_sdk import PresenceState
from presence_sdk._core import Call, Driver, RunControl, Sleep
from presence_sdk._heartbeat import Heartbeat


def test_a_stopped_runs_late_leave_never_lands_after_a_restart(
    misbehaving: MisbehavingServer,
) -> None:
    misbehaving.then("presence_session_beat", hang(1.5))  # the first beat hangs 1.5 s
    config = quick(interval=10.0, timeout=30.0, request_timeout=3.0, stop_timeout=0.3)
    presence = sync_client(misbehaving, config)
    try:
        presence.start()
        wait_until(lambda: len(misbehaving.seen("presence_session_beat")) == 1)
        presence.stop()  # gives up after 0.3 s: the old thread still waits for its beat
        assert len(heartbeat_threads()) == 1
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        wait_until(lambda: len(heartbeat_threads()) == 1, timeout=5.0)  # old one ended
        wait_until(lambda: endpoints(misbehaving)[-1] == "presence_session_beat")
        # The server's last word is a heartbeat of the new run: the user is online,
        # as the client says. No leave was sent by the superseded run.
        assert "presence_session_leave" not in endpoints(misbehaving)
        assert presence.state is PresenceState.ONLINE
    finally:
        presence.close()
    assert endpoints(misbehaving)[-1] == "presence_session_leave"  # the final stop leaves


def test_a_superseded_run_sends_no_leave_and_its_end_wakes_the_new_run() -> None:
    engine = Heartbeat(quick(interval=10.0, timeout=30.0))
    old = engine.begin_run()
    engine.request_stop(old)
    new = engine.begin_run()  # stop() gave up on ``old``; start() followed
    assert old.superseded
    assert not new.superseded
    assert list(engine.leave(old)) == []  # no leave from the superseded run

    driver = Driver(engine.run(new))
    assert isinstance(next(driver), Call)  # the new run's first beat
    driver.reply("2025-01-02T03:04:05+00:00")
    assert isinstance(next(driver), Sleep)  # waiting for the next interval...
    assert engine.end_run(old) is True  # ...until the old run ends: the shell wakes it
    effect = next(driver)
    assert isinstance(effect, Call)
    assert effect.fn == "presence_session_beat"  # beats again at once
    assert engine.end_run(RunControl()) is False  # an unrelated run changes nothing


def test_a_second_concurrent_stop_also_waits_for_the_leave(
    misbehaving: MisbehavingServer,
) -> None:
    # stop() no longer waits under the client's lock; a stop() racing another one (a
    # SIGTERM handler while the app stops) must still return only after the leave.
    misbehaving.always("presence_session_leave", hang(0.4))
    presence = sync_client(misbehaving, quick(interval=10.0, timeout=30.0, stop_timeout=2.0))
    presence.start()
    wait_until(lambda: presence.state is PresenceState.ONLINE)
    returned: list[float] = []
    other = threading.Thread(target=lambda: (presence.stop(), returned.append(time.monotonic())))
    first = threading.Thread(target=presence.stop)
    first.start()
    wait_until(lambda: presence.state is PresenceState.STOPPING)
    other.start()
    first.join()
    other.join()
    answered = misbehaving.seen("presence_session_leave")[0].at + 0.4
    assert returned[0] >= answered - 0.05  # not before the leave was answered
    assert presence.state is PresenceState.STOPPED
    presence.close()


def test_a_manual_beat_after_an_early_stop_supersedes_the_stopped_run() -> None:
    engine = Heartbeat(quick(interval=10.0, timeout=30.0))
    old = engine.begin_run()
    engine.request_stop(old)  # stop() gave up waiting; the app then beats by hand
    driver = Driver(engine.beat_once())
    next(driver)
    driver.reply("2025-01-02T03:04:05+00:00")
    assert list(driver) == []
    assert old.superseded
    assert list(engine.leave(old)) == []  # the late leave is never sent
