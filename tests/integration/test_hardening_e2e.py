"""Client hardening against the real SQL: a stopped run's late leave (issue defect 1).

The sync client talks over real HTTP to :class:`~presence_sdk.testing.LocalPostgREST`,
which runs every RPC on the test PostgreSQL as PostgREST would. The server is slow
once: the first heartbeat takes 1.5 s. ``stop()`` gives up on it after 0.3 s and
``start()`` follows at once. 0.1.0's old thread then sent its leave after the new run's
first beat: the database said offline while the client said online.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from e2e_support import poll, row

from presence_sdk import PresenceClient, PresenceConfig, PresenceState
from presence_sdk.testing import LocalPostgREST, PostgRESTEmulator, PresenceDatabase

pytestmark = pytest.mark.integration

HEARTBEAT = "/rest/v1/rpc/presence_session_beat"
LEAVE = "/rest/v1/rpc/presence_session_leave"


@dataclass
class FirstHeartbeatIsSlow(PostgRESTEmulator):
    """The emulator, except that the first heartbeat waits ``delay`` seconds before it
    runs (a slow proxy or a locked row): it reaches the database late."""

    delay: float = 1.5
    slow_started: threading.Event = field(default_factory=threading.Event)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == HEARTBEAT and not self.slow_started.is_set():
            self.slow_started.set()
            time.sleep(self.delay)
        return super().handle(request)


def _heartbeat_threads() -> int:
    return sum(t.name == "presence-heartbeat" for t in threading.enumerate())


def test_a_stopped_runs_leave_never_lands_after_a_restart(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    emulator = FirstHeartbeatIsSlow(presence_db.dsn)
    config = PresenceConfig(
        interval=10.0, timeout=45.0, jitter=0.0, request_timeout=3.0, stop_timeout=0.3
    )
    with LocalPostgREST(emulator) as api:
        presence = PresenceClient.from_url(
            api.url, emulator.anon_key, access_token=emulator.user_token(user), config=config
        )
        try:
            presence.start()
            poll(emulator.slow_started.is_set)
            presence.stop()  # gives up after 0.3 s; the old thread waits for its beat
            presence.start()
            poll(lambda: presence.state is PresenceState.ONLINE)
            poll(lambda: _heartbeat_threads() == 1)  # the stopped run has ended
            state = row(presence_db, user)
            assert (state["stored_status"], state["online"]) == ("online", True)
            assert LEAVE not in emulator.requests
            assert presence.state is PresenceState.ONLINE
            poll(lambda: emulator.requests[-1] == HEARTBEAT)  # the new run beat last
        finally:
            presence.close()
        assert row(presence_db, user)["online"] is False  # the final stop left
