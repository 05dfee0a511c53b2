"""Judge a presence setup from ``public.presence_setup_report()`` (pure: no I/O).

:func:`build_report` turns the JSON that the setup-report RPC returns into a
:class:`~presence_sdk.SetupReport`: one :class:`~presence_sdk.SetupCheck` per thing
that can be wrong, each with what was found and how to fix it. The thin shells in
:mod:`presence_sdk._verify_io` fetch the JSON (over PostgREST or a direct
connection) and call in here, so the sync and async flavours judge identically.

The judge is a table: :data:`CHECKS` lists small per-area check functions (schema in
:mod:`presence_sdk._checks_schema`, security in :mod:`presence_sdk._checks_security`,
pg_cron and the job in :mod:`presence_sdk._checks_cron`, sessions and the event log in
:mod:`presence_sdk._checks_sessions`, privacy in :mod:`presence_sdk._checks_privacy`),
each a function from the report's :class:`~presence_sdk._verify_facts.Facts` to
findings. Adding a finding is adding one function to one of those modules and to the
list below.

What the package expects (schema version, job name and command, which functions are
``SECURITY DEFINER``, function signatures) is read from the shipped SQL, so it never
drifts from what ``presence-sdk migrate`` installs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from presence_sdk import _checks_cron as cron
from presence_sdk import _checks_privacy as privacy
from presence_sdk import _checks_schema as schema
from presence_sdk import _checks_security as security
from presence_sdk import _checks_sessions as sessions
from presence_sdk._models import SetupCheck, SetupReport
from presence_sdk._schedule import Schedule, parse_schedule
from presence_sdk._sql import migrations
from presence_sdk._verify_facts import (
    CLIENT_FUNCTIONS,
    MIGRATE_HINT,
    PRIVILEGED_FUNCTIONS,
    Check,
    ExpectedSetup,
    Facts,
    expected_setup,
)

__all__ = [
    "CHECKS",
    "CLIENT_FUNCTIONS",
    "PRIVILEGED_FUNCTIONS",
    "ExpectedSetup",
    "InstallProbe",
    "Schedule",
    "build_report",
    "expected_setup",
    "not_installed_report",
    "parse_schedule",
    "summarize",
]

#: Every check, in the order the report lists them.
CHECKS: tuple[Check, ...] = (
    schema.check_schema_version,
    schema.check_schema_functions,
    schema.check_report_sections,
    schema.check_users_table,
    schema.check_settings,
    security.check_rls,
    sessions.check_sessions,
    sessions.check_events,
    privacy.check_privacy,
    sessions.check_tables_rls,
    privacy.check_privacy_table,
    security.check_privileged_functions,
    security.check_client_api,
    security.check_anon_api,
    security.check_search_path,
    security.check_presence_columns,
    security.check_reads,
    security.check_writes,
    security.check_policies,
    privacy.check_column_reads,
    privacy.check_privacy_internals,
    privacy.check_hook,
    privacy.check_realtime,
    sessions.check_event_triggers,
    schema.check_signup_trigger,
    cron.check_pg_cron,
    cron.check_job,
    cron.check_job_active,
    cron.check_job_command,
    cron.check_job_schedule,
    cron.check_job_runs,
    cron.check_job_recent,
    cron.check_job_history,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallProbe:
    """What a direct connection could still find when the setup report is missing.

    Attributes:
        users_table: ``public.users`` exists.
        presence_api: An older presence API (``presence_heartbeat``) exists.
        recorded_versions: Presence migration versions recorded in
            ``supabase_migrations.schema_migrations`` (None: no such table).
    """

    users_table: bool
    presence_api: bool
    recorded_versions: tuple[str, ...] | None


def not_installed_report(
    message: str, *, probe: InstallProbe | None = None, raw: Mapping[str, Any] | None = None
) -> SetupReport:
    """The report for a database without ``presence_setup_report()`` (PGRST202/42883)."""
    shipped = [m.version for m in migrations()]
    detail = f"presence_setup_report() is missing ({message.strip()})"
    if probe is not None:
        parts = ["public.users " + ("exists" if probe.users_table else "is missing")]
        if probe.presence_api:
            parts.append("an older presence API is installed (migrations partly applied)")
        if probe.recorded_versions is not None:
            done = ", ".join(probe.recorded_versions) or "none"
            parts.append(f"recorded presence migrations: {done} of {len(shipped)}")
        detail += "; " + "; ".join(parts)
    fix = MIGRATE_HINT
    if probe is None:
        fix += (
            " (add --with-schema on a fresh project); if you just applied them, reload "
            "PostgREST's schema cache: NOTIFY pgrst, 'reload schema';"
        )
    elif not probe.users_table:
        fix += " (with --with-schema: public.users is created from schema.sql)"
    check = SetupCheck(name="schema.installed", ok=False, detail=detail, fix=fix)
    return SetupReport(checks=(check,), raw=dict(raw or {}))


def build_report(raw: Mapping[str, Any]) -> SetupReport:
    """Judge the JSON returned by ``presence_setup_report()``; see the module docstring."""
    facts = Facts(raw, expected_setup())
    checks: list[SetupCheck] = [finding for check in CHECKS for finding in check(facts)]
    version = raw.get("schema_version")
    return SetupReport(
        checks=tuple(checks),
        raw=dict(raw),
        sweep_period_seconds=facts.period,
        schema_version=version if isinstance(version, int) else None,
    )


def summarize(report: SetupReport) -> str:
    """One line naming the failed checks, e.g. ``"pg_cron, cron.job.active"``."""
    return ", ".join(check.name for check in report.problems) or "none"
