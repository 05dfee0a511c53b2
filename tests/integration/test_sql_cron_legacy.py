"""The migration's fallback for old pg_cron, on a real pg_cron 1.4.2 (Debian bookworm).

pg_cron < 1.5 has no interval schedules: the migration must schedule
``'* * * * *'`` (every minute) and say so in a NOTICE, and re-running it must not
duplicate the job. scripts/stage-pg-cron-legacy.sh stages a private, relocated
PostgreSQL 15 tree with Debian's pg_cron 1.4.2 next to the system PostgreSQL (whose
pg_cron 1.6.7 stays untouched); the test starts a second cluster from that tree.
The fixture runs the script itself (idempotent: instant once staged), so a missing
tree or a failed download fails the test with the script's output.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from presence_sdk import migrations
from presence_sdk.testing import (
    PostgresCluster,
    PresenceDatabase,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGE_SCRIPT = REPO / "scripts" / "stage-pg-cron-legacy.sh"
JOB = "mark-inactive-users"
COMMAND = "SELECT public.mark_inactive_users_offline()"


def staged_bindir() -> Path:
    result = subprocess.run(
        [str(STAGE_SCRIPT)], capture_output=True, text=True, check=False, env=os.environ.copy()
    )
    assert result.returncode == 0, (
        f"{STAGE_SCRIPT.name} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    )
    bindir = Path(result.stdout.strip().splitlines()[-1])
    assert (bindir / "postgres").is_file(), result.stdout
    return bindir


@pytest.fixture(scope="module")
def legacy_cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster(bindir=staged_bindir()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def legacy_db(legacy_cluster: PostgresCluster) -> tuple[PresenceDatabase, list[str]]:
    """The cron database of the 1.4.2 cluster, with the shim and the presence SQL."""
    db = PresenceDatabase(dsn=legacy_cluster.dsn("postgres"), name="postgres")
    with db.connect() as conn:
        install_supabase_shim(conn)
        notices = apply_presence_sql(conn)
    return db, notices


def jobs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT jobid, schedule, command, active FROM cron.job WHERE jobname = %s", (JOB,)
    ).fetchall()


def test_the_staged_tree_really_runs_pg_cron_1_4(legacy_cluster: PostgresCluster) -> None:
    assert legacy_cluster.bindir is not None
    assert legacy_cluster.bindir != Path("/usr/lib/postgresql/15/bin")
    assert legacy_cluster.pg_cron_version == "1.4-1"  # Debian's pg_cron 1.4.2
    with legacy_cluster.connect() as conn:
        row = conn.execute(
            "SELECT current_setting('shared_preload_libraries'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'), "
            "(SELECT setting FROM pg_config WHERE name = 'SHAREDIR')"
        ).fetchone()
    assert row is not None
    libs, version, sharedir = row
    assert libs == "pg_cron"
    assert version in (None, "1.4-1")  # None until the migration enables it
    # The relocated tree's own share directory, not the system's.
    assert str(sharedir).startswith(
        str(legacy_cluster.bindir).split("/usr/lib/")[0] + "/usr/share/"
    )


def test_fallback_schedules_every_minute_with_a_notice(
    legacy_db: tuple[PresenceDatabase, list[str]],
) -> None:
    db, notices = legacy_db
    (notice,) = [n for n in notices if "pg_cron" in n]
    assert notice == (
        "presence: pg_cron 1.4-1 has no interval schedules (needs >= 1.5); "
        "mark-inactive-users runs every minute instead of every 20 seconds."
    )
    with db.connect() as conn:
        assert conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"
        ).fetchone() == ("1.4-1",)
        ((_jobid, schedule, command, active),) = jobs(conn)
    assert (schedule, command, active) == ("* * * * *", COMMAND, True)


def test_reapplying_keeps_one_job_and_repeats_the_notice(
    legacy_db: tuple[PresenceDatabase, list[str]],
) -> None:
    db, _ = legacy_db
    with db.connect() as conn:
        before = jobs(conn)
        notices = apply_presence_sql(conn)
        notices += apply_presence_sql(conn)
        assert jobs(conn) == before
        assert len(before) == 1
        legacy = [n for n in notices if "no interval schedules" in n]
        assert len(legacy) == 2
        row = conn.execute("SELECT public.presence_schedule_sweep()").fetchone()
        assert row == ("* * * * *",)
        assert jobs(conn) == before


def test_rollback_and_reapply_on_pg_cron_1_4(
    legacy_db: tuple[PresenceDatabase, list[str]],
) -> None:
    db, _ = legacy_db
    with db.connect() as conn:
        for migration in reversed(migrations()):
            conn.execute(migration.down)
        assert jobs(conn) == []
        apply_presence_sql(conn, schema=False)
        ((_jobid, schedule, command, _active),) = jobs(conn)
    assert (schedule, command) == ("* * * * *", COMMAND)


def test_setup_report_shows_the_effective_period(
    legacy_db: tuple[PresenceDatabase, list[str]],
) -> None:
    db, _ = legacy_db
    report = db.rpc("presence_setup_report", role="service_role")
    assert report["pg_cron"]["version"] == "1.4-1"
    assert report["pg_cron"]["installed"] is True
    assert report["job"]["schedule"] == "* * * * *"
    assert report["job"]["command"] == COMMAND
    assert report["job_count"] == 1


def test_configure_on_pg_cron_1_4_keeps_every_minute(
    legacy_db: tuple[PresenceDatabase, list[str]],
) -> None:
    db, _ = legacy_db
    with db.connect() as conn:
        try:
            settings = conn.execute(
                "SELECT public.presence_configure(sweep_interval_seconds => 10)"
            ).fetchone()
            assert settings is not None
            assert settings[0]["sweep_interval_seconds"] == 10
            ((_jobid, schedule, _command, _active),) = jobs(conn)
            assert schedule == "* * * * *"
        finally:
            conn.execute("SELECT public.presence_configure(sweep_interval_seconds => 20)")
