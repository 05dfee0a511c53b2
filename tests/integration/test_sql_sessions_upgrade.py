"""Upgrading a 0.1.0 database with live users to sessions (migration 5), rolling back
and re-applying, on real PostgreSQL.

A database at 0.1.0 (schema.sql + migrations 1-3) gets users in every presence state;
reads are taken as a signed-in user before and after each step and must not change:
nobody flips offline, nothing is lost, and the catalog returns exactly to its 0.1.0
state after the rollback (compared with the snapshot of test_sql_idempotency).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sessions_support import beat, new_id, sessions_of, stored, sweep, table_hash
from test_sql_idempotency import snapshot

from presence_sdk import migrations, schema_sql
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, install_supabase_shim

pytestmark = pytest.mark.integration

SESSIONS = next(m for m in migrations() if m.name == "sessions")
OLDER = [m for m in migrations() if m.version < SESSIONS.version]
LATER = [m for m in migrations() if m.version > SESSIONS.version]


@pytest.fixture
def legacy_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database at 0.1.0: the shim, schema.sql and every migration before sessions."""
    assert SESSIONS.name == "sessions"
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        conn.execute(schema_sql())
        for migration in OLDER:
            conn.execute(migration.up)
        yield db


def arrange_0_1_0_users(db: PresenceDatabase) -> dict[str, str]:
    """Users in every 0.1.0 presence state, written as 0.1.0's RPCs left them."""
    states = {
        # name: (status, last heartbeat seconds ago, online since seconds ago)
        "online": ("online", 3, 3600),
        "away": ("away", 10, 600),
        "busy": ("busy", 30, 7200),
        "stale": ("online", 50, 7200),  # timed out, not swept yet
        "left": ("offline", 120, None),
    }
    users = {}
    for name, (status, ago, since) in states.items():
        user = db.create_user()
        db.query(
            "UPDATE public.users SET status = %s, "
            "last_heartbeat = now() - make_interval(secs => %s), "
            "online_since = now() - make_interval(secs => %s) WHERE id = %s",
            (status, ago, since, user),
        )
        users[name] = user
    users["never"] = db.create_user()
    users["reader"] = db.create_user()
    return users


def reads(db: PresenceDatabase, users: dict[str, str]) -> dict[str, Any]:
    """What a signed-in user sees through every read RPC."""
    everyone = sorted(users.values())
    reader = users["reader"]
    return {
        "get": db.rpc("presence_get", {"user_ids": everyone}, user_id=reader),
        "online": {
            u: db.rpc("presence_is_online", {"user_id": u}, user_id=reader) for u in everyone
        },
        "list": db.rpc("presence_list_online", {}, user_id=reader),
        "counts": db.rpc("presence_counts", user_id=reader),
    }


def test_upgrade_keeps_every_live_user_online_and_loses_nothing(
    legacy_db: PresenceDatabase,
) -> None:
    users = arrange_0_1_0_users(legacy_db)
    before = reads(legacy_db, users)
    assert sum(before["online"].values()) == 3
    with legacy_db.connect() as conn:
        conn.execute(SESSIONS.up)
    assert reads(legacy_db, users) == before
    # Exactly the live users got an implicit session, carrying their 0.1.0 presence.
    rows = legacy_db.query(
        "SELECT s.session_id = s.user_id AS implicit, s.status = u.status AS same_status, "
        "s.started_at = u.online_since AS same_start, s.last_beat = u.last_heartbeat AS same_beat "
        "FROM public.presence_sessions AS s JOIN public.users AS u ON u.id = s.user_id"
    )
    assert len(rows) == 3
    assert all(all(r.values()) for r in rows)
    assert {s["session_id"] for s in sessions_of(legacy_db, users["busy"])} == {users["busy"]}

    # A 0.1.0 client keeps beating its implicit session: same online_since.
    since = stored(legacy_db, users["online"])["online_since"]
    legacy_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=users["online"])
    assert stored(legacy_db, users["online"])["online_since"] == since
    # A new device of the same user joins the same presence.
    beat(legacy_db, users["away"], new_id(), "online")
    assert stored(legacy_db, users["away"])["status"] == "online"
    # The sweep marks only the stale user offline.
    assert sweep(legacy_db) == 1
    assert stored(legacy_db, users["stale"])["status"] == "offline"


def test_rollback_folds_sessions_back_then_reapply(legacy_db: PresenceDatabase) -> None:
    users = arrange_0_1_0_users(legacy_db)
    with legacy_db.connect() as conn:
        at_0_1_0 = snapshot(conn)
        conn.execute(SESSIONS.up)
        upgraded = snapshot(conn)
    # Life goes on with sessions: several devices, a tracker, a leave, a status rule.
    beat(legacy_db, users["online"], new_id(), "away")
    beat(legacy_db, users["never"], new_id(), "busy")
    beat(legacy_db, users["never"], new_id(), "away")
    legacy_db.rpc(
        "presence_track_beat",
        {"sessions": [{"session_id": new_id(), "user_id": users["left"], "status": "away"}]},
        role="service_role",
    )
    legacy_db.rpc("presence_leave", user_id=users["away"])
    with_sessions = reads(legacy_db, users)

    with legacy_db.connect() as conn:
        conn.execute(SESSIONS.down)
        assert snapshot(conn) == at_0_1_0  # every 0.1.0 definition restored exactly
        conn.execute(SESSIONS.down)  # idempotent
        assert snapshot(conn) == at_0_1_0
    # The 0.1.0 reads (restored) say what the session reads said.
    assert reads(legacy_db, users) == with_sessions
    assert stored(legacy_db, users["never"])["status"] == "busy"

    with legacy_db.connect() as conn:
        conn.execute(SESSIONS.up)
        assert snapshot(conn) == upgraded
    assert reads(legacy_db, users) == with_sessions
    # Each live user is one implicit session again (devices are not kept by 0.1.0).
    live = {u for u, online in with_sessions["online"].items() if online}
    rows = legacy_db.query("SELECT user_id::text, session_id::text FROM public.presence_sessions")
    assert {r["user_id"] for r in rows} == live
    assert all(r["user_id"] == r["session_id"] for r in rows)


def test_the_migration_reruns_on_its_own_without_changing_anything(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id(), "busy", device="web")
    presence_db.rpc("presence_heartbeat", user_id=user)
    with presence_db.connect() as conn:
        catalog = snapshot(conn)
        data = table_hash(presence_db)
        for _ in range(2):
            conn.execute(SESSIONS.up)
            for later in LATER:
                conn.execute(later.up)
        assert snapshot(conn) == catalog
    assert table_hash(presence_db) == data
    saved = presence_db.query(
        "SELECT object FROM presence_private.replaced_definitions ORDER BY position"
    )
    assert [r["object"] for r in saved] == [
        "public.user_presence",
        "public.presence_heartbeat(text)",
        "public.presence_leave()",
        "public.presence_list_online(integer,uuid)",
        "public.presence_counts()",
        "public.mark_inactive_users_offline()",
        "public.presence_setup_report()",
    ]


def test_rollback_refuses_to_leave_functions_pointing_at_dropped_objects(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id())
    with presence_db.connect() as conn:
        for later in reversed(LATER):  # rollbacks go newest first
            conn.execute(later.down)
    presence_db.query("DELETE FROM presence_private.replaced_definitions")
    with presence_db.connect() as conn:
        before = snapshot(conn)
        with pytest.raises(psycopg.errors.RaiseException) as info:
            conn.execute(SESSIONS.down)
        assert "the saved 0.1.0 definitions are missing" in str(info.value)
        assert "Re-apply migrations" in (info.value.diag.message_hint or "")
        assert snapshot(conn) == before  # the whole rollback was undone
        # The hint works: re-apply 1-3, then the rollback goes through.
        for migration in OLDER:
            conn.execute(migration.up)
        conn.execute(SESSIONS.down)
        assert conn.execute("SELECT to_regclass('public.presence_sessions')").fetchone() == (None,)
    assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
