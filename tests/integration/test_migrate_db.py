"""presence_sdk.migrate()/rollback() on real PostgreSQL databases.

Fresh databases get only the Supabase shim (no presence SQL), like a new project.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from presence_sdk._exceptions import ConfigurationError, MigrationError
from presence_sdk._migrate import LOCK_KEY, applied_versions, migrate, rollback, split_statements
from presence_sdk._sql import migrations
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, apply_presence_sql
from presence_sdk.testing import install_supabase_shim as _install_shim

pytestmark = pytest.mark.integration

VERSIONS = tuple(m.version for m in migrations())


@pytest.fixture
def empty_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A new project: Supabase roles and auth schema, none of the presence SQL."""
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            _install_shim(conn)
        yield db


def records(db: PresenceDatabase) -> list[dict[str, object]]:
    return db.query(
        "SELECT version, name, statements FROM supabase_migrations.schema_migrations "
        "ORDER BY version"
    )


def exists(db: PresenceDatabase, expression: str) -> bool:
    return bool(db.query(f"SELECT {expression} IS NOT NULL AS found")[0]["found"])


def non_cron_problems(db: PresenceDatabase) -> list[str]:
    report = verify_setup(dsn=db.dsn, raise_on_error=False)
    return [c.name for c in report.problems if c.name != "pg_cron"]


def test_fresh_project_then_rerun_is_a_no_op(empty_db: PresenceDatabase) -> None:
    first = migrate(empty_db.dsn, with_schema=True)
    assert first.schema_applied
    assert first.applied == VERSIONS
    assert first.skipped == ()
    assert any(n.startswith("presence: pg_cron could not be enabled") for n in first.notices)
    rows = records(empty_db)
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in migrations()]
    for row, migration in zip(rows, migrations(), strict=True):
        assert row["statements"] == split_statements(migration.up)
    assert non_cron_problems(empty_db) == []

    again = migrate(empty_db.dsn, with_schema=True)
    assert (again.applied, again.skipped, again.schema_applied) == ((), VERSIONS, False)
    assert records(empty_db) == rows
    assert applied_versions(empty_db.dsn) == list(VERSIONS)


def test_the_table_is_the_supabase_cli_one(empty_db: PresenceDatabase) -> None:
    # An older Supabase CLI created the table with the version column only.
    empty_db.query("CREATE SCHEMA supabase_migrations")
    empty_db.query(
        "CREATE TABLE supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY)"
    )
    migrate(empty_db.dsn, with_schema=True)
    columns = empty_db.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'supabase_migrations' AND table_name = 'schema_migrations' "
        "ORDER BY ordinal_position"
    )
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("version", "text"),
        ("statements", "ARRAY"),
        ("name", "text"),
    ]


def test_versions_pushed_by_the_supabase_cli_are_not_applied_again(
    empty_db: PresenceDatabase,
) -> None:
    with empty_db.connect() as conn:
        apply_presence_sql(conn)
        conn.execute("CREATE SCHEMA supabase_migrations")
        conn.execute(
            "CREATE TABLE supabase_migrations.schema_migrations "
            "(version text PRIMARY KEY, statements text[], name text)"
        )
        for migration in migrations():
            conn.execute(
                "INSERT INTO supabase_migrations.schema_migrations VALUES (%s, %s, %s)",
                (migration.version, split_statements(migration.up), migration.name),
            )
    result = migrate(empty_db.dsn)
    assert (result.applied, result.skipped) == ((), VERSIONS)


def test_missing_users_table_needs_with_schema(empty_db: PresenceDatabase) -> None:
    for dry_run in (True, False):
        with pytest.raises(MigrationError, match=r"public\.users does not exist: pass --with"):
            migrate(empty_db.dsn, dry_run=dry_run)
    assert not exists(empty_db, "to_regclass('public.users')")
    assert records(empty_db) == []


def test_existing_users_table_is_kept(empty_db: PresenceDatabase) -> None:
    empty_db.query("CREATE TABLE public.users (id uuid PRIMARY KEY, status text)")
    result = migrate(empty_db.dsn, with_schema=True)
    assert not result.schema_applied
    assert result.applied == VERSIONS
    assert not exists(empty_db, "to_regclass('public.users_display_name_check')")
    columns = {
        r["column_name"]
        for r in empty_db.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
            "AND table_schema = 'public'"
        )
    }
    assert columns == {"id", "status", "last_heartbeat", "online_since"}
    # verify_setup notices what the app's own table lacks.
    assert non_cron_problems(empty_db) == ["security.rls"]


def test_dry_run_changes_nothing(empty_db: PresenceDatabase) -> None:
    plan = migrate(empty_db.dsn, with_schema=True, dry_run=True)
    assert plan.dry_run
    assert plan.applied == VERSIONS
    assert plan.schema_applied
    assert not exists(empty_db, "to_regnamespace('supabase_migrations')")
    assert not exists(empty_db, "to_regclass('public.users')")
    migrate(empty_db.dsn, with_schema=True)
    plan = migrate(empty_db.dsn, dry_run=True)
    assert (plan.applied, plan.skipped, plan.schema_applied) == ((), VERSIONS, False)


def test_a_failing_migration_is_rolled_back_and_not_recorded(empty_db: PresenceDatabase) -> None:
    empty_db.query("CREATE TABLE public.presence_config (x integer)")  # in the way
    with pytest.raises(MigrationError) as raised:
        migrate(empty_db.dsn, with_schema=True)
    message = str(raised.value)
    assert message.startswith(f"{migrations()[0].filename} failed at statement ")
    assert "[INSERT INTO public.presence_config (singleton)" in message
    assert 'column "singleton" of relation "presence_config" does not exist' in message
    assert "nothing of it was applied" in message
    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedColumn)
    assert records(empty_db) == []
    assert exists(empty_db, "to_regclass('public.users')")  # schema.sql ran before
    assert not empty_db.query(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'users' "
        "AND column_name = 'last_heartbeat'"
    )


def test_rollback_to_a_version_and_back(empty_db: PresenceDatabase) -> None:
    migrate(empty_db.dsn, with_schema=True)
    first = VERSIONS[0]
    later = tuple(reversed(VERSIONS[1:]))  # newest first

    plan = rollback(empty_db.dsn, to=first, dry_run=True)
    assert (plan.rolled_back, plan.dry_run) == (later, True)
    assert [r["version"] for r in records(empty_db)] == list(VERSIONS)

    result = rollback(empty_db.dsn, to=first)
    assert result.rolled_back == later
    assert [r["version"] for r in records(empty_db)] == [first]
    assert not exists(empty_db, "to_regprocedure('public.presence_setup_report()')")
    assert not exists(empty_db, "to_regprocedure('public.presence_heartbeat(text)')")
    assert exists(empty_db, "to_regprocedure('public.mark_inactive_users_offline()')")

    again = rollback(empty_db.dsn, to=first)
    assert (again.rolled_back, again.skipped) == ((), later)

    result = rollback(empty_db.dsn, to="0")
    assert result.rolled_back == (first,)
    assert records(empty_db) == []
    assert not exists(empty_db, "to_regclass('public.presence_config')")
    assert exists(empty_db, "to_regclass('public.users')")  # never dropped by rollback

    result = migrate(empty_db.dsn)
    assert result.applied == VERSIONS
    assert non_cron_problems(empty_db) == []


def test_rollback_target_must_be_a_shipped_version(empty_db: PresenceDatabase) -> None:
    with pytest.raises(ConfigurationError, match="unknown version '123'"):
        rollback(empty_db.dsn, to="123")


def test_rollback_without_any_record_does_nothing(empty_db: PresenceDatabase) -> None:
    result = rollback(empty_db.dsn, to="0")
    assert (result.rolled_back, result.skipped) == ((), tuple(reversed(VERSIONS)))


def _waiting_for_lock(db: PresenceDatabase) -> int:
    rows = db.query(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s",
        (db.name,),
    )
    return int(rows[0]["n"])  # type: ignore[call-overload]


def test_two_concurrent_processes_apply_each_migration_once(empty_db: PresenceDatabase) -> None:
    command = [sys.executable, "-m", "presence_sdk", "migrate", "--dsn", empty_db.dsn]
    with empty_db.connect() as blocker:
        # Hold the migration lock so that both runs really start together.
        blocker.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        procs = [
            subprocess.Popen(
                [*command, "--with-schema"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while _waiting_for_lock(empty_db) < 2:
                assert time.monotonic() < deadline, "the two runs never waited for the lock"
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                time.sleep(0.05)
        finally:
            blocker.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = [
        line.removeprefix("applied ")
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("applied ")
    ]
    assert sorted(applied) == sorted(
        ["schema.sql (public.users did not exist)"] + [m.filename for m in migrations()]
    )
    assert [r["version"] for r in records(empty_db)] == list(VERSIONS)
    assert non_cron_problems(empty_db) == []


def test_waiting_too_long_for_the_lock(empty_db: PresenceDatabase) -> None:
    with empty_db.connect() as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"timed out after 0\.3 s waiting for another"):
            migrate(empty_db.dsn, with_schema=True, lock_timeout=0.3)
        assert time.monotonic() - started < 5
    assert not exists(empty_db, "to_regclass('public.users')")


def test_with_schema_on_plain_postgres_explains_the_auth_schema(
    presence_server: PresenceTestServer,
) -> None:
    with presence_server.database(template=None) as db:  # no Supabase shim
        with pytest.raises(MigrationError) as raised:
            migrate(db.dsn, with_schema=True)
        assert 'schema "auth" does not exist' in str(raised.value)
        assert "schema.sql is for Supabase projects" in str(raised.value)
        assert not exists(db, "to_regclass('public.users')")
