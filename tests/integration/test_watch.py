"""watch(): events in order, none lost or repeated, over LISTEN and over polling.

Real PostgreSQL; polling goes supabase-py → respx → PostgREST emulation → the database.
Transitions are made on another thread while the watcher iterates.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest
from e2e_support import routed, sync_client
from watch_support import (
    EVENTS_PER_CYCLE,
    all_ids,
    cycle,
    producing,
    terminate_others,
    watchdog,
)

from presence_sdk import (
    AuthenticationError,
    PermissionDeniedError,
    PresenceClient,
    PresenceEvent,
    PresenceWatcher,
)
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

FAST = 0.05  # poll interval of these tests (seconds)


def take(watcher: PresenceWatcher, n: int) -> list[PresenceEvent]:
    with watchdog(watcher.close):
        return list(itertools.islice(watcher, n))


@pytest.fixture
def http_client(presence_db: PresenceDatabase) -> Iterator[PresenceClient]:
    """A PresenceClient with the service key, through the PostgREST emulation."""
    with routed(presence_db) as (emulator, _):
        supabase = sync_client(emulator, emulator.service_role_key)
        client = PresenceClient(supabase)
        try:
            yield client
        finally:
            client.close()
            supabase.postgrest.session.close()


def test_listen_delivers_every_event_in_order(presence_db: PresenceDatabase) -> None:
    users = [presence_db.create_user() for _ in range(3)]
    with (
        PresenceWatcher(dsn=presence_db.dsn, poll_interval=5) as watcher,
        producing(presence_db, users, 4, gap=0.02),
    ):
        got = take(watcher, 3 * 4 * EVENTS_PER_CYCLE)
    assert [e.id for e in got] == all_ids(presence_db)
    assert watcher.last_id == got[-1].id
    first = got[0]
    assert (first.kind, first.reason, first.session_id is not None) == (
        "session_start",
        "join",
        True,
    )


def test_polling_through_the_client_delivers_every_event_in_order(
    presence_db: PresenceDatabase, http_client: PresenceClient
) -> None:
    users = [presence_db.create_user() for _ in range(2)]
    with (
        http_client.watch(poll_interval=FAST, page_size=3) as watcher,
        producing(presence_db, users, 3),
    ):
        got = take(watcher, 2 * 3 * EVENTS_PER_CYCLE)
    assert [e.id for e in got] == all_ids(presence_db)


@pytest.mark.parametrize("mode", ["listen", "poll"])
def test_a_terminated_connection_loses_and_repeats_nothing(
    presence_db: PresenceDatabase,
    http_client: PresenceClient,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = presence_db.create_user()
    watcher = (
        PresenceWatcher(dsn=presence_db.dsn, poll_interval=FAST, page_size=2)
        if mode == "listen"
        else http_client.watch(poll_interval=FAST, page_size=2)
    )
    with watcher, caplog.at_level(logging.WARNING, logger="presence_sdk"):
        for _ in range(3):
            cycle(presence_db, user)
        got = take(watcher, 5)  # mid-stream: a page and a half read
        assert terminate_others(presence_db) >= 1
        for _ in range(3):
            cycle(presence_db, user)
        got += take(watcher, 6 * EVENTS_PER_CYCLE - 5)
    assert [e.id for e in got] == all_ids(presence_db)
    assert "watching events failed" in caplog.text


@pytest.mark.parametrize("mode", ["listen", "poll"])
def test_a_restarted_watcher_resumes_after_the_saved_id(
    presence_db: PresenceDatabase, http_client: PresenceClient, mode: str
) -> None:
    def watcher(after_id: int) -> PresenceWatcher:
        if mode == "listen":
            return PresenceWatcher(dsn=presence_db.dsn, after_id=after_id, poll_interval=FAST)
        return http_client.watch(after_id, poll_interval=FAST, page_size=3)

    user = presence_db.create_user()
    for _ in range(3):
        cycle(presence_db, user)
    with watcher(0) as first:
        seen = take(first, 5)
        saved = first.last_id
    assert saved == seen[-1].id
    for _ in range(2):
        cycle(presence_db, user)  # while no watcher runs
    with watcher(saved) as second:
        seen += take(second, 5 * EVENTS_PER_CYCLE - 5)
    assert [e.id for e in seen] == all_ids(presence_db)


def test_a_user_watches_what_they_may_see(presence_db: PresenceDatabase) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    cycle(presence_db, other)
    cycle(presence_db, me)
    with routed(presence_db) as (emulator, _):
        supabase = sync_client(emulator, emulator.user_token(me))
        client = PresenceClient(supabase)
        with client.watch(poll_interval=FAST) as watcher:
            got = take(watcher, 6)
        supabase.postgrest.session.close()
    assert [(e.user_id.hex == me.replace("-", ""), e.kind) for e in got] == [
        (False, "online"),
        (False, "offline"),
        (True, "session_start"),
        (True, "online"),
        (True, "session_end"),
        (True, "offline"),
    ]


def test_a_dsn_without_rights_fails_at_the_first_read(presence_db: PresenceDatabase) -> None:
    presence_db.query(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nobody_here') "
        "THEN CREATE ROLE nobody_here LOGIN; END IF; END $$"
    )
    dsn = presence_db.dsn.replace("user=postgres", "user=nobody_here")
    with PresenceWatcher(dsn=dsn) as watcher, pytest.raises(PermissionDeniedError) as denied:
        next(iter(watcher))
    assert "presence_events_since" in str(denied.value)
    unknown = presence_db.dsn.replace("user=postgres", "user=no_such_role")
    with PresenceWatcher(dsn=unknown) as watcher, pytest.raises(AuthenticationError):
        next(iter(watcher))


def test_closing_from_another_thread_ends_the_iteration(presence_db: PresenceDatabase) -> None:
    with PresenceWatcher(dsn=presence_db.dsn, poll_interval=FAST) as watcher:
        with watchdog(watcher.close, 0.3):
            got = list(watcher)  # nothing happens: blocks until closed
        assert got == []
