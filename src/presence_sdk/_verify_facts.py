"""What the checks of verify_setup() judge: the shipped SQL's expectations and the report.

:func:`expected_setup` reads what ``presence-sdk migrate`` installs from the shipped
migrations (schema version, job, function signatures, ``SECURITY DEFINER``), so the
judge never drifts from the SQL. :class:`Facts` wraps the JSON of
``public.presence_setup_report()`` with typed, forgiving accessors: a report under
judgement may be malformed or older than this package, and a missing piece reads as
"unknown", never as an exception. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from typing import Any

from presence_sdk._models import SetupCheck, _parse_time
from presence_sdk._schedule import Schedule, parse_schedule
from presence_sdk._sql import migrations

__all__ = [
    "BATCH_FUNCTIONS",
    "CLIENT_FUNCTIONS",
    "MIGRATE_CMD",
    "MIGRATE_HINT",
    "PRIVILEGED_FUNCTIONS",
    "SCHEDULE_HINT",
    "SERVICE_FUNCTIONS",
    "Check",
    "ExpectedSetup",
    "Facts",
    "expected_setup",
    "failed",
    "get",
    "passed",
    "report_time",
    "rerun_from",
]

#: The service-role batch RPCs of the trackers: they beat and end sessions of any user.
BATCH_FUNCTIONS = ("presence_track_beat", "presence_track_end")
#: Functions only the owner/service may run: never executable by anon/authenticated.
PRIVILEGED_FUNCTIONS = (
    "mark_inactive_users_offline",
    "presence_setup_report",
    "presence_configure",
    "presence_schedule_sweep",
    "presence_prune_job_history",
    *BATCH_FUNCTIONS,
    "presence_prune_events",
    "presence_configure_events",
    "presence_set_invisible_for",
)
#: Functions the SDK calls as a signed-in user (``authenticated`` must execute them).
CLIENT_FUNCTIONS = (
    "presence_heartbeat",
    "presence_leave",
    "presence_settings",
    "presence_get",
    "presence_is_online",
    "presence_list_online",
    "presence_counts",
    "presence_session_beat",
    "presence_session_leave",
    "presence_my_sessions",
    "presence_events_since",
    "presence_session_history",
    "presence_online_per_day",
    "presence_set_invisible",
    "presence_set_visibility",
    "presence_my_privacy",
)
#: The one client function anon needs: the timings, read before signing in.
ANON_FUNCTIONS = ("presence_settings",)
#: Functions the service role calls (the sweep by hand, verify_setup over HTTP, the
#: trackers' batches).
SERVICE_FUNCTIONS = (
    "mark_inactive_users_offline",
    "presence_setup_report",
    *BATCH_FUNCTIONS,
    "presence_set_invisible_for",
)

MIGRATE_CMD = (
    "`presence-sdk migrate --dsn <DATABASE_URL>`, or `supabase db push` with the files "
    "from `presence-sdk sql`"
)
MIGRATE_HINT = "apply the presence migrations: " + MIGRATE_CMD
SCHEDULE_HINT = "run as postgres (Supabase SQL editor): SELECT public.presence_schedule_sweep();"

#: A check: the report in, zero or more findings out. Registered in ``_verify.CHECKS``.
Check = Callable[["Facts"], Iterator[SetupCheck]]


def rerun_from(name: str) -> str:
    """The fix for objects of migration ``name`` dropped from an up-to-date database.

    ``presence-sdk migrate`` never runs a recorded file again, so the files are run by
    hand: ``name`` and every later one, in order (each is idempotent). A later file
    may redefine what an earlier one installs (the privacy migration wraps the reads
    of the sessions one, and redefines the setup report): stopping after ``name``
    would undo it.
    """
    shipped = [m.name for m in migrations()]
    names = shipped[shipped.index(name) :] if name in shipped else [name]
    steps = ", then ".join(f"`presence-sdk sql --file {n} | psql <DATABASE_URL>`" for n in names)
    plural = "s" if len(names) > 1 else ""
    return f"re-run the migration{plural} by hand, in order (idempotent): {steps}"


def passed(name: str, detail: str) -> SetupCheck:
    """A check that found nothing wrong."""
    return SetupCheck(name=name, ok=True, detail=detail)


def failed(name: str, detail: str, fix: str, *, warning: bool = False) -> SetupCheck:
    """A finding, with how to fix it (``warning``: it does not fail the report)."""
    return SetupCheck(name=name, ok=False, detail=detail, fix=fix, warning=warning)


# --------------------------------------------------------------------------------------
# What the shipped SQL says


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpectedSetup:
    """What this package's SQL installs, read from the shipped migrations.

    Attributes:
        schema_version: The ``schema_version`` the newest setup report returns.
        report_migration: File name of the migration that defines that report.
        job_name: Name of the pg_cron sweep job.
        job_command: The command the migration schedules.
        signatures: Function name -> full signature (``public.f(integer)``).
        security_definer: Names of the functions created ``SECURITY DEFINER``.
        triggers: Trigger name -> the ``CREATE TRIGGER`` statement that makes it.
        trigger_migrations: Trigger name -> the migration (name) that creates it.
        function_migrations: Function name -> the newest migration (name) that
            defines it (the one whose definition is current).
    """

    schema_version: int
    report_migration: str
    job_name: str
    job_command: str
    signatures: Mapping[str, str]
    security_definer: frozenset[str]
    triggers: Mapping[str, str]
    trigger_migrations: Mapping[str, str]
    function_migrations: Mapping[str, str]


_SCHEMA_VERSION = re.compile(r"'schema_version'\s*,\s*(\d+)")
_JOB = re.compile(r"cron\.schedule\(\s*'(?P<name>[^']+)'\s*,\s*\w+\s*,\s*'(?P<command>[^']+)'\s*\)")
_SIGNATURE = re.compile(r"\(\s*'(?P<name>\w+)'\s*,\s*'(?P<sig>public\.\w+\([^)]*\))'\s*\)")
_TRIGGER = re.compile(r"^\s*CREATE\s+TRIGGER\s+(?P<name>\w+)\b[^;]*;", re.MULTILINE)
_FUNCTION = re.compile(
    r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+public\.(?P<name>\w+)\s*"
    r"\((?:[^()]|\([^()]*\))*\)(?P<header>.*?)\bAS\s+\$",
    re.IGNORECASE | re.DOTALL,
)


@cache
def expected_setup() -> ExpectedSetup:
    """Read what the shipped migrations install (cached; raises if the SQL changed shape)."""
    version: tuple[int, str] | None = None
    job: tuple[str, str] | None = None
    signatures: dict[str, str] = {}
    definer: dict[str, bool] = {}
    defined_in: dict[str, str] = {}
    triggers: dict[str, tuple[str, str]] = {}
    for migration in migrations():  # oldest first: later definitions win
        for match in _SCHEMA_VERSION.finditer(migration.up):
            version = (int(match[1]), migration.filename)
        if (found := _JOB.search(migration.up)) is not None:
            job = (found["name"], found["command"])
        signatures.update((m["name"], m["sig"]) for m in _SIGNATURE.finditer(migration.up))
        triggers.update(
            (m["name"], (" ".join(m[0].split()), migration.name))
            for m in _TRIGGER.finditer(migration.up)
        )
        for fn in _FUNCTION.finditer(migration.up):
            definer[fn["name"]] = (
                re.search(r"\bSECURITY\s+DEFINER\b", fn["header"], re.I) is not None
            )
            defined_in[fn["name"]] = migration.name
    if version is None or job is None:
        msg = "the shipped SQL no longer declares schema_version or the sweep job"
        raise RuntimeError(msg)
    return ExpectedSetup(
        schema_version=version[0],
        report_migration=version[1],
        job_name=job[0],
        job_command=job[1],
        signatures=signatures,
        security_definer=frozenset(name for name, yes in definer.items() if yes),
        triggers={name: statement for name, (statement, _) in triggers.items()},
        trigger_migrations={name: origin for name, (_, origin) in triggers.items()},
        function_migrations=defined_in,
    )


# --------------------------------------------------------------------------------------
# The report


def get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def report_time(value: Any) -> datetime | None:
    """A time from the report, or None if it is missing or unreadable."""
    if not isinstance(value, datetime | str):
        return None
    try:
        return _parse_time(value)
    except ValueError:
        return None


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class Facts:
    """The setup report, with what the checks derive from it.

    Every accessor tolerates missing or malformed parts (returns None, an empty
    collection or False), so one broken section never hides the other findings.
    """

    def __init__(self, raw: Mapping[str, Any], expected: ExpectedSetup) -> None:
        self.raw = raw
        self.expected = expected

    @cached_property
    def functions(self) -> dict[str, Mapping[str, Any]]:
        """The reported functions by name (present or not)."""
        return {
            str(f.get("name")): f for f in self.raw.get("functions") or () if isinstance(f, Mapping)
        }

    def function(self, name: str) -> Mapping[str, Any] | None:
        """The function ``name`` if the report says it exists."""
        fn = self.functions.get(name)
        return fn if fn is not None and fn.get("exists") else None

    def can_execute(self, name: str, role: str) -> bool:
        """The report says ``role`` may execute the existing function ``name``."""
        return bool(get(self.function(name), "execute", role))

    def signature(self, name: str) -> str:
        """``public.name(argument types)`` as the shipped SQL declares it."""
        return self.expected.signatures.get(name, f"public.{name}()")

    @cached_property
    def users_table(self) -> Mapping[str, Any] | None:
        """The ``users_table`` section if public.users exists."""
        table = self.raw.get("users_table")
        return table if isinstance(table, Mapping) and table.get("exists") else None

    @cached_property
    def users_columns(self) -> list[str]:
        """Columns of public.users in table order."""
        return _strings(get(self.users_table, "columns"))

    def relation(self, name: str) -> Mapping[str, Any] | None:
        """The ``relations`` entry of public.<name> if it exists."""
        rel = get(self.raw, "relations", name)
        return rel if isinstance(rel, Mapping) and rel.get("exists") else None

    def privileges(self, relation: str, role: str) -> list[str] | None:
        """Table privileges of ``role`` on public.<relation> (None: role or data missing)."""
        found = get(self.relation(relation), "privileges", role)
        return _strings(found) if isinstance(found, list) else None

    def policies(self, relation: str) -> list[Mapping[str, Any]]:
        """Row level security policies of public.<relation>."""
        found = get(self.relation(relation), "policies")
        return [p for p in found if isinstance(p, Mapping)] if isinstance(found, list) else []

    def has_relation_entry(self, name: str) -> bool | None:
        """Whether the report describes public.<name> at all (None: no relations section,
        an older report that ``schema.report`` names). A report without the entry
        predates the object: the database's presence SQL is an older version."""
        relations = self.raw.get("relations")
        return name in relations if isinstance(relations, Mapping) else None

    @cached_property
    def private_schema(self) -> Mapping[str, Any] | None:
        """The ``private_schema`` section (schema presence_private), if reported."""
        section = self.raw.get("private_schema")
        return section if isinstance(section, Mapping) else None

    @cached_property
    def private_functions(self) -> list[Mapping[str, Any]]:
        """The functions in presence_private (``name`` is their regprocedure text)."""
        found = get(self.private_schema, "functions")
        return [f for f in found if isinstance(f, Mapping)] if isinstance(found, list) else []

    @cached_property
    def privacy(self) -> Mapping[str, Any] | None:
        """The ``privacy`` section (migration 7), if reported."""
        section = self.raw.get("privacy")
        return section if isinstance(section, Mapping) else None

    @cached_property
    def event_triggers(self) -> list[Mapping[str, Any]] | None:
        """The event log's triggers (name, table, exists, enabled), if reported."""
        found = self.raw.get("event_triggers")
        return [t for t in found if isinstance(t, Mapping)] if isinstance(found, list) else None

    @cached_property
    def timeout(self) -> int | None:
        """presence_config.timeout_seconds, if there is a row."""
        value = get(self.raw, "settings", "timeout_seconds")
        return value if isinstance(value, int) else None

    @cached_property
    def sweep_setting(self) -> int | None:
        """presence_config.sweep_interval_seconds, if there is a row."""
        value = get(self.raw, "settings", "sweep_interval_seconds")
        return value if isinstance(value, int) else None

    @cached_property
    def cron_enabled(self) -> bool:
        """pg_cron is installed in this database (the job checks apply)."""
        cron = self.raw.get("pg_cron")
        return isinstance(cron, Mapping) and bool(cron.get("available") and cron.get("installed"))

    @cached_property
    def cron_version(self) -> tuple[int, int] | None:
        """pg_cron's major.minor, if known."""
        match = re.match(r"^(\d+)\.(\d+)", str(get(self.raw, "pg_cron", "version") or ""))
        return (int(match[1]), int(match[2])) if match else None

    @property
    def has_interval_schedules(self) -> bool:
        """pg_cron >= 1.5 (or unknown): '<n> seconds' schedules exist."""
        return self.cron_version is None or self.cron_version >= (1, 5)

    @cached_property
    def job(self) -> Mapping[str, Any] | None:
        """The sweep job, when pg_cron is enabled and the job exists."""
        job = self.raw.get("job")
        return job if self.cron_enabled and isinstance(job, Mapping) else None

    @cached_property
    def schedule(self) -> Schedule | None:
        """The job's schedule, understood (None without a job)."""
        return parse_schedule(str(self.job.get("schedule") or "")) if self.job else None

    @property
    def period(self) -> int | None:
        """The effective sweep period in seconds, if there is a job and it is understood."""
        return self.schedule.period_seconds if self.schedule else None

    @cached_property
    def runs(self) -> list[Mapping[str, Any]]:
        """The job's latest runs, newest first."""
        return [r for r in self.raw.get("recent_runs") or () if isinstance(r, Mapping)]

    @property
    def inspect_runs(self) -> str:
        """The SQL that shows the job's latest runs."""
        jobid = get(self.job, "jobid")
        return (
            f"inspect: SELECT status, return_message, start_time FROM cron.job_run_details "
            f"WHERE jobid = {jobid} ORDER BY runid DESC LIMIT 5;"
        )

    def suggested_sweep(self) -> int:
        """A sweep period that fits the configured timeout (at most half of it, <= 20 s)."""
        return max(1, min(20, (self.timeout or 40) // 2))
