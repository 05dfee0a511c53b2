"""`supabase db push` alone: the migrations folder, applied in name order, as the CLI does.

The CLI (``supabase db push --db-url ...``) takes each pending file of
``supabase/migrations/`` in name order, splits it into statements, runs them in one
transaction and records ``(version, name, statements)`` in
``supabase_migrations.schema_migrations``; it prints no NOTICEs. ``push`` below does
the same against the real test PostgreSQL, on a fresh project (no ``public.users``:
the base migration creates it) and on a project with its own users table (left as it
is). Rolling back follows the documented order: the migrations' rollbacks newest
first, then ``rollbacks/schema.sql``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_sql_idempotency import snapshot

from presence_sdk._migrate import migrate, split_statements
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, install_supabase_shim

pytestmark = pytest.mark.integration

SUPABASE = Path(__file__).resolve().parents[2] / "supabase"
FILES = sorted((SUPABASE / "migrations").glob("*.sql"))

# What the Supabase CLI creates before its first push.
CLI_HISTORY_TABLE = (
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations "
    "(version text NOT NULL PRIMARY KEY, statements text[], name text)",
)


def push(db: PresenceDatabase) -> list[str]:
    """``supabase db push``: every file not yet recorded, in name order; returns versions."""
    pushed = []
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        for statement in CLI_HISTORY_TABLE:
            conn.execute(statement)
        done = {
            r[0] for r in conn.execute("SELECT version FROM supabase_migrations.schema_migrations")
        }
        for path in FILES:
            version, _, name = path.stem.partition("_")
            if version in done:
                continue
            statements = split_statements(path.read_text())
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO supabase_migrations.schema_migrations (version, name, statements) "
                    "VALUES (%s, %s, %s)",
                    (version, name, statements),
                )
            pushed.append(version)
    return pushed


def problems(db: PresenceDatabase) -> list[str]:
    """verify_setup's findings, pg_cron aside (it only runs in the cron database)."""
    report = verify_setup(dsn=db.dsn, raise_on_error=False)
    return [c.name for c in report.problems if c.name != "pg_cron"]


@pytest.fixture
def new_project(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A new Supabase project: roles and auth schema, no public.users."""
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
        yield db


def test_push_alone_sets_up_a_fresh_project(new_project: PresenceDatabase) -> None:
    assert push(new_project) == [p.name[:14] for p in FILES]
    assert problems(new_project) == []
    # A signed-up user gets a profile row and can beat, as after schema.sql.
    user = new_project.create_user()
    assert new_project.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=user)
    assert new_project.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
    # Re-pushing applies nothing; presence-sdk migrate agrees with the CLI's records.
    assert push(new_project) == []
    result = migrate(new_project.dsn)
    assert (result.applied, len(result.skipped)) == ((), len(FILES))


def test_the_base_migration_builds_what_schema_sql_builds(
    presence_server: PresenceTestServer, new_project: PresenceDatabase
) -> None:
    base = FILES[0]
    assert base.name == "20240000000000_base_schema.sql"
    with presence_server.database(template=None) as other, other.connect() as conn:
        install_supabase_shim(conn)
        conn.execute((SUPABASE / "schema.sql").read_text())
        from_schema = snapshot(conn)
    with new_project.connect() as conn:
        conn.execute(base.read_text())
        from_migration = snapshot(conn)
        conn.execute(base.read_text())  # idempotent
        assert snapshot(conn) == from_migration
    assert from_migration == from_schema


def test_push_keeps_a_project_s_own_users_table(new_project: PresenceDatabase) -> None:
    new_project.query(
        "CREATE TABLE public.users (id uuid PRIMARY KEY, status text, nickname text);"
        "INSERT INTO public.users VALUES ('00000000-0000-4000-8000-000000000001', 'online', 'al')"
    )
    notices: list[str] = []
    with psycopg.connect(new_project.dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(FILES[0].read_text())
    assert notices == [
        "presence: public.users already exists, base schema skipped (the presence migrations "
        "work on a users table with id uuid and status text)."
    ]
    assert push(new_project) == [p.name[:14] for p in FILES]
    rows = new_project.query("SELECT id::text, status, nickname FROM public.users")
    assert rows == [
        {"id": "00000000-0000-4000-8000-000000000001", "status": "online", "nickname": "al"}
    ]
    # The app's table got the presence columns, not schema.sql's policies or trigger.
    assert new_project.query("SELECT count(*) AS n FROM pg_policies WHERE tablename = 'users'") == [
        {"n": 0}
    ]
    assert not new_project.query("SELECT 1 FROM pg_proc WHERE proname = 'handle_new_auth_user'")
    assert problems(new_project) == ["security.rls"]  # what verify says the app should add


def test_a_0_1_0_project_takes_the_new_base_migration_as_a_no_op(
    new_project: PresenceDatabase,
) -> None:
    """0.1.0 shipped no base migration: its projects ran schema.sql, then 1-3."""
    with new_project.connect() as conn:
        conn.execute((SUPABASE / "schema.sql").read_text())
    later = [p for p in FILES if p.name[:14] > "20240000000000"]
    with psycopg.connect(new_project.dsn, autocommit=True) as conn:
        for statement in CLI_HISTORY_TABLE:
            conn.execute(statement)
        for path in later:
            conn.execute(path.read_text())
            conn.execute(
                "INSERT INTO supabase_migrations.schema_migrations (version, name) VALUES (%s, %s)",
                (path.name[:14], path.stem[15:]),
            )
    user = new_project.create_user(status="online", last_heartbeat="2024-01-01T00:00:00Z")
    before: Any = new_project.query("SELECT * FROM public.users ORDER BY id")
    # `supabase db push --include-all` (the CLI asks for it: the file sorts before the
    # recorded ones) or `presence-sdk migrate` applies just the base migration.
    assert push(new_project) == ["20240000000000"]
    assert new_project.query("SELECT * FROM public.users ORDER BY id") == before
    assert problems(new_project) == []
    assert new_project.rpc("presence_get", {"user_ids": [user]}, user_id=user)[0]["status"] == (
        "offline"  # read-time exact: that heartbeat is long past
    )


def test_documented_rollback_order_returns_to_the_fresh_project(
    new_project: PresenceDatabase,
) -> None:
    with new_project.connect() as conn:
        fresh = snapshot(conn)
    push(new_project)
    with new_project.connect() as conn:
        for path in reversed(FILES):  # the migrations' rollbacks, newest first
            conn.execute((SUPABASE / "rollbacks" / path.name).read_text())
        assert conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone() == (True,)
        conn.execute((SUPABASE / "rollbacks" / "schema.sql").read_text())  # then the table
        conn.execute("DROP SCHEMA supabase_migrations CASCADE")
        assert snapshot(conn) == fresh
