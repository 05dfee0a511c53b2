"""verify_setup() against the real PostgreSQL 15 + pg_cron test cluster.

Each finding is provoked by really breaking the thing in a database: a fresh migrated
clone (``presence_db``) for schema, grants and RLS, and the shared pg_cron database
(``presence_cron_db``) for the job — restored in ``finally``, or broken inside a
transaction that is rolled back (``cron_scenario``), so the real job keeps running for
the rest of the session. Where the finding's fix is SQL, the test runs that SQL and
checks that the finding is gone: the hints are proven, not just printed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
import respx
from supabase import AClientOptions, ClientOptions, create_client
from supabase import acreate_client as _acreate_client

from presence_sdk._exceptions import (
    AuthenticationError,
    PermissionDeniedError,
    RejectedError,
    SetupError,
)
from presence_sdk._migrate import migrate, rollback
from presence_sdk._models import SetupCheck, SetupReport
from presence_sdk._sql import migrations
from presence_sdk._verify import expected_setup
from presence_sdk._verify_io import averify_setup, fetch_report, verify_setup
from presence_sdk.testing import (
    PostgresCluster,
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

JOB = "mark-inactive-users"
COMMAND = "SELECT public.mark_inactive_users_offline()"


def find(report: SetupReport, name: str) -> SetupCheck:
    found = [c for c in report.checks if c.name == name]
    assert len(found) == 1, f"{name} not in {[c.name for c in report.checks]}"
    return found[0]


def problem(report: SetupReport, name: str) -> SetupCheck:
    """The one failed check ``name`` (and no other failure)."""
    assert [c.name for c in report.problems] == [name], str(report)
    return report.problems[0]


def fix_sql(fix: str) -> str:
    """The first SQL statement in a fix hint."""
    match = re.search(r"\b((?:SELECT|REVOKE|GRANT|ALTER|INSERT)\b.*?;)", fix)
    assert match is not None, fix
    return match[1]


def report_migration_index() -> int:
    """Position of the newest migration that (re)defines the setup report."""
    return max(i for i, m in enumerate(migrations()) if "'schema_version'" in m.up)


def verify(db: PresenceDatabase) -> SetupReport:
    return verify_setup(dsn=db.dsn, raise_on_error=False)


def clone_problems(report: SetupReport) -> list[str]:
    """Failed checks of a clone, leaving out pg_cron (it only runs in `postgres`)."""
    return [c.name for c in report.problems if c.name != "pg_cron"]


def job_id(db: PresenceDatabase) -> int:
    rows = db.query("SELECT jobid FROM cron.job WHERE jobname = %s", (JOB,))
    assert len(rows) == 1, rows
    return int(rows[0]["jobid"])


def restore_job(db: PresenceDatabase) -> None:
    """Back to the migration's job: active, 20 seconds, the qualified command."""
    with db.connect() as conn:
        conn.execute("SELECT public.presence_schedule_sweep()")
        conn.execute(
            "SELECT cron.alter_job(jobid, active := true) FROM cron.job WHERE jobname = %s", (JOB,)
        )


@contextmanager
def cron_scenario(db: PresenceDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A transaction on the cron database that is always rolled back.

    pg_cron only learns about job changes at COMMIT, so the real job is undisturbed.
    """
    with psycopg.connect(db.dsn, autocommit=False) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


def fresh_job(conn: psycopg.Connection[Any]) -> int:
    """Replace the job (inside the scenario) by an identical one without runs."""
    conn.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (JOB,))
    row = conn.execute("SELECT cron.schedule(%s, '20 seconds', %s)", (JOB, COMMAND)).fetchone()
    assert row is not None
    return int(row[0])


def add_run(
    conn: psycopg.Connection[Any], jobid: int, status: str, message: str, age: float
) -> None:
    conn.execute(
        "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, "
        "status, return_message, start_time, end_time) "
        "VALUES (%s, 0, current_database(), current_user, %s, %s, %s, "
        "now() - make_interval(secs => %s), now() - make_interval(secs => %s))",
        (jobid, COMMAND, status, message, age, age - 0.01),
    )


# -- the healthy setup -------------------------------------------------------------------


def test_complete_setup_passes_over_a_direct_connection(presence_cron_db: PresenceDatabase) -> None:
    report = verify_setup(dsn=presence_cron_db.dsn)
    assert report.ok, str(report)
    assert report.sweep_period_seconds == 20
    assert report.schema_version == expected_setup().schema_version
    assert find(report, "cron.job.schedule").detail.startswith("runs every 20 seconds")
    assert report.raw["job"]["command"] == COMMAND


@pytest.mark.asyncio
async def test_complete_setup_passes_async_over_a_direct_connection(
    presence_cron_db: PresenceDatabase,
) -> None:
    report = await averify_setup(dsn=presence_cron_db.dsn)
    assert report.ok, str(report)
    assert report.sweep_period_seconds == 20


def test_complete_setup_passes_through_postgrest_in_one_round_trip(
    presence_cron_db: PresenceDatabase,
) -> None:
    emulator = presence_cron_db.emulator()
    try:
        with (
            respx.mock(base_url=emulator.url) as router,
            httpx.Client(timeout=10) as http,
        ):
            router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
            client = create_client(
                emulator.url, emulator.service_role_key, options=ClientOptions(httpx_client=http)
            )
            report = verify_setup(client)
    finally:
        emulator.close()
    assert report.ok, str(report)
    assert report.sweep_period_seconds == 20
    assert emulator.requests == ["/rest/v1/rpc/presence_setup_report"]


@pytest.mark.asyncio
async def test_complete_setup_passes_through_postgrest_async(
    presence_cron_db: PresenceDatabase,
) -> None:
    emulator = presence_cron_db.emulator()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            with respx.mock(base_url=emulator.url) as router:
                router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
                client = await _acreate_client(
                    emulator.url,
                    emulator.service_role_key,
                    options=AClientOptions(httpx_client=http),
                )
                report = await averify_setup(client)
    finally:
        emulator.close()
    assert report.ok, str(report)
    assert emulator.requests == ["/rest/v1/rpc/presence_setup_report"]


def test_anon_key_is_refused_with_a_hint(presence_cron_db: PresenceDatabase) -> None:
    emulator = presence_cron_db.emulator()
    try:
        with respx.mock(base_url=emulator.url) as router, httpx.Client(timeout=10) as http:
            router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
            client = create_client(
                emulator.url, emulator.anon_key, options=ClientOptions(httpx_client=http)
            )
            with pytest.raises(PermissionDeniedError, match="needs the service_role key"):
                verify_setup(client)
    finally:
        emulator.close()


# -- migrations ---------------------------------------------------------------------------


@pytest.fixture
def empty_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database with the Supabase shim but none of the presence SQL."""
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
        yield db


def test_migrations_not_applied_over_a_direct_connection(empty_db: PresenceDatabase) -> None:
    with pytest.raises(SetupError) as raised:
        verify_setup(dsn=empty_db.dsn)
    finding = problem(raised.value.report, "schema.installed")
    assert "presence_setup_report() is missing" in finding.detail
    assert "public.users is missing" in finding.detail
    assert "presence-sdk migrate" in finding.fix
    assert "--with-schema" in finding.fix


@pytest.mark.asyncio
async def test_migrations_not_applied_async_over_a_direct_connection(
    empty_db: PresenceDatabase, presence_server: PresenceTestServer
) -> None:
    report = await averify_setup(dsn=empty_db.dsn, raise_on_error=False)
    finding = problem(report, "schema.installed")
    assert "public.users is missing" in finding.detail
    with pytest.raises(AuthenticationError, match='role "nobody" does not exist'):
        await averify_setup(dsn=presence_server.cluster.dsn(empty_db.name, user="nobody"))


def test_migrations_not_applied_through_postgrest_pgrst202(empty_db: PresenceDatabase) -> None:
    emulator = empty_db.emulator()
    try:
        with respx.mock(base_url=emulator.url) as router, httpx.Client(timeout=10) as http:
            router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
            client = create_client(
                emulator.url, emulator.service_role_key, options=ClientOptions(httpx_client=http)
            )
            report = verify_setup(client, raise_on_error=False)
    finally:
        emulator.close()
    finding = problem(report, "schema.installed")
    assert "Could not find the function public.presence_setup_report" in finding.detail
    assert "reload schema" in finding.fix


def test_partly_applied_migrations_are_described(empty_db: PresenceDatabase) -> None:
    migrate(empty_db.dsn, with_schema=True)
    report_at = report_migration_index()
    rollback(empty_db.dsn, to=migrations()[report_at - 1].version)  # drops the setup report
    finding = problem(verify(empty_db), "schema.installed")
    recorded = ", ".join(m.version for m in migrations()[:report_at])
    assert "public.users exists" in finding.detail
    assert "older presence API is installed (migrations partly applied)" in finding.detail
    assert f"recorded presence migrations: {recorded} of {len(migrations())}" in finding.detail
    migrate(empty_db.dsn)  # the fix
    assert clone_problems(verify(empty_db)) == []


def test_older_schema_version(presence_db: PresenceDatabase) -> None:
    newest = migrations()[report_migration_index()].up
    want = expected_setup().schema_version
    older = newest.replace(f"'schema_version', {want}", f"'schema_version', {want - 1}")
    assert older != newest
    with presence_db.connect() as conn:
        conn.execute(older)
    report = verify(presence_db)
    assert clone_problems(report) == ["schema.version"]
    finding = find(report, "schema.version")
    assert f"database has presence schema version {want - 1}, this package expects {want}" in (
        finding.detail
    )
    assert "presence-sdk migrate" in finding.fix


def test_missing_function(presence_db: PresenceDatabase) -> None:
    presence_db.query("DROP FUNCTION public.presence_counts()")
    report = verify(presence_db)
    assert clone_problems(report) == ["schema.functions"]
    assert "missing: presence_counts" in find(report, "schema.functions").detail


def test_security_definer_on_a_reader_would_bypass_rls(presence_db: PresenceDatabase) -> None:
    presence_db.query("ALTER FUNCTION public.presence_get(uuid[]) SECURITY DEFINER")
    report = verify(presence_db)
    assert clone_problems(report) == ["schema.functions"]
    detail = find(report, "schema.functions").detail
    assert "presence_get should not be SECURITY DEFINER (it would bypass row level security)" in (
        detail
    )


# -- security -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "name", "role"),
    [
        ("mark_inactive_users_offline()", "mark_inactive_users_offline", "anon"),
        ("mark_inactive_users_offline()", "mark_inactive_users_offline", "authenticated"),
        ("presence_setup_report()", "presence_setup_report", "anon"),
        ("presence_setup_report()", "presence_setup_report", "authenticated"),
        ("presence_configure(integer, integer, integer)", "presence_configure", "authenticated"),
    ],
)
def test_privileged_function_executable_by_an_api_role(
    presence_db: PresenceDatabase, grant: str, name: str, role: str
) -> None:
    presence_db.query(f"GRANT EXECUTE ON FUNCTION public.{grant} TO {role}")
    report = verify(presence_db)
    assert clone_problems(report) == [f"security.{name}"]
    finding = find(report, f"security.{name}")
    assert f"executable by {role}" in finding.detail
    presence_db.query(fix_sql(finding.fix))
    assert clone_problems(verify(presence_db)) == []


def test_sweep_granted_to_public_is_exposed_to_anon(presence_db: PresenceDatabase) -> None:
    presence_db.query("GRANT EXECUTE ON FUNCTION public.mark_inactive_users_offline() TO PUBLIC")
    finding = find(verify(presence_db), "security.mark_inactive_users_offline")
    assert "executable by anon and authenticated" in finding.detail
    presence_db.query(fix_sql(finding.fix))
    assert find(verify(presence_db), "security.mark_inactive_users_offline").ok


def test_client_api_not_executable_by_signed_in_users(presence_db: PresenceDatabase) -> None:
    presence_db.query(
        "REVOKE EXECUTE ON FUNCTION public.presence_heartbeat(text) FROM authenticated"
    )
    report = verify(presence_db)
    assert clone_problems(report) == ["security.client_api"]
    finding = find(report, "security.client_api")
    assert "presence_heartbeat" in finding.detail
    presence_db.query(fix_sql(finding.fix))
    assert clone_problems(verify(presence_db)) == []


def test_rls_disabled_on_users(presence_db: PresenceDatabase) -> None:
    presence_db.query("ALTER TABLE public.users DISABLE ROW LEVEL SECURITY")
    report = verify(presence_db)
    assert clone_problems(report) == ["security.rls"]
    finding = find(report, "security.rls")
    assert "DISABLED" in finding.detail
    presence_db.query(fix_sql(finding.fix))
    assert clone_problems(verify(presence_db)) == []


def test_users_table_missing(presence_db: PresenceDatabase) -> None:
    presence_db.query("DROP TABLE public.users CASCADE")
    report = verify(presence_db)
    assert "users_table" in clone_problems(report)
    assert "--with-schema" in find(report, "users_table").fix
    assert "security.rls" not in [c.name for c in report.checks]


def test_settings_row_missing(presence_db: PresenceDatabase) -> None:
    presence_db.query("DELETE FROM public.presence_config")
    report = verify(presence_db)
    assert clone_problems(report) == ["settings"]
    finding = find(report, "settings")
    presence_db.query(fix_sql(finding.fix))
    assert clone_problems(verify(presence_db)) == []


# -- pg_cron ------------------------------------------------------------------------------


def test_pg_cron_is_not_enabled_outside_the_cron_database(presence_db: PresenceDatabase) -> None:
    report = verify(presence_db)
    finding = problem(report, "pg_cron")
    assert "it only runs in database 'postgres' (cron.database_name)" in finding.detail
    assert "apply the presence SQL in database 'postgres'" in finding.fix
    assert report.sweep_period_seconds is None


def test_pg_cron_installed_but_not_preloaded() -> None:
    with PostgresCluster(pg_cron=False) as cluster:
        with cluster.connect() as conn:
            install_supabase_shim(conn)
            notices = apply_presence_sql(conn)
        assert any("could not be enabled" in n for n in notices)
        report = verify_setup(dsn=cluster.dsn(), raise_on_error=False)
    finding = problem(report, "pg_cron")
    assert "not in shared_preload_libraries" in finding.detail
    assert "Dashboard > Database > Extensions > enable pg_cron" in finding.fix
    assert "SELECT public.presence_schedule_sweep();" in finding.fix


def test_pg_cron_available_but_not_enabled(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute("DROP EXTENSION pg_cron")
        report = fetch_report(conn)
    finding = problem(report, "pg_cron")
    assert "pg_cron is available but not enabled in this database" in finding.detail
    assert "Dashboard > Database > Extensions > enable pg_cron" in finding.fix
    assert "SELECT public.presence_schedule_sweep();" in finding.fix
    assert not [c for c in report.checks if c.name.startswith("cron.")]


def test_job_missing(presence_cron_db: PresenceDatabase) -> None:
    try:
        presence_cron_db.query("SELECT cron.unschedule(%s)", (job_id(presence_cron_db),))
        finding = problem(verify(presence_cron_db), "cron.job")
        assert "no pg_cron job named 'mark-inactive-users'" in finding.detail
        presence_cron_db.query(fix_sql(finding.fix))
        assert verify(presence_cron_db).ok
    finally:
        restore_job(presence_cron_db)


def test_job_inactive(presence_cron_db: PresenceDatabase) -> None:
    jobid = job_id(presence_cron_db)
    try:
        presence_cron_db.query("SELECT cron.alter_job(%s, active := false)", (jobid,))
        with pytest.raises(SetupError) as raised:
            verify_setup(dsn=presence_cron_db.dsn)
        finding = problem(raised.value.report, "cron.job.active")
        assert "INACTIVE" in finding.detail
        assert finding.fix == f"SELECT cron.alter_job({jobid}, active := true);"
        presence_cron_db.query(fix_sql(finding.fix))
        assert verify(presence_cron_db).ok
    finally:
        restore_job(presence_cron_db)


@pytest.mark.parametrize(
    ("schedule", "words", "period"),
    [
        ("*/20 * * * * *", "runs every 20 MINUTES, NOT every 20 seconds", 1200),
        ("59 seconds", "longer than the 45 s timeout", 59),
        ("* * * * *", "longer than the 45 s timeout", 60),
        ("30 seconds", "presence_config.sweep_interval_seconds is 20", 30),
    ],
)
def test_job_schedule(
    presence_cron_db: PresenceDatabase, schedule: str, words: str, period: int
) -> None:
    jobid = job_id(presence_cron_db)
    try:
        presence_cron_db.query("SELECT cron.alter_job(%s, schedule := %s)", (jobid, schedule))
        report = verify(presence_cron_db)
        finding = problem(report, "cron.job.schedule")
        assert words in finding.detail
        assert report.sweep_period_seconds == period
        presence_cron_db.query(fix_sql(finding.fix))
        fixed = verify(presence_cron_db)
        assert fixed.ok, str(fixed)
        assert fixed.sweep_period_seconds == 20
    finally:
        restore_job(presence_cron_db)


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("SELECT mark_inactive_users_offline()", "not schema-qualified"),
        ("SELECT 1", "instead of 'SELECT public.mark_inactive_users_offline()'"),
    ],
)
def test_job_command(presence_cron_db: PresenceDatabase, command: str, words: str) -> None:
    jobid = job_id(presence_cron_db)
    try:
        presence_cron_db.query("SELECT cron.alter_job(%s, command := %s)", (jobid, command))
        finding = problem(verify(presence_cron_db), "cron.job.command")
        assert words in finding.detail
        presence_cron_db.query(fix_sql(finding.fix))
        assert verify(presence_cron_db).ok
    finally:
        restore_job(presence_cron_db)


def test_really_failing_job_runs(presence_cron_db: PresenceDatabase) -> None:
    """pg_cron itself runs a broken command every second and records the failure."""
    try:
        with presence_cron_db.connect() as conn:
            conn.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (JOB,))
            conn.execute(
                "SELECT cron.schedule(%s, '1 second', 'SELECT public.no_such_function()')", (JOB,)
            )
        deadline = time.monotonic() + 30
        while True:
            report = verify(presence_cron_db)
            if not find(report, "cron.job.runs").ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        finding = find(report, "cron.job.runs")
        assert not finding.ok, str(report)
        assert "the latest run failed" in finding.detail
        assert "function public.no_such_function() does not exist" in finding.detail
        assert "cron.job_run_details" in finding.fix
        assert "presence_schedule_sweep" in finding.fix
    finally:
        with presence_cron_db.connect() as conn:
            conn.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (JOB,))
            conn.execute("DELETE FROM cron.job_run_details WHERE command LIKE '%no_such_function%'")
        restore_job(presence_cron_db)
    assert verify(presence_cron_db).ok


def test_failed_latest_run_with_connection_failure(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        jobid = fresh_job(conn)
        add_run(conn, jobid, "succeeded", "1 row", 25)
        add_run(conn, jobid, "failed", "connection failed", 5)
        finding = problem(fetch_report(conn), "cron.job.runs")
    assert "the latest run failed (1 of the last 2 failed): connection failed" in finding.detail
    assert "cron.use_background_workers = on" in finding.fix


def test_no_run_within_three_periods(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        jobid = fresh_job(conn)
        add_run(conn, jobid, "succeeded", "1 row", 300)
        report = fetch_report(conn)
        finding = problem(report, "cron.job.recent")
        assert "no run in the last 5 min" in finding.detail
        assert "more than 3 periods of 20 s" in finding.detail
        assert "pg_cron" in finding.fix
        add_run(conn, jobid, "succeeded", "1 row", 50)  # within 3 x 20 s
        assert fetch_report(conn).ok


def test_a_new_job_without_runs_passes(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        fresh_job(conn)
        report = fetch_report(conn)
    assert report.ok, str(report)
    assert "no runs recorded yet" in find(report, "cron.job.runs").detail


def test_duplicate_jobs(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        conn.execute(
            "INSERT INTO cron.job (schedule, command, jobname, username) "
            "VALUES ('20 seconds', %s, %s, 'authenticator')",
            (COMMAND, JOB),
        )
        finding = problem(fetch_report(conn), "cron.job")
    assert "2 pg_cron jobs are named 'mark-inactive-users'" in finding.detail
    assert "cron.unschedule(jobid)" in finding.fix


def test_job_running_in_another_database(presence_cron_db: PresenceDatabase) -> None:
    with cron_scenario(presence_cron_db) as conn:
        conn.execute("UPDATE cron.job SET database = 'elsewhere' WHERE jobname = %s", (JOB,))
        finding = problem(fetch_report(conn), "cron.job")
    assert "runs in database 'elsewhere', but the presence SQL is in 'postgres'" in finding.detail
    assert "database := 'postgres'" in finding.fix


# -- connection problems ------------------------------------------------------------------


def test_unknown_role_and_database_are_clear_errors(presence_server: PresenceTestServer) -> None:
    cluster = presence_server.cluster
    with pytest.raises(AuthenticationError, match='role "nobody" does not exist') as raised:
        verify_setup(dsn=cluster.dsn("postgres", user="nobody"))
    assert "user name and password" in str(raised.value)
    with pytest.raises(RejectedError, match='database "missing" does not exist'):
        verify_setup(dsn=cluster.dsn("missing"))


def test_role_without_execute_on_the_report(presence_db: PresenceDatabase) -> None:
    presence_db.query("CREATE ROLE presence_reader LOGIN")
    try:
        dsn = presence_db.dsn.replace("user=postgres", "user=presence_reader")
        with pytest.raises(PermissionDeniedError, match="connect as postgres"):
            verify_setup(dsn=dsn)
    finally:
        presence_db.query("DROP ROLE presence_reader")
