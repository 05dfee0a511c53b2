"""schema.sql + migrations are idempotent and their rollbacks undo them (real Postgres).

Compares catalog snapshots (tables, columns, constraints, indexes, functions with
their source and settings, views, policies, grants, triggers, comments, cron jobs)
after each step, on the schema.sql layout and on an *existing* ``public.users`` that
only has ``id uuid`` and ``status text``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sql_support import catalog_snapshot as snapshot
from sql_support import without_jobids

from presence_sdk import Migration, migrations, rollback_schema_sql, schema_sql
from presence_sdk.testing import (
    PostgresCluster,
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

JOB = "mark-inactive-users"


def rollback_all(conn: psycopg.Connection[Any], *, schema: bool) -> None:
    """Every migration rollback, newest first (each twice: they are idempotent)."""
    for migration in reversed(migrations()):
        conn.execute(migration.down)
        conn.execute(migration.down)
    if schema:
        conn.execute(rollback_schema_sql())
        conn.execute(rollback_schema_sql())


def presence_objects(snap: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [f["signature"] for f in snap["functions"]] + [r["relname"] for r in snap["relations"]]


@pytest.fixture
def empty_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database with only the Supabase shim (not a pg_cron database)."""
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        yield db


def test_schema_and_migrations_applied_twice_leave_the_same_objects(
    empty_db: PresenceDatabase,
) -> None:
    with empty_db.connect() as conn:
        apply_presence_sql(conn)
        first = snapshot(conn)
        apply_presence_sql(conn)
        second = snapshot(conn)
    assert second == first
    # Sanity: the snapshot really covers the presence objects.
    assert {"users", "presence_config", "user_presence", "users_presence_active_idx"} <= {
        r["relname"] for r in first["relations"]
    }
    assert "public.presence_heartbeat(text)" in presence_objects(first)
    assert {p["policyname"] for p in first["policies"]} >= {
        "users_select_authenticated",
        "users_update_own",
        "presence_config_read",
    }


@pytest.mark.parametrize("migration", migrations(), ids=lambda m: m.version)
def test_rerunning_a_migration_alone_after_it_changes_nothing(
    empty_db: PresenceDatabase, migration: Migration
) -> None:
    """Files up to ``migration`` applied, live rows, then ``migration`` again by hand
    (20240000000004 included: it repeats 01..03's definitions)."""
    with empty_db.connect() as conn:
        conn.execute(schema_sql())
        for earlier in migrations():
            if earlier.version <= migration.version:
                conn.execute(earlier.up)
    if migration.name == "base_schema":  # no presence columns yet
        user = empty_db.create_user()
        empty_db.query("UPDATE public.users SET status = 'away' WHERE id = %s", (user,))
    else:
        empty_db.create_user(status="away", last_heartbeat="now")
    empty_db.create_user()
    rows = empty_db.query("SELECT * FROM public.users ORDER BY id")
    with empty_db.connect() as conn:
        before = snapshot(conn)
        conn.execute(migration.up)
        assert snapshot(conn) == before
    assert empty_db.query("SELECT * FROM public.users ORDER BY id") == rows


def test_rollback_newest_first_removes_everything_and_reapply_works(
    empty_db: PresenceDatabase,
) -> None:
    with empty_db.connect() as conn:
        before = snapshot(conn)
        apply_presence_sql(conn)
        applied = snapshot(conn)
        rollback_all(conn, schema=True)
        assert snapshot(conn) == before
        apply_presence_sql(conn)
        assert snapshot(conn) == applied


@pytest.mark.parametrize(
    "migration", [m for m in migrations() if m.name != "base_schema"], ids=lambda m: m.version
)
def test_rolling_back_a_migration_leaves_what_the_files_before_it_install(
    presence_server: PresenceTestServer, migration: Migration
) -> None:
    """Drift guard for rollbacks that put definitions back (the sessions and events
    rollbacks restore the functions and the setup report they replaced)."""
    earlier = [m.up for m in migrations() if m.version < migration.version]
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        for script in [schema_sql(), *earlier]:
            conn.execute(script)
        wanted = snapshot(conn)
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        for script in [schema_sql(), *earlier, migration.up]:
            conn.execute(script)
        db.create_user(status="away", last_heartbeat="now")
        conn.execute(migration.down)
        assert snapshot(conn) == wanted


def test_migration_rollback_keeps_users_and_reapply_restores_the_api(
    empty_db: PresenceDatabase,
) -> None:
    with empty_db.connect() as conn:
        apply_presence_sql(conn)
        applied = snapshot(conn)
        alice = empty_db.create_user()
        rollback_all(conn, schema=False)
        rolled_back = snapshot(conn)
        columns = [c["attname"] for c in rolled_back["columns"] if c["relname"] == "users"]
        assert "last_heartbeat" not in columns
        assert "status" in columns
        assert rolled_back["functions"] == [
            f for f in applied["functions"] if f["signature"] == "public.handle_new_auth_user()"
        ]
        rows = conn.execute("SELECT id::text, status FROM public.users").fetchall()
        assert rows == [(alice, "offline")]
        apply_presence_sql(conn, schema=False)
        assert snapshot(conn) == applied
    # The API works again after the round trip.
    assert empty_db.rpc("presence_heartbeat", {}, user_id=alice) is not None
    assert empty_db.rpc("presence_is_online", {"user_id": alice}, user_id=alice) is True


def test_reapplying_on_the_cron_database_keeps_one_job(
    presence_cron_db: PresenceDatabase,
) -> None:
    with presence_cron_db.connect() as conn:
        first = snapshot(conn)
        assert [j["jobname"] for j in first["cron_jobs"]].count(JOB) == 1
        try:
            apply_presence_sql(conn)
            apply_presence_sql(conn)
            # Same jobid too: cron.schedule() updated the job in place.
            assert snapshot(conn) == first
        finally:
            conn.execute("SELECT public.presence_schedule_sweep()")


def test_rollback_on_the_cron_database_unschedules_and_reapply_reschedules(
    presence_cron_db: PresenceDatabase,
) -> None:
    with presence_cron_db.connect() as conn:
        applied = snapshot(conn)
        try:
            rollback_all(conn, schema=False)
            after = snapshot(conn)
            assert [j for j in after["cron_jobs"] if j["jobname"] == JOB] == []
            assert "public.mark_inactive_users_offline()" not in presence_objects(after)
            # pg_cron stays installed: other jobs may use it.
            assert any(e["extname"] == "pg_cron" for e in after["extensions"])
        finally:
            apply_presence_sql(conn, schema=False)
        assert without_jobids(snapshot(conn)) == without_jobids(applied)


EXISTING_USERS = [
    ("00000000-0000-4000-8000-000000000001", "online"),
    ("00000000-0000-4000-8000-000000000002", "offline"),
    ("00000000-0000-4000-8000-000000000003", None),
    ("00000000-0000-4000-8000-000000000004", "away"),  # never beat
]


def make_existing_users_table(conn: psycopg.Connection[Any]) -> None:
    """A users table made by hand, before presence_sdk: only id and status."""
    conn.execute("CREATE TABLE public.users (id uuid PRIMARY KEY, status text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO public.users (id, status) VALUES (%s, %s)", EXISTING_USERS)


def users_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id::text, status FROM public.users ORDER BY id").fetchall()


def without_users_acl(snap: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The snapshot without the grants on public.users (table and columns)."""
    return snap | {
        "relations": [
            r | {"acl": None} if r["relname"] == "users" else r for r in snap["relations"]
        ],
        "columns": [c | {"acl": None} if c["relname"] == "users" else c for c in snap["columns"]],
    }


def narrowed_client_grants(snap: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """anon's and authenticated's privilege letters on public.users and its columns."""

    def letters(acl: list[str]) -> dict[str, str]:
        found = {}
        for item in acl:
            role, _, rest = item.partition("=")
            if role in ("anon", "authenticated"):
                found[role] = rest.split("/")[0]
        return found

    grants = {}
    for rel in snap["relations"]:
        if rel["relname"] == "users":
            grants["table"] = letters(rel["acl"])
    for col in snap["columns"]:
        if col["relname"] == "users" and (found := letters(col["acl"])):
            grants[col["attname"]] = found
    return grants


def check_existing_users_round_trip(conn: psycopg.Connection[Any]) -> list[str]:
    """Migrations twice, rollback, re-apply on a hand-made users table; returns notices."""
    make_existing_users_table(conn)
    original = snapshot(conn)
    notices = apply_presence_sql(conn, schema=False)
    applied = snapshot(conn)
    notices += apply_presence_sql(conn, schema=False)
    assert snapshot(conn) == applied
    assert users_rows(conn) == sorted(EXISTING_USERS)
    constraint = [c for c in applied["constraints"] if c["conname"] == "users_status_check"]
    assert constraint
    assert constraint[0]["convalidated"] is False  # old rows are not rescanned
    rollback_all(conn, schema=False)
    rolled_back = snapshot(conn)
    # Everything is as before, except that the API roles' table-wide INSERT and UPDATE
    # (Supabase's default privileges) stay narrowed to the app's columns.
    assert without_users_acl(without_jobids(rolled_back)) == without_users_acl(
        without_jobids(original)
    )
    # The table-wide grant loses exactly INSERT (a) and UPDATE (w): "rdDxt" on
    # PostgreSQL 15, plus MAINTAIN (m) from 17 on.
    table_wide = {
        role: "".join(c for c in letters if c not in "aw")
        for role, letters in narrowed_client_grants(original)["table"].items()
    }
    assert set(table_wide["anon"]) >= set("rdDxt")
    assert narrowed_client_grants(rolled_back) == {
        "table": table_wide,
        "id": {"anon": "aw", "authenticated": "aw"},
        "status": {"anon": "a", "authenticated": "a"},
    }
    assert users_rows(conn) == sorted(EXISTING_USERS)
    notices += apply_presence_sql(conn, schema=False)
    assert without_jobids(snapshot(conn)) == without_jobids(applied)
    return notices


def test_existing_users_table_without_pg_cron_database(empty_db: PresenceDatabase) -> None:
    with empty_db.connect() as conn:
        notices = check_existing_users_round_trip(conn)
        assert any("pg_cron could not be enabled" in n for n in notices), notices
        # The presence API works on the hand-made table.
        conn.execute(
            "UPDATE public.users SET last_heartbeat = now() - interval '46 seconds' "
            "WHERE status = 'online'"
        )
        # The stale 'online' row and the never-beating 'away' row; NULL is left alone
        # (it already reads as offline).
        assert conn.execute("SELECT public.mark_inactive_users_offline()").fetchone() == (2,)
        assert (
            conn.execute(
                "SELECT status, online FROM public.user_presence ORDER BY user_id"
            ).fetchall()
            == [("offline", False)] * 4
        )
    user = EXISTING_USERS[3][0]
    empty_db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=user)
    presence = empty_db.rpc("presence_get", {"user_ids": [user]}, user_id=user)
    assert [(p["user_id"], p["status"], p["online"]) for p in presence] == [(user, "busy", True)]


@pytest.fixture(scope="module")
def spare_cron_cluster() -> Iterator[PostgresCluster]:
    """A second cluster with pg_cron, whose cron database gets a hand-made users table."""
    with PostgresCluster() as cluster:
        yield cluster


def test_existing_users_table_in_a_pg_cron_database(spare_cron_cluster: PostgresCluster) -> None:
    with spare_cron_cluster.connect() as conn:
        install_supabase_shim(conn)
        # As on Supabase once pg_cron is enabled (the rollback leaves it installed).
        conn.execute("CREATE EXTENSION pg_cron WITH SCHEMA pg_catalog")
        check_existing_users_round_trip(conn)
        jobs = conn.execute("SELECT schedule, command FROM cron.job WHERE jobname = %s", (JOB,))
        schedules = jobs.fetchall()
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
        row = version.fetchone()
    assert row is not None
    assert row[0] == spare_cron_cluster.pg_cron_version
    assert len(schedules) == 1
    major, minor = (int(x) for x in re.findall(r"\d+", str(row[0]))[:2])
    expected = "20 seconds" if (major, minor) >= (1, 5) else "* * * * *"
    assert schedules == [(expected, "SELECT public.mark_inactive_users_offline()")]
