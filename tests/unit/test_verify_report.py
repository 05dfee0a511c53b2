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


USERS_COLUMNS = ["id", "status", "created_at", "last_heartbeat", "online_since"]
ALL_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


def relation(
    privileges: dict[str, list[str]], policies: list[dict[str, Any]], *, rls: bool = True
) -> dict[str, Any]:
    return {"exists": True, "rls_enabled": rls, "privileges": privileges, "policies": policies}


def policy(name: str, command: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "command": command, "roles": roles, "permissive": True}


#: presence_private's privacy internals as the report lists them (readers: the reads
#: run them as the caller; writers: only the settings RPCs, with owner rights).
PRIVACY_FUNCTIONS = [
    {
        "name": name,
        "security_definer": definer,
        "config": ['search_path=""'] if definer else None,
        "execute": {"anon": False, "authenticated": reader, "service_role": reader},
    }
    for name, definer, reader in (
        ("presence_private.anyone_restricting()", False, True),
        ("presence_private.contact_check(uuid,uuid)", True, True),
        ("presence_private.forget_hidden_period()", True, False),
        ("presence_private.lists_every_user()", False, True),
        ("presence_private.privacy_of(uuid)", True, False),
        ("presence_private.set_invisible(uuid[],boolean)", True, False),
        ("presence_private.settings_owner(uuid,text)", True, False),
        ("presence_private.viewer_sees_all()", False, True),
        ("presence_private.visible_to(uuid,uuid)", False, True),
    )
]


def privacy_section() -> dict[str, Any]:
    """The report's "privacy" section for a complete setup (migration 7)."""
    return {
        "installed": True,
        "hook": {
            "exists": True,
            "is_default": True,
            "security_definer": False,
            "config": ['search_path=""'],
            "execute": {"anon": False, "authenticated": False, "service_role": False},
        },
        "objects": dict.fromkeys(
            (
                "presence_private.anyone_restricting()",
                "presence_private.contact_check(uuid, uuid)",
                "presence_private.forget_hidden_period()",
                "presence_private.lists_every_user()",
                "presence_private.privacy_of(uuid)",
                "presence_private.privacy_settings",
                "presence_private.set_invisible(uuid[], boolean)",
                "presence_private.settings_owner(uuid, text)",
                "presence_private.stored_presence",
                "presence_private.user_presence_all_rows",
                "presence_private.viewer_sees_all()",
                "presence_private.visible_to(uuid, uuid)",
            ),
            True,
        ),
        "readable_presence_columns": {"anon": [], "authenticated": []},
        "select_grants": {
            "PUBLIC": {"table": False, "columns": []},
            "anon": {"table": False, "columns": []},
            "authenticated": {"table": False, "columns": []},
        },
        "users_in_realtime": False,
    }


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
                "config": ['search_path=""'],
                "execute": {
                    "anon": name == "presence_settings",
                    "authenticated": name in CLIENT_FUNCTIONS,
                    "service_role": name
                    not in (
                        "presence_configure",
                        "presence_configure_events",
                        "presence_schedule_sweep",
                        "presence_prune_job_history",
                    ),
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
            "columns": USERS_COLUMNS,
            "writable_presence_columns": {
                "anon": {"UPDATE": [], "INSERT": []},
                "authenticated": {"UPDATE": [], "INSERT": []},
            },
        },
        "relations": {
            "users": relation(
                {"anon": [], "authenticated": ["SELECT"], "service_role": ALL_PRIVILEGES},
                [
                    policy("users_select_authenticated", "SELECT", ["authenticated"]),
                    policy("users_update_own", "UPDATE", ["authenticated"]),
                ],
            ),
            "user_presence": relation(
                {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
                [],
                rls=False,
            ),
            "presence_config": relation(
                {"anon": ["SELECT"], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
                [
                    policy(
                        "presence_config_read", "SELECT", ["anon", "authenticated", "service_role"]
                    )
                ],
            ),
            "presence_sessions": relation(
                {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
                [policy("presence_sessions_select_own", "SELECT", ["authenticated"])],
            ),
            "presence_events": relation(
                {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
                [policy("presence_events_select", "SELECT", ["authenticated"])],
            ),
            "presence_privacy": relation(
                {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
                [policy("presence_privacy_select_own", "SELECT", ["authenticated"])],
            ),
        },
        "private_schema": {
            "exists": True,
            "usage": {"anon": False, "authenticated": True, "service_role": True},
            "functions": [
                {
                    "name": "presence_private.live_after()",
                    "security_definer": True,
                    "config": ['search_path=""'],
                    "execute": {"anon": False, "authenticated": True, "service_role": True},
                },
                {
                    "name": "presence_private.sync_users(uuid[],timestamp with time zone[])",
                    "security_definer": True,
                    "config": ['search_path=""', "plan_cache_mode=force_generic_plan", "jit=off"],
                    "execute": {"anon": False, "authenticated": False, "service_role": False},
                },
                *copy.deepcopy(PRIVACY_FUNCTIONS),
            ],
        },
        "event_triggers": [
            {"name": name, "table": table, "exists": True, "enabled": True}
            for name, table in (
                ("presence_events_session_delete", "public.presence_sessions"),
                ("presence_events_session_insert", "public.presence_sessions"),
                ("presence_events_session_update", "public.presence_sessions"),
                ("presence_events_user_update", "public.users"),
            )
        ],
        "privacy": privacy_section(),
        "signup_trigger": {
            "function_exists": True,
            "function_security_definer": True,
            "function_config": ['search_path=""'],
            "triggers": [
                {"name": "on_auth_user_created_presence", "enabled": True, "on_insert": True}
            ],
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
        "run_history": {
            "rows": 4321,
            "older_than_a_day": 1,
            "oldest_start_time": "2025-12-31T11:59:50+00:00",
            "table_bytes": 1_400_000,
        },
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
    assert names[-7:] == [
        "cron.job",
        "cron.job.active",
        "cron.job.command",
        "cron.job.schedule",
        "cron.job.runs",
        "cron.job.recent",
        "cron.job.history",
    ]
    assert all(c.fix == "" for c in report.checks)
    assert "sweep period: 20 s" in str(report)
    assert report.to_dict()["sweep_period_seconds"] == 20


def test_expected_setup_is_read_from_the_shipped_sql() -> None:
    expected = expected_setup()
    # The newest migration that (re)defines the report declares the version; no later
    # one declares another.
    declaring = [m.filename for m in migrations() if "'schema_version', " in m.up]
    assert declaring[-1] == expected.report_migration
    report_sql = next(m.up for m in migrations() if m.filename == expected.report_migration)
    assert f"'schema_version', {expected.schema_version}" in report_sql
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
            "migrate skips them: re-run the migrations by hand, in order (idempotent): "
            "`presence-sdk sql --file add_heartbeat | psql <DATABASE_URL>`, then",
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


# -- findings added after attacking 0.1.0 (issue 11); proven on a database in
# -- tests/integration/test_verify_hardening.py


def test_an_older_report_is_named_once_and_its_checks_are_skipped() -> None:
    raw = healthy()
    for key in ("relations", "signup_trigger", "run_history", "private_schema", "event_triggers"):
        del raw[key]
    del raw["users_table"]["writable_presence_columns"]
    for fn in raw["functions"]:
        del fn["config"]
    report = build_report(raw)
    finding = only_problem(report, "schema.report")
    assert "function settings, grants and policies, presence column grants" in finding.detail
    assert "presence-sdk migrate --dsn <DATABASE_URL>" in finding.fix
    assert "presence-sdk sql --no-schema | psql" in finding.fix
    names = {c.name for c in report.checks}
    assert not names & {
        "security.search_path",
        "security.presence_columns",
        "security.reads",
        "security.writes",
        "security.policies",
        "signup_trigger",
        "cron.job.history",
    }


def test_plain_postgres_without_the_api_roles_raises_no_alarm() -> None:
    raw = healthy()
    for rel in raw["relations"].values():
        rel["privileges"] = {}
    raw["users_table"]["writable_presence_columns"] = {}
    report = build_report(raw)
    assert report.ok, str(report)


def test_a_policy_for_public_lets_everyone_read() -> None:
    raw = healthy()
    raw["relations"]["users"]["policies"] = [policy("everyone", "ALL", ["public"])]
    assert build_report(raw).ok
    raw["relations"]["users"]["policies"][0]["permissive"] = False
    finding = only_problem(build_report(raw), "security.policies")
    assert "read public.users" in finding.detail


def test_presence_columns_fix_keeps_the_apps_columns_and_quotes_them() -> None:
    raw = healthy()
    raw["users_table"]["columns"] = ["id", "status", "Nick Name", "last_heartbeat", "online_since"]
    raw["users_table"]["writable_presence_columns"]["authenticated"]["UPDATE"] = [
        "status",
        "last_heartbeat",
        "online_since",
    ]
    raw["relations"]["users"]["privileges"]["authenticated"] = ["SELECT", "UPDATE"]
    finding = only_problem(build_report(raw), "security.presence_columns")
    assert finding.fix.startswith(
        "REVOKE UPDATE ON TABLE public.users FROM authenticated; "
        'GRANT UPDATE (id, "Nick Name") ON TABLE public.users TO authenticated;'
    )


@pytest.mark.parametrize(("old", "ok"), [(10_000, True), (10_001, False)])
def test_run_history_limit(old: int, ok: bool) -> None:
    raw = healthy()
    raw["run_history"].update(older_than_a_day=old, rows=old + 4320)
    check_ = check(build_report(raw), "cron.job.history")
    assert check_.ok is ok
    assert "the whole table: 1.3 MB" in check_.detail
    if not ok:
        assert "the oldest from 1 day ago" in check_.detail
        assert check_.fix.startswith(
            "delete the backlog now: SELECT public.presence_prune_job_history("
        )


def test_a_configured_sweep_longer_than_the_timeout_is_fixed_at_the_setting() -> None:
    raw = healthy()
    raw["settings"]["sweep_interval_seconds"] = 50
    raw["job"]["schedule"] = "50 seconds"
    report = build_report(raw)
    assert [c.name for c in report.problems] == ["settings", "cron.job.schedule"]
    for finding in report.problems:
        assert finding.fix.endswith(
            "SELECT public.presence_configure(sweep_interval_seconds => 20);"
        )


def test_definer_settings_include_the_signup_trigger_function() -> None:
    raw = healthy()
    raw["signup_trigger"]["function_config"] = None
    finding = only_problem(build_report(raw), "security.search_path")
    assert finding.fix == "ALTER FUNCTION public.handle_new_auth_user() SET search_path = '';"


# -- sessions and the event log (migrations 5 and 6); proven on a database in
# -- tests/integration/test_verify_sessions.py


def test_a_report_from_before_sessions_and_events_asks_to_migrate() -> None:
    raw = healthy()
    raw["schema_version"] = 3
    for table in ("presence_sessions", "presence_events"):
        del raw["relations"][table]
    del raw["private_schema"], raw["event_triggers"]
    raw["functions"] = [f for f in raw["functions"] if f["name"] in PRE_SESSIONS_FUNCTIONS]
    report = build_report(raw)
    names = [c.name for c in report.problems]
    assert names == ["schema.version", "schema.sessions", "schema.events"]
    sessions, events = report.problems[1:]
    assert "no presence per connection (public.presence_sessions" in sessions.detail
    assert "no event log (public.presence_events: watch()" in events.detail
    for finding in (sessions, events):
        assert finding.fix.startswith("older version of the presence SQL: apply the newer")
        assert "presence-sdk migrate --dsn <DATABASE_URL>" in finding.fix


PRE_SESSIONS_FUNCTIONS = (
    "mark_inactive_users_offline",
    "presence_configure",
    "presence_counts",
    "presence_get",
    "presence_heartbeat",
    "presence_is_online",
    "presence_leave",
    "presence_list_online",
    "presence_prune_job_history",
    "presence_schedule_sweep",
    "presence_settings",
    "presence_setup_report",
)


def test_a_dropped_event_log_is_re_run_by_hand() -> None:
    raw = healthy()
    raw["relations"]["presence_events"] = {"exists": False}
    finding = only_problem(build_report(raw), "schema.events")
    assert "public.presence_events is missing" in finding.detail
    # migrate skips recorded files; re-running the log's file alone would put back
    # the setup report it defines over the privacy migration's: every later file too.
    assert finding.fix == (
        "re-run the migrations by hand, in order (idempotent): "
        "`presence-sdk sql --file events | psql <DATABASE_URL>`, "
        "then `presence-sdk sql --file privacy | psql <DATABASE_URL>`"
    )


def test_a_missing_private_schema_names_both_files() -> None:
    raw = healthy()
    raw["private_schema"] = {"exists": False}
    finding = only_problem(build_report(raw), "schema.sessions")
    assert "schema presence_private missing" in finding.detail
    assert "--file sessions | psql <DATABASE_URL>`, then `presence-sdk sql --file events" in (
        finding.fix
    )


@pytest.mark.parametrize("name", ["presence_track_beat", "presence_track_end"])
def test_batch_rpcs_belong_to_the_service_role(name: str) -> None:
    signature = expected_setup().signatures[name]
    raw = healthy()
    function(raw, name)["execute"].update(authenticated=True, service_role=False)
    finding = only_problem(build_report(raw), f"security.{name}")
    assert "beat or end the sessions of any user" in finding.detail
    assert finding.fix == (
        f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC, anon, authenticated; "
        f"GRANT EXECUTE ON FUNCTION {signature} TO service_role;"
    )
    function(raw, name)["execute"]["authenticated"] = False
    finding = only_problem(build_report(raw), f"security.{name}")
    assert "the trackers' batches fail with permission denied" in finding.detail
    assert finding.fix == f"GRANT EXECUTE ON FUNCTION {signature} TO service_role;"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("presence_sessions", "every user's sessions (devices, metadata)"),
        ("presence_events", "every user's presence history"),
    ],
)
def test_row_level_security_off_on_sessions_or_events(table: str, words: str) -> None:
    raw = healthy()
    raw["relations"][table]["rls_enabled"] = False
    finding = only_problem(build_report(raw), f"security.rls.{table}")
    assert words in finding.detail
    assert finding.fix == f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY;"


def test_event_triggers_missing_or_disabled() -> None:
    raw = healthy()
    triggers = {t["name"]: t for t in raw["event_triggers"]}
    triggers["presence_events_session_delete"]["exists"] = False
    triggers["presence_events_user_update"]["enabled"] = False
    finding = only_problem(build_report(raw), "events.triggers")
    assert (
        "presence_events_session_delete on public.presence_sessions is missing (no events for "
        "sessions ending (leave, timeout, evicted))" in finding.detail
    )
    assert "presence_events_user_update on public.users is DISABLED" in finding.detail
    assert finding.fix == (
        "CREATE TRIGGER presence_events_session_delete AFTER DELETE ON public.presence_sessions "
        "REFERENCING OLD TABLE AS ended FOR EACH STATEMENT EXECUTE FUNCTION "
        "presence_private.log_sessions_ended(); "
        "ALTER TABLE public.users ENABLE TRIGGER presence_events_user_update;"
    )


def test_private_definers_pin_search_path_too() -> None:
    raw = healthy()
    raw["private_schema"]["functions"][1]["config"] = ["jit=off"]
    finding = only_problem(build_report(raw), "security.search_path")
    assert "without search_path = '': presence_private.sync_users." in finding.detail
    assert finding.fix == (
        "ALTER FUNCTION presence_private.sync_users(uuid[],timestamp with time zone[]) "
        "SET search_path = '';"
    )


def test_the_reads_need_the_private_schema() -> None:
    raw = healthy()
    raw["private_schema"]["usage"]["authenticated"] = False
    finding = only_problem(build_report(raw), "security.reads")
    assert "authenticated cannot use schema presence_private" in finding.detail
    assert finding.fix == "GRANT USAGE ON SCHEMA presence_private TO authenticated;"


def test_clients_must_not_write_sessions_or_the_log() -> None:
    raw = healthy()
    raw["relations"]["presence_sessions"]["privileges"]["authenticated"] = ["SELECT", "TRUNCATE"]
    raw["relations"]["presence_events"]["privileges"]["anon"] = ["INSERT"]
    finding = only_problem(build_report(raw), "security.writes")
    assert "authenticated may change public.presence_sessions (forge or wipe" in finding.detail
    assert "anon may change public.presence_events (forge or erase" in finding.detail
    assert "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE " in finding.fix


def test_session_and_event_rpcs_are_client_api() -> None:
    raw = healthy()
    function(raw, "presence_session_beat")["execute"]["authenticated"] = False
    function(raw, "presence_events_since")["execute"]["anon"] = True
    report = build_report(raw)
    assert [c.name for c in report.problems] == ["security.client_api", "security.anon_api"]
    assert "presence_session_beat" in report.problems[0].detail
    assert "presence_events_since" in report.problems[1].detail
