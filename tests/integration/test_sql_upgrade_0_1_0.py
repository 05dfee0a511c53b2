"""A database set up by 0.1.0, with live rows, takes the current SQL files in place.

Migrations are idempotent, so an existing project gets the hardened SQL by running the
files again (``psql -f``, the SQL editor). This proves that on 0.1.0's own SQL
(``sql_0_1_0/``, verbatim): the rows stay as they were, online users stay online, and
grants, functions and policies end up exactly as on a fresh install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sql_support import privileges_snapshot

from presence_sdk import migrations, schema_sql
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import (
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

OLD = Path(__file__).with_name("sql_0_1_0")
OLD_FILES = [OLD / "schema.sql", *sorted((OLD / "migrations").glob("*.sql"))]
USERS = (
    "SELECT id, status, last_heartbeat, online_since, display_name FROM public.users ORDER BY id"
)


@pytest.fixture
def shim_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        yield db


def test_a_0_1_0_database_with_live_rows_takes_the_current_sql(
    presence_server: PresenceTestServer, shim_db: PresenceDatabase
) -> None:
    assert [p.name for p in OLD_FILES[1:]] == [m.filename for m in migrations()]
    with shim_db.connect() as conn:
        for path in OLD_FILES:
            conn.execute(path.read_text())
    online = shim_db.create_user()
    away = shim_db.create_user()
    left = shim_db.create_user()
    shim_db.create_user()  # never beat
    shim_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=online)
    shim_db.rpc("presence_heartbeat", {"new_status": "away"}, user_id=away)
    shim_db.rpc("presence_heartbeat", user_id=left)
    shim_db.rpc("presence_leave", user_id=left)
    before = shim_db.query(USERS)

    with shim_db.connect() as conn:
        conn.execute(schema_sql())
        for migration in migrations():
            conn.execute(migration.up)
        upgraded = privileges_snapshot(conn)

    assert shim_db.query(USERS) == before
    assert shim_db.rpc("presence_is_online", {"user_id": online}, user_id=away) is True
    assert shim_db.rpc("presence_counts", user_id=away) == {
        "online": 1,
        "away": 1,
        "busy": 0,
        "offline": 2,
    }
    shim_db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=online)
    report = verify_setup(dsn=shim_db.dsn, raise_on_error=False)
    assert [c.name for c in report.problems] == ["pg_cron"], str(report)

    with presence_server.database(template=None) as fresh, fresh.connect() as conn:
        install_supabase_shim(conn)
        apply_presence_sql(conn)
        assert upgraded == privileges_snapshot(conn)
