"""Migration 20240000000007_privacy on real PostgreSQL: an upgrade with live users changes
no read, re-running changes nothing, the rollback restores the catalog exactly (grants
included) and re-applying restores the privacy API; the app's hook survives both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from privacy_support import PRESENCE_COLUMNS, realtime_columns, set_invisible, set_visibility
from psycopg.rows import dict_row
from sessions_support import beat, new_id
from sql_support import HAND_MADE_USERS
from test_sql_idempotency import snapshot

from presence_sdk import migrations, schema_sql
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, install_supabase_shim

pytestmark = pytest.mark.integration

_AT = [m.name for m in migrations()].index("privacy")
PRIVACY = migrations()[_AT]
BEFORE = migrations()[:_AT]

PRIVATE_SNAPSHOT = """
    SELECT 'function' AS kind, p.oid::regprocedure::text AS name, p.prosrc AS body,
           coalesce(p.proacl::text[], '{}') AS acl, p.proconfig::text[] AS config
    FROM pg_proc AS p WHERE p.pronamespace = 'presence_private'::regnamespace
    UNION ALL
    SELECT 'relation', c.relname, pg_get_viewdef(c.oid), coalesce(c.relacl::text[], '{}'),
           c.reloptions
    FROM pg_class AS c WHERE c.relnamespace = 'presence_private'::regnamespace
    ORDER BY 1, 2"""


def full_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The public catalog (test_sql_idempotency) plus everything in presence_private."""
    with conn.cursor(row_factory=dict_row) as cur:
        private = cur.execute(PRIVATE_SNAPSHOT).fetchall()
    return snapshot(conn) | {"presence_private": private}


@pytest.fixture
def sessions_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database at the migration before privacy (schema.sql + migrations 1-4)."""
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        conn.execute(schema_sql())
        for migration in BEFORE:
            conn.execute(migration.up)
        yield db


def reads(db: PresenceDatabase, users: list[str], reader: str) -> dict[str, Any]:
    return {
        "get": db.rpc("presence_get", {"user_ids": users}, user_id=reader),
        "online": [db.rpc("presence_is_online", {"user_id": u}, user_id=reader) for u in users],
        "list": db.rpc("presence_list_online", {}, user_id=reader),
        "counts": {
            k: v
            for k, v in db.rpc("presence_counts", user_id=reader).items()
            if k != "offline_estimated"
        },
        "view": db.query(
            "SELECT * FROM public.user_presence ORDER BY user_id"
        ),  # as the owner: the truth
    }


def arrange(db: PresenceDatabase) -> tuple[list[str], str]:
    users = [db.create_user() for _ in range(4)]
    beat(db, users[0], new_id(), "online")
    beat(db, users[1], new_id(), "away")
    beat(db, users[1], new_id(), "busy")
    db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=users[2])  # a 0.1.0 client
    return users, db.create_user()


def test_upgrade_with_live_users_changes_no_read_and_narrows_the_table(
    sessions_db: PresenceDatabase,
) -> None:
    users, reader = arrange(sessions_db)
    before = reads(sessions_db, users, reader)
    assert set(realtime_columns(sessions_db, "authenticated")) >= set(PRESENCE_COLUMNS)
    with sessions_db.connect() as conn:
        conn.execute(PRIVACY.up)
    assert reads(sessions_db, users, reader) == before
    assert not set(realtime_columns(sessions_db, "authenticated")) & set(PRESENCE_COLUMNS)
    # Clients keep beating; privacy applies at once.
    sessions_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=users[2])
    set_invisible(sessions_db, users[0], True)
    assert sessions_db.rpc("presence_is_online", {"user_id": users[0]}, user_id=reader) is False


def test_rerun_rollback_and_reapply(sessions_db: PresenceDatabase) -> None:
    users, reader = arrange(sessions_db)
    with sessions_db.connect() as conn:
        at_sessions = full_snapshot(conn)
        conn.execute(PRIVACY.up)
        applied = full_snapshot(conn)
        conn.execute(PRIVACY.up)
        assert full_snapshot(conn) == applied
    set_visibility(sessions_db, users[0], presence="nobody")
    with_privacy = reads(sessions_db, users, users[0])  # the user sees the truth
    with sessions_db.connect() as conn:
        conn.execute(PRIVACY.down)
        assert full_snapshot(conn) == at_sessions  # grants on public.users included
        conn.execute(PRIVACY.down)
        assert full_snapshot(conn) == at_sessions
    assert reads(sessions_db, users, users[0]) == with_privacy
    # Everyone sees users[0] again: the settings went with the rollback.
    assert sessions_db.rpc("presence_is_online", {"user_id": users[0]}, user_id=reader) is True
    with sessions_db.connect() as conn:
        conn.execute(PRIVACY.up)
        assert full_snapshot(conn) == applied


def test_the_apps_hook_survives_rerun_and_rollback(sessions_db: PresenceDatabase) -> None:
    hook = (
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS 'SELECT false'"
    )
    with sessions_db.connect() as conn:
        conn.execute(PRIVACY.up)
        conn.execute(hook)
        conn.execute(PRIVACY.up)
        source = "SELECT prosrc FROM pg_proc WHERE proname = 'presence_can_see'"
        assert conn.execute(source).fetchall() == [("SELECT false",)]
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(PRIVACY.down)
        assert conn.execute(source).fetchall() == [("SELECT false",)]
        assert any("kept public.presence_can_see" in n for n in notices), notices
        # The default one goes with the rollback.
        conn.execute("DROP FUNCTION public.presence_can_see(uuid, uuid)")
        conn.execute(PRIVACY.up)
        conn.execute(PRIVACY.down)
        assert conn.execute(source).fetchall() == []


def test_a_hand_made_table_with_supabase_default_grants(
    presence_server: PresenceTestServer,
) -> None:
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        conn.execute(HAND_MADE_USERS)  # the API roles get ALL (Supabase's default privileges)
        for migration in BEFORE:
            conn.execute(migration.up)
        grants_before = full_snapshot(conn)
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(PRIVACY.up)
        assert sum("SELECT on public.users for" in n for n in notices) == 2  # anon, authenticated
        for role in ("anon", "authenticated"):
            assert realtime_columns(db, role) == ["id", "nickname"]
        conn.execute(PRIVACY.down)
        assert full_snapshot(conn) == grants_before
        for role in ("anon", "authenticated"):
            assert set(realtime_columns(db, role)) >= set(PRESENCE_COLUMNS)


def test_a_users_table_in_the_realtime_publication_gets_a_notice(
    sessions_db: PresenceDatabase,
) -> None:
    with sessions_db.connect() as conn:
        conn.execute("CREATE PUBLICATION supabase_realtime FOR TABLE public.users")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(PRIVACY.up)
    assert any("supabase_realtime publication" in n for n in notices), notices


def test_rollback_refuses_to_leave_reads_pointing_at_dropped_objects(
    presence_db: PresenceDatabase,
) -> None:
    presence_db.query("DELETE FROM presence_private.privacy_replaced_definitions")
    with presence_db.connect() as conn:
        before = full_snapshot(conn)
        with pytest.raises(psycopg.errors.RaiseException, match="saved definitions are missing"):
            conn.execute(PRIVACY.down)
        assert full_snapshot(conn) == before
