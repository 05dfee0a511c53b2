"""A database set up by 0.1.0, with live rows, upgrades to exactly a fresh install.

0.1.0 recorded migrations 20240000000001..03 in supabase_migrations.schema_migrations,
and neither ``presence-sdk migrate`` nor ``supabase db push`` ever runs a recorded
version again: issue 11's fixes reach such a database only through
20240000000004_hardening. These tests set a database up with 0.1.0's own SQL
(``sql_0_1_0/``, verbatim), recorded as 0.1.0's tools recorded it, add live rows, and
upgrade it the way each tool does (and, without records, by pasting the whole SQL
again in the SQL editor). Everything must end exactly as on a fresh install
(catalog snapshot: functions by ``pg_get_functiondef``, grants including column grants,
policies, constraints, comments, the pg_cron job), with the rows untouched.

The tests about the job run on private pg_cron clusters (pg_cron only runs in one
database per cluster); the others on clones of the session's server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sql_support import (
    HAND_MADE_USERS,
    catalog_snapshot,
    denied,
    rowcount,
    without_jobids,
)

from presence_sdk import Migration, migrations, schema_sql
from presence_sdk._exceptions import MigrationError
from presence_sdk._migrate import migrate, rollback, split_statements
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import (
    PostgresCluster,
    PresenceDatabase,
    PresenceTestServer,
    install_supabase_shim,
    supabase_shim_sql,
)

pytestmark = pytest.mark.integration

HARDENING = "20240000000004"
OLD = Path(__file__).with_name("sql_0_1_0")
OLD_SCHEMA = (OLD / "schema.sql").read_text()
OLD_MIGRATIONS = [
    Migration(version=path.name[:14], name=path.stem[15:], up=path.read_text(), down="")
    for path in sorted((OLD / "migrations").glob("*.sql"))
]
#: Today's files as far as 04 (later migrations change the presence API on purpose).
UP_TO_HARDENING = [m for m in migrations() if m.version <= HARDENING]
#: 0.1.0's files today (0.1.0 had no base_schema migration: it ran schema.sql first).
BEFORE_HARDENING = [m for m in migrations() if m.version < HARDENING and m.name != "base_schema"]
BASE = next(m.version for m in migrations() if m.name == "base_schema")
VERSIONS = [m.version for m in migrations()]
OLD_VERSIONS = [m.version for m in OLD_MIGRATIONS]
#: What a database that 0.1.0 set up still lacks (0.1.0 had no base_schema migration).
PENDING_AFTER_0_1_0 = [v for v in VERSIONS if v not in OLD_VERSIONS]
USERS = (
    "SELECT id, status, last_heartbeat, online_since, display_name FROM public.users ORDER BY id"
)
FORGE = "UPDATE public.users SET status = 'online', last_heartbeat = 'infinity' WHERE id = %(me)s"
Snapshot = dict[str, list[dict[str, Any]]]


def test_the_0_1_0_files_are_the_released_versions_and_04_is_new() -> None:
    assert [m.filename for m in OLD_MIGRATIONS] == [m.filename for m in BEFORE_HARDENING]
    assert [m.version for m in UP_TO_HARDENING][-1] == HARDENING
    assert schema_sql() == OLD_SCHEMA  # unchanged since 0.1.0


# -- how each tool applies files ------------------------------------------------------


def run_files(db: PresenceDatabase, scripts: list[str]) -> None:
    """Paste each script into the SQL editor (psql -f): one implicit transaction each."""
    with db.connect() as conn:
        for script in scripts:
            conn.execute(script)


def sdk_migrate(db: PresenceDatabase, files: list[Migration], *, schema: str | None) -> list[str]:
    """``presence-sdk migrate`` shipping ``files`` (0.1.0's or today's); applied versions."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("presence_sdk._migrate.migrations", lambda: list(files))
        patch.setattr("presence_sdk._migrate.schema_sql", lambda: schema or "")
        return list(migrate(db.dsn, with_schema=schema is not None).applied)


def cli_push(db: PresenceDatabase, files: list[Migration], *, schema: str | None) -> list[str]:
    """``supabase db push``: pending files in name order, each in one transaction with
    its record (version, name, statements) in the CLI's table."""
    applied: list[str] = []
    with db.connect() as conn:
        if schema is not None:
            conn.execute(schema)
        conn.execute("CREATE SCHEMA IF NOT EXISTS supabase_migrations")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations "
            "(version text NOT NULL PRIMARY KEY, statements text[], name text)"
        )
        recorded = {
            row[0]
            for row in conn.execute("SELECT version FROM supabase_migrations.schema_migrations")
        }
        for migration in sorted(files, key=lambda m: m.filename):
            if migration.version in recorded:
                continue
            statements = split_statements(migration.up)
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO supabase_migrations.schema_migrations (version, statements, "
                    "name) VALUES (%s, %s, %s)",
                    (migration.version, statements, migration.name),
                )
            applied.append(migration.version)
    return applied


Tool = Callable[..., list[str]]
TOOLS: dict[str, Tool] = {"migrate": sdk_migrate, "db push": cli_push}


def recorded_versions(db: PresenceDatabase) -> list[str]:
    rows = db.query("SELECT version FROM supabase_migrations.schema_migrations ORDER BY 1")
    return [row["version"] for row in rows]


# -- live rows ------------------------------------------------------------------------


def add_live_rows(db: PresenceDatabase) -> dict[str, str]:
    """Users online and away, one who left, one who never beat (through the API)."""
    users = {name: db.create_user() for name in ("online", "away", "left", "never")}
    db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=users["online"])
    db.rpc("presence_heartbeat", {"new_status": "away"}, user_id=users["away"])
    db.rpc("presence_heartbeat", user_id=users["left"])
    db.rpc("presence_leave", user_id=users["left"])
    return users


def assert_presence_kept(db: PresenceDatabase, users: dict[str, str]) -> None:
    reader = users["never"]
    assert db.rpc("presence_is_online", {"user_id": users["online"]}, user_id=reader) is True
    assert db.rpc("presence_is_online", {"user_id": users["away"]}, user_id=reader) is True
    assert db.rpc("presence_is_online", {"user_id": users["left"]}, user_id=reader) is False
    assert db.rpc("presence_counts", user_id=reader) == {
        "online": 1,
        "away": 1,
        "busy": 0,
        "offline": 2,
        "offline_estimated": False,  # exact: a small table (migration 7)
    }


def settings(db: PresenceDatabase) -> list[dict[str, Any]]:
    return db.query("SELECT * FROM public.presence_config")


# -- on a pg_cron database: the tools, end to end ------------------------------------


def cron_database(cluster: PostgresCluster) -> PresenceDatabase:
    """The cluster's pg_cron database, with the Supabase shim."""
    db = PresenceDatabase(dsn=cluster.dsn(), name="postgres")
    with db.connect() as conn:
        install_supabase_shim(conn)
    return db


@pytest.fixture(scope="module")
def fresh_install() -> Iterator[Snapshot]:
    """The catalog of a fresh project after ``presence-sdk migrate --with-schema``."""
    with PostgresCluster() as cluster:
        db = cron_database(cluster)
        assert migrate(db.dsn, with_schema=True).applied == tuple(VERSIONS)
        with db.connect() as conn:
            yield catalog_snapshot(conn)


@pytest.mark.parametrize("tool", TOOLS)
def test_a_recorded_0_1_0_database_with_live_rows_gets_exactly_a_fresh_install(
    tool: str, fresh_install: Snapshot
) -> None:
    apply = TOOLS[tool]
    with PostgresCluster() as cluster:
        db = cron_database(cluster)
        assert apply(db, OLD_MIGRATIONS, schema=OLD_SCHEMA) == OLD_VERSIONS
        users = add_live_rows(db)
        rows, timings = db.query(USERS), settings(db)

        # verify sees that the database has not been upgraded, and says how.
        findings = {c.name: c for c in verify_setup(dsn=db.dsn, raise_on_error=False).problems}
        assert "schema.report" in findings, findings
        assert "presence-sdk migrate" in (findings["schema.report"].fix or "")

        assert apply(db, migrations(), schema=schema_sql()) == PENDING_AFTER_0_1_0
        assert HARDENING in PENDING_AFTER_0_1_0
        assert recorded_versions(db) == VERSIONS

        assert db.query(USERS) == rows
        # The timings are kept; the event log (migration 6) adds its retention setting.
        upgraded_settings = settings(db)
        assert [s["events_retention_days"] for s in upgraded_settings] == [30]
        assert [{k: v for k, v in s.items() if k != "events_retention_days"}
                for s in upgraded_settings] == timings  # fmt: skip
        assert_presence_kept(db, users)
        with db.connect() as conn:
            upgraded = catalog_snapshot(conn)
        assert [j["jobname"] for j in upgraded["cron_jobs"]] == ["mark-inactive-users"]
        assert without_jobids(upgraded) == without_jobids(fresh_install)
        assert [c.name for c in verify_setup(dsn=db.dsn, raise_on_error=False).problems] == []

        # Running the tool again does nothing; the API keeps working.
        assert apply(db, migrations(), schema=schema_sql()) == []
        db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=users["online"])
        assert (
            db.rpc("presence_get", {"user_ids": [users["online"]]}, user_id=users["away"])[0][
                "status"
            ]
            == "busy"
        )


def test_0_1_0_timings_that_break_a_new_check_stop_the_upgrade_with_the_repair(
    shim_db: PresenceDatabase,
) -> None:
    """0.1.0 accepted a sweep longer than the timeout; 04 refuses it, changes nothing."""
    sdk_migrate(shim_db, OLD_MIGRATIONS, schema=OLD_SCHEMA)
    shim_db.query("SELECT public.presence_configure(sweep_interval_seconds => 50)")
    before = snapshot_of(shim_db)
    with pytest.raises(MigrationError, match="presence_config_sweep_within_timeout") as raised:
        migrate(shim_db.dsn)
    hint = str(raised.value).split("e.g. ", 1)[1].split("; then", 1)[0]
    assert hint == (
        "UPDATE public.presence_config "
        "SET sweep_interval_seconds = least(sweep_interval_seconds, timeout_seconds)"
    )
    assert snapshot_of(shim_db) == before
    assert recorded_versions(shim_db) == [BASE, *OLD_VERSIONS]  # the base went in first
    shim_db.query(hint)
    assert HARDENING in migrate(shim_db.dsn).applied
    assert settings(shim_db)[0]["sweep_interval_seconds"] == 45


# -- on clones: what 04 holds, a hand-made users table, rollback ---------------------


@pytest.fixture
def shim_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """An empty project: Supabase roles, ``auth`` schema and default privileges."""
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        yield db


def snapshot_of(db: PresenceDatabase) -> Snapshot:
    with db.connect() as conn:
        return catalog_snapshot(conn)


LAYOUTS = {"schema.sql": OLD_SCHEMA, "hand-made users table": HAND_MADE_USERS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_04_holds_exactly_what_01_to_03_install_today(
    presence_server: PresenceTestServer, layout: str
) -> None:
    """Drift guard: 0.1.0 + 04 == today's 01..03 == today's 01..03 + 04."""
    base = [supabase_shim_sql(), LAYOUTS[layout]]
    hardening = UP_TO_HARDENING[-1].up
    with presence_server.database(template=None) as today:
        run_files(today, [*base, *(m.up for m in BEFORE_HARDENING)])
        wanted = snapshot_of(today)
        run_files(today, [hardening])
        assert snapshot_of(today) == wanted
    with presence_server.database(template=None) as old:
        run_files(old, [*base, *(m.up for m in OLD_MIGRATIONS)])
        assert snapshot_of(old) != wanted  # 0.1.0 really differs
        run_files(old, [hardening])
        assert snapshot_of(old) == wanted


def test_a_0_1_0_hand_made_users_table_no_longer_lets_users_forge_presence(
    presence_server: PresenceTestServer, shim_db: PresenceDatabase
) -> None:
    """Issue 11's defect 2 on a database that 0.1.0's migrate set up."""
    run_files(shim_db, [HAND_MADE_USERS])
    sdk_migrate(shim_db, OLD_MIGRATIONS, schema=None)
    users = add_live_rows(shim_db)
    victim = users["never"]
    assert rowcount(shim_db, "authenticated", victim, FORGE) == 1  # 0.1.0's hole
    rows = shim_db.query(USERS.replace("display_name", "nickname"))

    assert migrate(shim_db.dsn).applied == tuple(PENDING_AFTER_0_1_0)
    assert "permission denied" in denied(shim_db, "authenticated", victim, FORGE)
    assert shim_db.query(USERS.replace("display_name", "nickname")) == rows
    assert_presence_kept(shim_db, users)
    # The app's own columns stay writable by their owner.
    assert (
        rowcount(
            shim_db,
            "authenticated",
            victim,
            "UPDATE public.users SET nickname = 'me' WHERE id = %(me)s",
        )
        == 1
    )
    with presence_server.database(template=None) as fresh:
        run_files(fresh, [supabase_shim_sql(), HAND_MADE_USERS])
        migrate(fresh.dsn)
        assert snapshot_of(shim_db) == snapshot_of(fresh)


def test_a_0_1_0_setup_made_in_the_sql_editor_takes_the_whole_sql_pasted_again(
    presence_server: PresenceTestServer, shim_db: PresenceDatabase
) -> None:
    """No records: the user pastes ``presence-sdk sql`` (schema + every file) again."""
    run_files(shim_db, [OLD_SCHEMA, *(m.up for m in OLD_MIGRATIONS)])
    users = add_live_rows(shim_db)
    rows = shim_db.query(USERS)
    run_files(shim_db, [schema_sql(), *(m.up for m in migrations())])
    assert shim_db.query(USERS) == rows
    assert_presence_kept(shim_db, users)
    with presence_server.database(template=None) as fresh:
        run_files(fresh, [supabase_shim_sql(), schema_sql(), *(m.up for m in migrations())])
        assert snapshot_of(shim_db) == snapshot_of(fresh)


def test_rolling_back_04_leaves_what_01_to_03_install(
    presence_server: PresenceTestServer, shim_db: PresenceDatabase
) -> None:
    migrate(shim_db.dsn, with_schema=True)
    user = shim_db.create_user()
    shim_db.rpc("presence_heartbeat", user_id=user)
    rows = shim_db.query(USERS)
    rolled = rollback(shim_db.dsn, to=BEFORE_HARDENING[-1].version)
    assert HARDENING in rolled.rolled_back
    assert recorded_versions(shim_db) == [BASE, *OLD_VERSIONS]
    assert shim_db.query(USERS) == rows
    with presence_server.database(template=None) as today:
        run_files(today, [supabase_shim_sql(), schema_sql(), *(m.up for m in BEFORE_HARDENING)])
        assert snapshot_of(shim_db) == snapshot_of(today)
    assert migrate(shim_db.dsn).applied == tuple(v for v in VERSIONS if v >= HARDENING)
    assert shim_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
