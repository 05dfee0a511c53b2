"""The pg_cron job ``mark-inactive-users`` in the cron database (real pg_cron).

The expected schedule follows the installed pg_cron version (read from the cluster):
``'20 seconds'`` on pg_cron >= 1.5 (Supabase runs 1.6), ``'* * * * *'`` plus a NOTICE
on older versions. CI runs these tests on pg_cron 1.6.7 and again on Debian's 1.4.2,
so both branches are proven on the real extension.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from cron_support import (
    effective_period,
    expected_schedule,
    has_interval_schedules,
    legacy_notice,
)

from presence_sdk.testing import PresenceDatabase, PresenceTestServer, apply_presence_sql

pytestmark = pytest.mark.integration

JOB = "mark-inactive-users"
COMMAND = "SELECT public.mark_inactive_users_offline()"

# The note's "monitor the job logs" query, verbatim.
NOTE_JOB_RUNS_QUERY = """SELECT * FROM cron.job_run_details 
     WHERE jobid = (
       SELECT jobid FROM cron.job 
       WHERE jobname = 'mark-inactive-users'
     )
     ORDER BY runid DESC
     LIMIT 5;"""  # noqa: W291 (trailing spaces are the note's)


def collect_notices(conn: psycopg.Connection[Any]) -> list[str]:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    return notices


def jobs(db: PresenceDatabase) -> list[dict[str, Any]]:
    return db.query(
        "SELECT jobid, schedule, command, active, database, username FROM cron.job "
        "WHERE jobname = %s",
        (JOB,),
    )


def test_job_is_scheduled_by_the_migration(
    presence_cron_db: PresenceDatabase, presence_server: PresenceTestServer, cron_version: str
) -> None:
    (job,) = jobs(presence_cron_db)
    assert job["active"] is True
    assert job["schedule"] == expected_schedule(cron_version)
    assert job["command"] == COMMAND
    assert job["database"] == "postgres"
    assert job["username"] == "postgres"
    cron_notices = [n for n in presence_server.cron_notices if "pg_cron" in n]
    if has_interval_schedules(cron_version):
        assert job["schedule"] == "20 seconds"
        assert cron_notices == []
    else:
        assert job["schedule"] == "* * * * *"
        assert cron_notices == [legacy_notice(cron_version)]


def test_reapplying_everything_keeps_one_job_and_repeats_the_notice(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    before = jobs(presence_cron_db)
    with presence_cron_db.connect() as conn:
        notices = apply_presence_sql(conn) + apply_presence_sql(conn)
    assert jobs(presence_cron_db) == before
    assert len(before) == 1
    legacy = [n for n in notices if "no interval schedules" in n]
    expected = [] if has_interval_schedules(cron_version) else [legacy_notice(cron_version)] * 2
    assert legacy == expected


def test_rescheduling_upserts_the_same_job(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    before = jobs(presence_cron_db)
    with presence_cron_db.connect() as conn:
        notices = collect_notices(conn)
        for _ in range(3):
            row = conn.execute("SELECT public.presence_schedule_sweep()").fetchone()
            assert row == (expected_schedule(cron_version),)
    assert jobs(presence_cron_db) == before
    legacy_notices = [n for n in notices if "no interval schedules" in n]
    assert len(legacy_notices) == (0 if has_interval_schedules(cron_version) else 3)


def test_configure_reschedules_from_the_single_settings_row(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    (before,) = jobs(presence_cron_db)
    try:
        with presence_cron_db.connect() as conn:
            row = conn.execute(
                "SELECT public.presence_configure(sweep_interval_seconds => 30)"
            ).fetchone()
        assert row is not None
        assert row[0]["sweep_interval_seconds"] == 30
        assert row[0]["timeout_seconds"] == 45
        (job,) = jobs(presence_cron_db)
        assert job["jobid"] == before["jobid"]
        assert job["schedule"] == expected_schedule(cron_version, 30)
    finally:
        with presence_cron_db.connect() as conn:
            conn.execute("SELECT public.presence_configure(sweep_interval_seconds => 20)")
    assert jobs(presence_cron_db) == [before]


def test_setup_report_describes_the_job(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    report = presence_cron_db.rpc("presence_setup_report", role="service_role")
    assert report["pg_cron"] == {
        "available": True,
        "installed": True,
        "version": cron_version,
        "database_name": "postgres",
    }
    assert report["job_count"] == 1
    assert report["job"]["schedule"] == expected_schedule(cron_version)
    assert report["job"]["command"] == COMMAND
    assert report["job"]["active"] is True
    assert report["settings"]["sweep_interval_seconds"] == 20
    assert report["settings"]["timeout_seconds"] == 45


@pytest.mark.slow
def test_the_real_job_marks_a_silent_user_offline(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    """No manual sweep: pg_cron's own run flips a user silent for 46 s."""
    period = effective_period(cron_version)
    user = presence_cron_db.create_user()
    try:
        rows = presence_cron_db.query(
            "UPDATE public.users SET status = 'online', "
            "last_heartbeat = now() - interval '46 seconds' WHERE id = %s "
            "RETURNING clock_timestamp() AS arranged_at",
            (user,),
        )
        arranged_at = rows[0]["arranged_at"]
        started = time.monotonic()
        deadline = started + period + 8
        status = "online"
        while time.monotonic() < deadline:
            status = presence_cron_db.query(
                "SELECT status FROM public.users WHERE id = %s", (user,)
            )[0]["status"]
            if status == "offline":
                break
            time.sleep(0.25)
        waited = time.monotonic() - started
        assert status == "offline", f"the job did not sweep within {waited:.1f} s"

        # The run that did it is logged as succeeded (the row is finalized just
        # after the sweep commits), and the note's own query shows it.
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline + 5:
            runs = presence_cron_db.query(NOTE_JOB_RUNS_QUERY)
            if any(
                r["status"] == "succeeded" and r["end_time"] and r["end_time"] >= arranged_at
                for r in runs
            ):
                break
            time.sleep(0.25)
        (job,) = jobs(presence_cron_db)
        assert runs
        assert len(runs) <= 5
        assert all(r["jobid"] == job["jobid"] for r in runs)
        assert [r["runid"] for r in runs] == sorted((r["runid"] for r in runs), reverse=True)
        ours = [r for r in runs if r["end_time"] is not None and r["end_time"] >= arranged_at]
        assert ours, runs
        assert ours[-1]["status"] == "succeeded", ours
        assert ours[-1]["command"] == COMMAND
        assert ours[-1]["database"] == "postgres"
        print(f"pg_cron {cron_version}: job swept the silent user after {waited:.1f} s")
    finally:
        presence_cron_db.query("DELETE FROM auth.users WHERE id = %s", (user,))
