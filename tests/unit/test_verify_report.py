"""The pure judge of verify_setup(): report JSON in, checks with fix hints out.

Every finding is also proven on a real database in
tests/integration/test_verify_db.py; these tests pin the wording and the edge cases
(old pg_cron, schedules that cannot be set up on the test server) cheaply.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

import presence_sdk
from presence_sdk._models import SetupReport
from presence_sdk._sql import migrations
from presence_sdk._verify import (
    CLIENT_FUNCTIONS,
    PRIVILEGED_FUNCTIONS,
    InstallProbe,
    build_report,
    expected_setup,
    not_installed_report,
    parse_schedule,
)

SERVER_TIME = "2026-01-01T12:00:00+00:00"


def healthy() -> dict[str, Any]:
    """A report as presence_setup_report() returns it for a complete setup."""
    expected = expected_setup()
    functions = []
    for name in sorted(expected.signatures):
        functions.append(
            {
                "name": name,
                "exists": True,
                "security_definer": name in expected.security_definer,
                "execute": {
                    "anon": name == "presence_settings",
                    "authenticated": name in CLIENT_FUNCTIONS,
                    "service_role": name not in ("presence_configure", "presence_schedule_sweep"),
                },
            }
        )
    return {
        "schema_version": expected.schema_version,
        "server_time": SERVER_TIME,
        "database": "postgres",
        "current_user": "postgres",
        "settings": {
            "timeout_seconds": 45,
            "sweep_interval_seconds": 20,
            "heartbeat_interval_seconds": 15,
        },
        "users_table": {
            "exists": True,
            "rls_enabled": True,
            "columns": ["id", "status", "created_at", "last_heartbeat", "online_since"],
        },
        "functions": functions,
        "pg_cron": {
            "available": True,
            "installed": True,
            "version": "1.6",
            "database_name": "postgres",
        },
        "job": {
            "jobid": 7,
            "jobname": "mark-inactive-users",
            "schedule": "20 seconds",
            "command": "SELECT public.mark_inactive_users_offline()",
            "active": True,
            "username": "postgres",
            "database": "postgres",
        },
        "job_count": 1,
        "recent_runs": [
            {
                "runid": 2,
                "status": "succeeded",
                "return_message": "1 row",
                "start_time": "2026-01-01T11:59:50+00:00",
                "end_time": "2026-01-01T11:59:50.01+00:00",
            },
            {
                "runid": 1,
                "status": "succeeded",
                "return_message": "1 row",
                "start_time": "2026-01-01T11:59:30+00:00",
                "end_time": "2026-01-01T11:59:30.01+00:00",
            },
        ],
    }


def check(report: SetupReport, name: str) -> Any:
    found = [c for c in report.checks if c.name == name]
    assert len(found) == 1, f"{name} not in {[c.name for c in report.checks]}"
    return found[0]


def only_problem(report: SetupReport, name: str) -> Any:
    assert [c.name for c in report.problems] == [name], str(report)
    return check(report, name)


def function(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["functions"] if f["name"] == name)


def test_a_healthy_report_passes_every_check_and_states_the_sweep_period() -> None:
    report = build_report(healthy())
    assert report.ok, str(report)
    assert report.sweep_period_seconds == 20
    assert report.schema_version == expected_setup().schema_version
    names = [c.name for c in report.checks]
    assert names[:5] == [
        "schema.version",
        "schema.functions",
        "users_table",
        "settings",
        "security.rls",
    ]
    assert names[-6:] == [
        "cron.job",
        "cron.job.active",
        "cron.job.command",
        "cron.job.schedule",
        "cron.job.runs",
        "cron.job.recent",
    ]
    assert all(c.fix == "" for c in report.checks)
    assert "sweep period: 20 s" in str(report)
    assert report.to_dict()["sweep_period_seconds"] == 20


def test_expected_setup_is_read_from_the_shipped_sql() -> None:
    expected = expected_setup()
    # The newest migration that (re)defines the setup report declares the version.
    newest = [m.up for m in migrations() if "'schema_version'" in m.up][-1]
    assert f"'schema_version', {expected.schema_version}" in newest
    assert expected.job_name == "mark-inactive-users"
    assert expected.job_command == "SELECT public.mark_inactive_users_offline()"
    assert {"presence_heartbeat", "presence_leave", "mark_inactive_users_offline"} <= (
        expected.security_definer
    )
    assert "presence_get" not in expected.security_definer  # would bypass RLS
    assert set(PRIVILEGED_FUNCTIONS) | set(CLIENT_FUNCTIONS) <= set(expected.signatures)


def test_older_schema_version_asks_for_the_newer_migrations() -> None:
    raw = healthy()
    raw["schema_version"] = expected_setup().schema_version - 1
    finding = only_problem(build_report(raw), "schema.version")
    assert f"expects {expected_setup().schema_version}" in finding.detail
    assert "presence-sdk migrate" in finding.fix


def test_newer_schema_version_passes_but_says_upgrade_the_package() -> None:
    raw = healthy()
    raw["schema_version"] = expected_setup().schema_version + 1
    report = build_report(raw)
    assert report.ok
    assert "upgrade presence-sdk" in check(report, "schema.version").detail


def test_missing_function_and_wrong_security_definer() -> None:
    raw = healthy()
    function(raw, "presence_counts")["exists"] = False
    function(raw, "presence_get")["security_definer"] = True
    function(raw, "presence_heartbeat")["security_definer"] = False
    finding = only_problem(build_report(raw), "schema.functions")
    assert "missing: presence_counts" in finding.detail
    assert "presence_get should not be SECURITY DEFINER" in finding.detail
    assert "bypass row level security" in finding.detail
    assert "presence_heartbeat should be SECURITY DEFINER" in finding.detail
    assert "migrate" in finding.fix


def test_not_installed_report_over_http_mentions_the_schema_cache() -> None:
    report = not_installed_report("Could not find the function public.presence_setup_report")
    finding = only_problem(report, "schema.installed")
    assert "presence-sdk migrate" in finding.fix
    assert "reload schema" in finding.fix
    assert not report.ok


def test_not_installed_report_with_a_probe_describes_the_partial_install() -> None:
    probe = InstallProbe(users_table=True, presence_api=True, recorded_versions=("20240000000001",))
    finding = only_problem(not_installed_report("missing", probe=probe), "schema.installed")
    assert "public.users exists" in finding.detail
    assert "partly applied" in finding.detail
    assert f"20240000000001 of {len(migrations())}" in finding.detail
    no_users = InstallProbe(users_table=False, presence_api=False, recorded_versions=None)
    assert (
        "--with-schema"
        in only_problem(not_installed_report("missing", probe=no_users), "schema.installed").fix
    )


@pytest.mark.parametrize(
    ("mutate", "name", "detail", "fix"),
    [
        (
            lambda r: r["users_table"].update(rls_enabled=False),
            "security.rls",
            "DISABLED",
            "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;",
        ),
        (
            lambda r: r.update(users_table={"exists": False, "rls_enabled": False, "columns": []}),
            "users_table",
            "does not exist",
            "--with-schema",
        ),
        (
            lambda r: r["users_table"].update(columns=["id", "status"]),
            "users_table",
            "last_heartbeat, online_since",
            "re-apply the presence migrations",
        ),
        (
            lambda r: r.update(settings=None),
            "settings",
            "no row",
            "INSERT INTO public.presence_config",
        ),
    ],
)
def test_table_findings(mutate: Any, name: str, detail: str, fix: str) -> None:
    raw = healthy()
    mutate(raw)
    report = build_report(raw)
    finding = check(report, name)
    assert not finding.ok
    assert detail in finding.detail
    assert fix in finding.fix


@pytest.mark.parametrize("name", PRIVILEGED_FUNCTIONS)
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_privileged_functions_executable_by_api_roles(name: str, role: str) -> None:
    raw = healthy()
    function(raw, name)["execute"][role] = True
    finding = only_problem(build_report(raw), f"security.{name}")
    assert f"executable by {role}" in finding.detail
    assert finding.fix.startswith(f"REVOKE EXECUTE ON FUNCTION {expected_setup().signatures[name]}")
    assert "FROM PUBLIC, anon, authenticated;" in finding.fix


def test_service_role_must_run_the_sweep_and_the_report() -> None:
    raw = healthy()
    function(raw, "mark_inactive_users_offline")["execute"]["service_role"] = False
    finding = only_problem(build_report(raw), "security.mark_inactive_users_offline")
    assert "GRANT EXECUTE ON FUNCTION public.mark_inactive_users_offline() TO service_role" in (
        finding.fix
    )


def test_client_api_must_be_executable_by_authenticated() -> None:
    raw = healthy()
    function(raw, "presence_heartbeat")["execute"]["authenticated"] = False
    finding = only_problem(build_report(raw), "security.client_api")
    assert "presence_heartbeat" in finding.detail
    assert (
        finding.fix
    ) == "GRANT EXECUTE ON FUNCTION public.presence_heartbeat(text) TO authenticated;"


def test_pg_cron_not_available_points_at_the_supabase_dashboard() -> None:
    raw = healthy()
    raw["pg_cron"] = {
        "available": False,
        "installed": False,
        "version": None,
        "database_name": None,
    }
    raw["job"] = None
    report = build_report(raw)
    finding = only_problem(report, "pg_cron")
    assert "not available" in finding.detail
    assert "Dashboard > Database > Extensions > enable pg_cron" in finding.fix
    assert "SELECT public.presence_schedule_sweep();" in finding.fix
    assert "shared_preload_libraries" in finding.fix
    assert not [c for c in report.checks if c.name.startswith("cron.")]
    assert report.sweep_period_seconds is None


def test_pg_cron_available_but_not_enabled_in_its_database() -> None:
    raw = healthy()
    raw["pg_cron"].update(installed=False, version=None)
    finding = only_problem(build_report(raw), "pg_cron")
    assert "not enabled in this database" in finding.detail
    assert "Database > Extensions > enable pg_cron" in finding.fix
    assert "SELECT public.presence_schedule_sweep();" in finding.fix


def test_job_missing() -> None:
    raw = healthy()
    raw.update(job=None, job_count=0, recent_runs=[])
    report = build_report(raw)
    finding = only_problem(report, "cron.job")
    assert "no pg_cron job named 'mark-inactive-users'" in finding.detail
    assert "SELECT public.presence_schedule_sweep();" in finding.fix
    assert report.sweep_period_seconds is None


def test_duplicate_jobs_and_job_in_another_database() -> None:
    raw = healthy()
    raw["job_count"] = 2
    finding = only_problem(build_report(raw), "cron.job")
    assert "2 pg_cron jobs" in finding.detail
    assert "cron.unschedule(jobid)" in finding.fix
    raw = healthy()
    raw["job"]["database"] = "other"
    finding = only_problem(build_report(raw), "cron.job")
    assert "runs in database 'other'" in finding.detail
    assert "cron.alter_job(7, database := 'postgres')" in finding.fix


def test_inactive_job_is_reported_and_not_judged_stale() -> None:
    raw = healthy()
    raw["job"]["active"] = False
    raw["server_time"] = "2026-01-01T13:00:00+00:00"
    report = build_report(raw)
    finding = only_problem(report, "cron.job.active")
    assert "INACTIVE" in finding.detail
    assert finding.fix == "SELECT cron.alter_job(7, active := true);"


@pytest.mark.parametrize(
    ("command", "ok", "words"),
    [
        ("select public.mark_inactive_users_offline();", True, "runs"),
        ("SELECT  public.mark_inactive_users_offline()", True, "runs"),
        ("SELECT mark_inactive_users_offline()", False, "not schema-qualified"),
        ("SELECT 1", False, "instead of"),
    ],
)
def test_job_command(command: str, ok: bool, words: str) -> None:
    raw = healthy()
    raw["job"]["command"] = command
    finding = check(build_report(raw), "cron.job.command")
    assert finding.ok is ok
    assert words in finding.detail
    if not ok:
        assert "presence_schedule_sweep" in finding.fix


def test_the_notes_broken_schedule_says_every_20_minutes() -> None:
    raw = healthy()
    raw["job"]["schedule"] = "*/20 * * * * *"
    report = build_report(raw)
    finding = only_problem(report, "cron.job.schedule")
    assert "every 20 MINUTES" in finding.detail
    assert "NOT every 20 seconds" in finding.detail
    assert "SELECT public.presence_schedule_sweep();" in finding.fix
    assert report.sweep_period_seconds == 1200


@pytest.mark.parametrize(
    ("schedule", "period"),
    [("59 seconds", 59), ("* * * * *", 60), ("*/5 * * * *", 300), ("@hourly", 3600)],
)
def test_a_period_longer_than_the_timeout_fails(schedule: str, period: int) -> None:
    raw = healthy()
    raw["job"]["schedule"] = schedule
    report = build_report(raw)
    finding = only_problem(report, "cron.job.schedule")
    assert "longer than the 45 s timeout" in finding.detail
    assert report.sweep_period_seconds == period


def test_old_pg_cron_every_minute_fallback_passes_with_an_explanation() -> None:
    raw = healthy()
    raw["pg_cron"]["version"] = "1.4-1"
    raw["job"]["schedule"] = "* * * * *"
    report = build_report(raw)
    assert report.ok, str(report)
    finding = check(report, "cron.job.schedule")
    assert "pg_cron < 1.5" in finding.detail
    assert "reads stay exact" in finding.detail
    assert report.sweep_period_seconds == 60


def test_schedule_drifting_from_presence_config() -> None:
    raw = healthy()
    raw["job"]["schedule"] = "10 seconds"
    finding = only_problem(build_report(raw), "cron.job.schedule")
    assert "sweep_interval_seconds is 20" in finding.detail
    assert "presence_configure(sweep_interval_seconds => 10)" in finding.fix


def test_unknown_schedule() -> None:
    raw = healthy()
    raw["job"]["schedule"] = "x/5 * * * *"
    finding = only_problem(build_report(raw), "cron.job.schedule")
    assert "not understood" in finding.detail


def test_latest_run_failed() -> None:
    raw = healthy()
    raw["recent_runs"][0].update(
        status="failed", return_message="ERROR:  function public.nope() does not exist"
    )
    finding = only_problem(build_report(raw), "cron.job.runs")
    assert "the latest run failed (1 of the last 2 failed)" in finding.detail
    assert "public.nope() does not exist" in finding.detail
    assert "cron.job_run_details WHERE jobid = 7" in finding.fix


def test_connection_failed_runs_point_at_background_workers() -> None:
    raw = healthy()
    for run in raw["recent_runs"]:
        run.update(status="failed", return_message="connection failed")
    finding = only_problem(build_report(raw), "cron.job.runs")
    assert "cron.use_background_workers = on" in finding.fix


def test_an_older_failure_followed_by_success_passes() -> None:
    raw = healthy()
    raw["recent_runs"][1].update(status="failed", return_message="boom")
    report = build_report(raw)
    assert report.ok
    assert "1 earlier failure" in check(report, "cron.job.runs").detail


def test_no_runs_yet_passes_and_says_so() -> None:
    raw = healthy()
    raw["recent_runs"] = []
    report = build_report(raw)
    assert report.ok
    assert "no runs recorded yet" in check(report, "cron.job.runs").detail
    assert "cron.job.recent" not in [c.name for c in report.checks]


def test_no_run_within_three_periods_uses_the_server_clock() -> None:
    raw = healthy()
    # The newest run is 50 s before server_time: fine for a 20 s period (limit 60 s).
    raw["server_time"] = "2026-01-01T12:00:40+00:00"
    assert build_report(raw).ok
    raw["server_time"] = "2026-01-01T12:01:00.5+00:00"  # 70.5 s > 3 x 20 s
    finding = only_problem(build_report(raw), "cron.job.recent")
    assert "no run in the last 70 s" in finding.detail
    assert "3 periods of 20 s" in finding.detail
    assert "pg_cron" in finding.fix


def test_runs_in_progress_count_as_runs() -> None:
    raw = healthy()
    raw["recent_runs"] = [
        {"runid": 3, "status": "running", "return_message": None, "start_time": SERVER_TIME}
    ]
    report = build_report(raw)
    assert report.ok
    assert "in progress" in check(report, "cron.job.runs").detail


@pytest.mark.parametrize(
    ("text", "period", "description"),
    [
        ("20 seconds", 20, "every 20 seconds"),
        ("1 second", 1, "every second"),
        ("*/20 * * * * *", 1200, "every 20 minutes"),
        ("* * * * *", 60, "every minute"),
        ("*/15 * * * *", 900, "every 15 minutes"),
        ("0 * * * *", 3600, "every hour"),
        ("5,10 * * * *", 3300, "irregularly, up to 55 min apart"),
        ("0 9-17 * * *", 57600, "irregularly, up to 16.0 h apart"),
        ("*/10 */2 * * *", 4200, "irregularly, up to 70 min apart"),
        ("0 12 * * 1", 86400, "only on some days (a day or more between runs)"),
        ("@daily", 86400, "every day"),
        ("@reboot", None, "only at server start"),
        ("30 seconds ago", None, "not a valid schedule"),
        ("*/0 * * * *", None, "not understood (minute/hour fields)"),
        ("61 * * * *", None, "not understood (minute/hour fields)"),
        ("a-b * * * *", None, "not understood (minute/hour fields)"),
    ],
)
def test_parse_schedule(text: str, period: int | None, description: str) -> None:
    schedule = parse_schedule(text)
    assert schedule.period_seconds == period
    assert schedule.description == description


def test_parse_schedule_flags_ignored_fields() -> None:
    schedule = parse_schedule("*/20 * * * * *")
    assert schedule.ignored_fields == ("*",)
    assert not schedule.interval
    assert parse_schedule("20 seconds").interval


def test_malformed_report_fails_closed() -> None:
    report = build_report({"functions": "nonsense"})
    assert not report.ok
    names = {c.name for c in report.problems}
    assert {"schema.version", "schema.functions", "users_table", "settings", "pg_cron"} <= names


def test_build_report_does_not_modify_its_input() -> None:
    raw = healthy()
    snapshot = copy.deepcopy(raw)
    build_report(raw)
    assert raw == snapshot


def test_verify_and_migrate_names_are_public_and_documented() -> None:
    names = [
        "MigrationError",
        "MigrationResult",
        "SetupCheck",
        "SetupError",
        "SetupReport",
        "averify_setup",
        "migrate",
        "rollback",
        "verify_setup",
    ]
    for name in names:
        assert name in presence_sdk.__all__
        assert (getattr(presence_sdk, name).__doc__ or "").strip(), name
    assert presence_sdk.__all__ == sorted(
        presence_sdk.__all__, key=lambda n: (not n[0].isupper(), n)
    )
