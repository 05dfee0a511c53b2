"""watch() across a PostgreSQL restart: nothing lost, nothing repeated.

Uses a cluster of its own (restarting the session's shared one would disturb other
tests), restarted in place with :meth:`PostgresCluster.restart`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator

import pytest
from e2e_support import routed, sync_client
from watch_support import EVENTS_PER_CYCLE, all_ids, cycle, watchdog

from presence_sdk import PresenceClient, PresenceEvent, PresenceWatcher
from presence_sdk.testing import PresenceDatabase, PresenceTestServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_server() -> Iterator[PresenceTestServer]:
    with PresenceTestServer() as server:
        yield server


@pytest.fixture
def own_db(own_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    with own_server.database() as db:
        yield db


def take(watcher: PresenceWatcher, n: int) -> list[PresenceEvent]:
    with watchdog(watcher.close, 60):
        return list(itertools.islice(watcher, n))


@pytest.mark.parametrize("mode", ["listen", "poll"])
def test_a_server_restart_loses_and_repeats_nothing(
    own_server: PresenceTestServer,
    own_db: PresenceDatabase,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = own_db.create_user()
    with routed(own_db) as (emulator, _):
        supabase = sync_client(emulator, emulator.service_role_key)
        watcher = (
            PresenceWatcher(dsn=own_db.dsn, poll_interval=0.05, page_size=3)
            if mode == "listen"
            else PresenceClient(supabase).watch(poll_interval=0.05, page_size=3)
        )
        with watcher, caplog.at_level(logging.WARNING, logger="presence_sdk"):
            for _ in range(2):
                cycle(own_db, user)
            got = take(watcher, 4)
            # Restart while the watcher is between reads; transitions resume after it.
            restarted = threading.Thread(target=own_server.cluster.restart)
            restarted.start()
            restarted.join(120)
            for _ in range(2):
                cycle(own_db, user)
            got += take(watcher, 4 * EVENTS_PER_CYCLE - 4)
        supabase.postgrest.session.close()
    assert [e.id for e in got] == all_ids(own_db)
    assert "watching events failed" in caplog.text
