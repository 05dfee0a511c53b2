"""Without a usable pg_cron the migrations still succeed, say what to enable, and the
presence API works (reads are exact without any sweep).

Three real situations:

* ``other_database``: pg_cron is installed and preloaded, but this database is not
  ``cron.database_name`` (a per-test clone; on Supabase: any database but postgres);
* ``not_preloaded``: the pg_cron files are installed but the server does not load it
  (``PostgresCluster(pg_cron=False)``);
* ``not_installed``: a relocated copy of the PostgreSQL tree without any pg_cron files.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pg_trees import mirror_without_pg_cron

from presence_sdk.testing import (
    PostgresCluster,
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

ENVIRONMENTS = ["other_database", "not_preloaded", "not_installed"]


@dataclass(frozen=True)
class Setup:
    db: PresenceDatabase
    notices: list[str]
    second_notices: list[str]
    expected_notice: str
    pg_cron_available: bool


def prepare(db: PresenceDatabase, expected_notice: str, *, available: bool) -> Setup:
    with db.connect() as conn:
        install_supabase_shim(conn)
        notices = apply_presence_sql(conn)
        second = apply_presence_sql(conn)
    return Setup(db, notices, second, expected_notice, available)


@pytest.fixture(scope="module")
def other_database(presence_server: PresenceTestServer) -> Iterator[Setup]:
    with presence_server.database(template=None) as db:
        yield prepare(
            db,
            f"pg_cron could not be enabled in database {db.name} "
            "(can only create extension in database postgres)",
            available=True,
        )


@pytest.fixture(scope="module")
def not_preloaded() -> Iterator[Setup]:
    with PostgresCluster(pg_cron=False) as cluster:
        db = PresenceDatabase(dsn=cluster.dsn("postgres"), name="postgres")
        yield prepare(
            db,
            # pg_cron 1.6: (unrecognized configuration parameter "cron.database_name")
            "pg_cron could not be enabled in database postgres (",
            available=True,
        )


@pytest.fixture(scope="module")
def not_installed() -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="presence-pg-nocron-"))
    root.chmod(0o755)  # the server may run as the postgres OS user
    try:
        bindir = mirror_without_pg_cron(root)
        with PostgresCluster(pg_cron=False, bindir=bindir) as cluster:
            db = PresenceDatabase(dsn=cluster.dsn("postgres"), name="postgres")
            yield prepare(db, "pg_cron is not available on this server", available=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=ENVIRONMENTS)
def setup(request: pytest.FixtureRequest) -> Setup:
    result: Setup = request.getfixturevalue(request.param)
    return result


def test_migrations_succeed_with_a_notice_saying_what_to_enable(setup: Setup) -> None:
    for notices in (setup.notices, setup.second_notices):
        (notice,) = [n for n in notices if "pg_cron" in n]
        assert setup.expected_notice in notice
        assert "mark-inactive-users was not scheduled" in notice
        assert "Reads stay exact" in notice
        assert "shared_preload_libraries" in notice
        assert "Database > Extensions" in notice
        assert notice.endswith("then run: SELECT public.presence_schedule_sweep();")
    assert setup.db.query(
        "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron') AS ext, "
        "to_regnamespace('cron') IS NULL AS no_cron_schema"
    ) == [{"ext": 0, "no_cron_schema": True}]


def test_schedule_sweep_returns_null_and_repeats_the_notice(setup: Setup) -> None:
    notices: list[str] = []
    with setup.db.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        row = conn.execute("SELECT public.presence_schedule_sweep()").fetchone()
    assert row == (None,)
    assert len(notices) == 1
    assert setup.expected_notice in notices[0]


def test_setup_report_says_pg_cron_is_missing(setup: Setup) -> None:
    report = setup.db.rpc("presence_setup_report", role="service_role")
    assert report["pg_cron"]["installed"] is False
    assert report["pg_cron"]["available"] is setup.pg_cron_available
    assert report["pg_cron"]["version"] is None
    assert report["job"] is None
    assert report["job_count"] == 0
    assert report["recent_runs"] == []
    assert all(f["exists"] for f in report["functions"])


def test_heartbeat_reads_and_manual_sweep_work(setup: Setup) -> None:
    db = setup.db
    alice = db.create_user()
    silent = db.create_user()
    db.query(
        "UPDATE public.users SET status = 'online', "
        "last_heartbeat = now() - interval '46 seconds' WHERE id = %s",
        (silent,),
    )
    db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=alice)
    assert db.rpc("presence_is_online", {"user_id": alice}, user_id=alice) is True
    assert db.rpc("presence_is_online", {"user_id": silent}, user_id=alice) is False
    listed = db.rpc("presence_list_online", {"page_size": 1000}, user_id=alice)
    assert alice in [r["user_id"] for r in listed]
    assert silent not in [r["user_id"] for r in listed]
    assert db.rpc("presence_counts", {}, user_id=alice)["online"] >= 1
    assert db.rpc("mark_inactive_users_offline", role="service_role") >= 1
    assert db.query("SELECT status FROM public.users WHERE id = %s", (silent,)) == [
        {"status": "offline"}
    ]
    db.rpc("presence_leave", user_id=alice)
    assert db.rpc("presence_is_online", {"user_id": alice}, user_id=alice) is False
