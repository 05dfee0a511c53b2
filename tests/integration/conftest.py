"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from presence_sdk.testing import PresenceTestServer


@pytest.fixture
def cron_version(presence_server: PresenceTestServer) -> str:
    """The pg_cron version the migration enabled in the cron database.

    Tests assert what this version must show (interval schedules on >= 1.5, every
    minute plus a NOTICE before), so the same suite passes on any pg_cron.
    """
    rows = presence_server.cron_database.query(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"
    )
    assert rows, "the migration did not enable pg_cron in the cron database"
    version: str = rows[0]["extversion"]
    # What the cluster found installed is what the migration enabled.
    assert version == presence_server.cluster.pg_cron_version
    return version
