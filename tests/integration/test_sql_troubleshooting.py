"""Every SQL snippet of the original note's "Verify" and "Troubleshooting" steps runs
verbatim (as the ``postgres`` user in the SQL editor would) and returns what the note
says it returns.

The constants below are copied from seed/migrations-readme.md character for
character (only the Markdown list indentation is removed).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

# 4. Verify the Setup
NOTE_TEST_FUNCTION = "SELECT mark_inactive_users_offline();\n"
NOTE_CHECK_JOB = "SELECT * FROM cron.job WHERE jobname = 'mark-inactive-users';\n"
NOTE_JOB_LOGS = (
    "SELECT * FROM cron.job_run_details \n"
    "WHERE jobid = (\n"
    "  SELECT jobid FROM cron.job \n"
    "  WHERE jobname = 'mark-inactive-users'\n"
    ")\n"
    "ORDER BY runid DESC\n"
    "LIMIT 5;\n"
)
# 5. Troubleshooting
NOTE_UNSCHEDULE = "SELECT cron.unschedule('mark-inactive-users');\n"
NOTE_AFFECTED_ROWS = (
    "SELECT id, status, last_heartbeat, \n"
    "       NOW() - last_heartbeat as time_since_heartbeat\n"
    "FROM users \n"
    "WHERE status != 'offline' \n"
    "AND last_heartbeat < NOW() - INTERVAL '45 seconds';\n"
)
# 3. Schedule the Function (the manual step the migration now does itself, correctly)
NOTE_SCHEDULE = (
    "SELECT cron.schedule(\n"
    "  'mark-inactive-users',  -- name of the cron job\n"
    "  '*/20 * * * * *',      -- every 20 seconds\n"
    "  $$SELECT mark_inactive_users_offline()$$\n"
    ");\n"
)

COMMAND = "SELECT public.mark_inactive_users_offline()"


def run(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return cur.fetchall()


def arrange(db: PresenceDatabase, status: str, seconds_ago: float | None) -> str:
    user = db.create_user()
    db.query(
        "UPDATE public.users SET status = %s, "
        "last_heartbeat = now() - make_interval(secs => %s) WHERE id = %s",
        (status, seconds_ago, user),
    )
    return user


def test_manual_sweep_and_affected_rows_query(presence_db: PresenceDatabase) -> None:
    """In a database without the job (nothing sweeps behind our back)."""
    stale_online = arrange(presence_db, "online", 46)
    stale_away = arrange(presence_db, "away", 120)
    fresh = arrange(presence_db, "online", 5)
    already_offline = arrange(presence_db, "offline", 3600)
    with presence_db.connect() as conn:
        affected = run(conn, NOTE_AFFECTED_ROWS)
        assert sorted(str(r["id"]) for r in affected) == sorted([stale_online, stale_away])
        assert set(affected[0]) == {"id", "status", "last_heartbeat", "time_since_heartbeat"}
        assert {str(r["id"]): r["status"] for r in affected} == {
            stale_online: "online",
            stale_away: "away",
        }
        assert all(r["time_since_heartbeat"] > timedelta(seconds=45) for r in affected)

        # "Test the function manually": returns how many users it marked offline.
        assert run(conn, NOTE_TEST_FUNCTION) == [{"mark_inactive_users_offline": 2}]
        assert run(conn, NOTE_AFFECTED_ROWS) == []
        assert run(conn, NOTE_TEST_FUNCTION) == [{"mark_inactive_users_offline": 0}]
    statuses = {
        str(r["id"]): r["status"] for r in presence_db.query("SELECT id, status FROM public.users")
    }
    assert statuses == {
        stale_online: "offline",
        stale_away: "offline",
        fresh: "online",
        already_offline: "offline",
    }


def test_manual_sweep_in_the_cron_database(presence_cron_db: PresenceDatabase) -> None:
    """Same query where the real job also runs: arrange and sweep in one transaction so
    the job cannot take our row first."""
    with presence_cron_db.connect(autocommit=False) as conn:
        user = conn.execute(
            "INSERT INTO auth.users (email) VALUES ('note-sweep@example.test') RETURNING id::text"
        ).fetchone()
        assert user is not None
        conn.execute(
            "UPDATE public.users SET status = 'busy', "
            "last_heartbeat = now() - interval '46 seconds' WHERE id = %s",
            user,
        )
        try:
            assert user[0] in {str(r["id"]) for r in run(conn, NOTE_AFFECTED_ROWS)}
            (row,) = run(conn, NOTE_TEST_FUNCTION)
            assert row["mark_inactive_users_offline"] >= 1
            assert conn.execute(
                "SELECT status FROM public.users WHERE id = %s", user
            ).fetchone() == ("offline",)
        finally:
            conn.rollback()


def test_check_job_query(presence_cron_db: PresenceDatabase) -> None:
    with presence_cron_db.connect() as conn:
        (job,) = run(conn, NOTE_CHECK_JOB)
    assert job["jobname"] == "mark-inactive-users"
    assert job["command"] == COMMAND
    assert job["active"] is True
    assert job["database"] == "postgres"
    assert job["schedule"] in {"20 seconds", "* * * * *"}


def test_job_logs_query(presence_cron_db: PresenceDatabase) -> None:
    """The five latest runs of this job, newest first (test_sql_cron.py waits for a
    real run; here the shape is checked whatever has run so far)."""
    with presence_cron_db.connect() as conn:
        (job,) = run(conn, NOTE_CHECK_JOB)
        runs = run(conn, NOTE_JOB_LOGS)
        all_runs = run(
            conn,
            f"SELECT runid FROM cron.job_run_details WHERE jobid = {job['jobid']} "
            "ORDER BY runid DESC",
        )
    assert [r["runid"] for r in runs] == [r["runid"] for r in all_runs[:5]]
    assert all(r["jobid"] == job["jobid"] for r in runs)
    assert {"runid", "status", "return_message", "start_time", "end_time"} <= set(
        runs[0] if runs else run_columns(presence_cron_db)
    )
    # pg_cron's run states; whether a run failed is what this query is for.
    assert all(
        r["status"] in {"starting", "running", "sending", "connecting", "succeeded", "failed"}
        for r in runs
    ), runs


def run_columns(db: PresenceDatabase) -> set[str]:
    rows = db.query(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'cron.job_run_details'::regclass "
        "AND attnum > 0"
    )
    return {r["attname"] for r in rows}


def test_unschedule_query_then_restore(presence_cron_db: PresenceDatabase) -> None:
    """The note's fix for "scheduled twice" removes the job (returns true); it raises
    when there is no such job, which is why the migrations never call it like that.
    public.presence_schedule_sweep() puts the job back."""
    with presence_cron_db.connect() as conn:
        (before,) = run(conn, NOTE_CHECK_JOB)
        try:
            assert run(conn, NOTE_UNSCHEDULE) == [{"unschedule": True}]
            assert run(conn, NOTE_CHECK_JOB) == []
            assert run(conn, NOTE_JOB_LOGS) == []
            with pytest.raises(psycopg.Error, match="could not find valid entry for job"):
                run(conn, NOTE_UNSCHEDULE)
        finally:
            conn.execute("SELECT public.presence_schedule_sweep()")
        (after,) = run(conn, NOTE_CHECK_JOB)
    assert {k: v for k, v in after.items() if k != "jobid"} == {
        k: v for k, v in before.items() if k != "jobid"
    }


def test_notes_manual_schedule_is_repaired_by_presence_schedule_sweep(
    presence_cron_db: PresenceDatabase,
) -> None:
    """Following the note's step 3 after the migration overwrites the job with the
    6-field schedule (pg_cron accepts it and ignores the seconds: every 20 *minutes*)
    and an unqualified command; presence_schedule_sweep() repairs the same job."""
    with presence_cron_db.connect() as conn:
        (before,) = run(conn, NOTE_CHECK_JOB)
        try:
            (scheduled,) = run(conn, NOTE_SCHEDULE)
            assert scheduled["schedule"] == before["jobid"]  # upserted, not duplicated
            (broken,) = run(conn, NOTE_CHECK_JOB)
            assert broken["schedule"] == "*/20 * * * * *"
            assert broken["command"] == "SELECT mark_inactive_users_offline()"
        finally:
            conn.execute("SELECT public.presence_schedule_sweep()")
        (after,) = run(conn, NOTE_CHECK_JOB)
    assert after == before
