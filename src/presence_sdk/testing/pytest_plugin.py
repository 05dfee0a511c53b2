"""pytest fixtures for presence_sdk, registered automatically (``pytest11`` entry point).

Fixtures:
    presence_server: session-wide :class:`PresenceTestServer`: one PostgreSQL
        cluster with pg_cron, the Supabase shim, and a migrated template database.
    presence_db: a fresh :class:`PresenceDatabase` per test, cloned from the
        template (no pg_cron job there: pg_cron only runs in the cron database).
    presence_cron_db: the cron database (``postgres``) with the presence SQL and the
        real ``mark-inactive-users`` job. Shared by the session: tests clean up.

The cluster starts only when a test asks for one of them. If it cannot start, the
test fails with the reason (it never skips).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from presence_sdk.testing._server import PresenceDatabase, PresenceTestServer

__all__ = ["presence_cron_db", "presence_db", "presence_server"]


@pytest.fixture(scope="session")
def presence_server() -> Iterator[PresenceTestServer]:
    """One started cluster for the whole session, stopped and deleted at the end."""
    with PresenceTestServer() as server:
        yield server


@pytest.fixture
def presence_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A fresh migrated database for one test, dropped afterwards."""
    with presence_server.database() as db:
        yield db


@pytest.fixture
def presence_cron_db(presence_server: PresenceTestServer) -> PresenceDatabase:
    """The pg_cron database (shared by the session; tests clean up their rows)."""
    return presence_server.cron_database
