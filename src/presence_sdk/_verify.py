"""Judge a presence setup from ``public.presence_setup_report()`` (pure: no I/O).

:func:`build_report` turns the JSON that the setup-report RPC returns into a
:class:`~presence_sdk.SetupReport`: one :class:`~presence_sdk.SetupCheck` per thing
that can be wrong, each with what was found and how to fix it. The thin shells in
:mod:`presence_sdk._verify_io` fetch the JSON (over PostgREST or a direct
connection) and call in here, so the sync and async flavours judge identically.

What the package expects (schema version, job name and command, which functions are
``SECURITY DEFINER``, function signatures) is read from the shipped SQL, so it never
drifts from what ``presence-sdk migrate`` installs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import pairwise
from typing import Any

from presence_sdk._models import SetupCheck, SetupReport, _parse_time
from presence_sdk._sql import migrations

__all__ = [
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

#: Functions only the owner/service may run: never executable by anon/authenticated.
PRIVILEGED_FUNCTIONS = (
    "mark_inactive_users_offline",
    "presence_setup_report",
    "presence_configure",
    "presence_schedule_sweep",
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
)
#: Functions the service role calls (the sweep by hand, verify_setup over HTTP).
SERVICE_FUNCTIONS = ("mark_inactive_users_offline", "presence_setup_report")

#: Runs are judged missing when none started within this many sweep periods.
STALE_PERIODS = 3

_MIGRATE_CMD = (
    "`presence-sdk migrate --dsn <DATABASE_URL>`, or `supabase db push` with the files "
    "from `presence-sdk sql`"
)
_MIGRATE_HINT = "apply the presence migrations: " + _MIGRATE_CMD
_SCHEDULE_HINT = "run as postgres (Supabase SQL editor): SELECT public.presence_schedule_sweep();"
_ENABLE_CRON = (
    "on Supabase: Dashboard > Database > Extensions > enable pg_cron; then, in the SQL "
    "editor: SELECT public.presence_schedule_sweep();"
)


# --------------------------------------------------------------------------------------
# What the shipped SQL says


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpectedSetup:
    """What this package's SQL installs, read from the shipped migrations.

    Attributes:
        schema_version: The ``schema_version`` the newest setup report returns.
        job_name: Name of the pg_cron sweep job.
        job_command: The command the migration schedules.
        signatures: Function name -> full signature (``public.f(integer)``).
        security_definer: Names of the functions created ``SECURITY DEFINER``.
    """

    schema_version: int
    job_name: str
    job_command: str
    signatures: Mapping[str, str]
    security_definer: frozenset[str]


_SCHEMA_VERSION = re.compile(r"'schema_version'\s*,\s*(\d+)")
_JOB = re.compile(r"cron\.schedule\(\s*'(?P<name>[^']+)'\s*,\s*\w+\s*,\s*'(?P<command>[^']+)'\s*\)")
_SIGNATURE = re.compile(r"\(\s*'(?P<name>\w+)'\s*,\s*'(?P<sig>public\.\w+\([^)]*\))'\s*\)")
_FUNCTION = re.compile(
    r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+public\.(?P<name>\w+)\s*"
    r"\((?:[^()]|\([^()]*\))*\)(?P<header>.*?)\bAS\s+\$",
    re.IGNORECASE | re.DOTALL,
)


@cache
def expected_setup() -> ExpectedSetup:
    """Read what the shipped migrations install (cached; raises if the SQL changed shape)."""
    version: int | None = None
    job: tuple[str, str] | None = None
    signatures: dict[str, str] = {}
    definer: dict[str, bool] = {}
    for migration in migrations():  # oldest first: later definitions win
        for match in _SCHEMA_VERSION.finditer(migration.up):
            version = int(match[1])
        if (found := _JOB.search(migration.up)) is not None:
            job = (found["name"], found["command"])
        signatures.update((m["name"], m["sig"]) for m in _SIGNATURE.finditer(migration.up))
        for fn in _FUNCTION.finditer(migration.up):
            definer[fn["name"]] = (
                re.search(r"\bSECURITY\s+DEFINER\b", fn["header"], re.I) is not None
            )
    if version is None or job is None:
        msg = "the shipped SQL no longer declares schema_version or the sweep job"
        raise RuntimeError(msg)
    return ExpectedSetup(
        schema_version=version,
        job_name=job[0],
        job_command=job[1],
        signatures=signatures,
        security_definer=frozenset(name for name, yes in definer.items() if yes),
    )


# --------------------------------------------------------------------------------------
# Schedules


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """A pg_cron schedule, understood conservatively.

    Attributes:
        text: The schedule as stored in ``cron.job.schedule``.
        period_seconds: The longest time between two runs (an upper bound on how
            long the sweep can lag), or None if it could not be worked out.
        interval: True for pg_cron's ``'<n> seconds'`` interval schedules.
        ignored_fields: Cron fields after the fifth, which pg_cron silently ignores
            (cron has no seconds field).
        description: Human wording, e.g. ``"every 20 minutes"``.
    """

    text: str
    period_seconds: int | None
    interval: bool = False
    ignored_fields: tuple[str, ...] = ()
    description: str = ""


_INTERVAL = re.compile(r"^\s*(\d+)\s*seconds?\s*$", re.IGNORECASE)
_MACROS = {
    "@yearly": 366 * 86400,
    "@annually": 366 * 86400,
    "@monthly": 31 * 86400,
    "@weekly": 7 * 86400,
    "@daily": 86400,
    "@midnight": 86400,
    "@hourly": 3600,
}


def _describe(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"


def _cron_field(text: str, low: int, high: int) -> set[int] | None:
    """Values of one numeric cron field, or None if it is not plain numeric syntax."""
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        if step_text and not step_text.isdigit():
            return None
        step = int(step_text) if step_text else 1
        if step < 1:
            return None
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            if not (first.isdigit() and last.isdigit()):
                return None
            start, end = int(first), int(last)
        elif base.isdigit():
            start = int(base)
            end = high if step_text else start
        else:
            return None
        if not low <= start <= end <= high:
            return None
        values.update(range(start, end + 1, step))
    return values or None


def _unrestricted(field: str) -> bool:
    return field in ("*", "?", "*/1")


def parse_schedule(text: str) -> Schedule:
    """Work out how often a pg_cron schedule runs, erring on the long side.

    Handles interval schedules (``'20 seconds'``), the ``@hourly``-style macros and
    five-field cron expressions whose minute and hour fields use numbers, ranges,
    steps and lists. Day, month and weekday restrictions make the period at least a
    day. Fields after the fifth are reported as ignored: pg_cron accepts
    ``'*/20 * * * * *'`` and runs it every 20 minutes.
    """
    if (match := _INTERVAL.match(text)) is not None:
        seconds = int(match[1])
        return Schedule(
            text=text, period_seconds=seconds, interval=True, description=_describe(seconds)
        )
    stripped = text.strip().lower()
    if stripped in _MACROS:
        seconds = _MACROS[stripped]
        return Schedule(text=text, period_seconds=seconds, description=_describe(seconds))
    if stripped == "@reboot":
        return Schedule(text=text, period_seconds=None, description="only at server start")
    fields = text.split()
    if len(fields) < 5:
        return Schedule(text=text, period_seconds=None, description="not a valid schedule")
    minute, hour, day, month, weekday = fields[:5]
    ignored = tuple(fields[5:])
    minutes = _cron_field(minute, 0, 59)
    hours = _cron_field(hour, 0, 23)
    if minutes is None or hours is None:
        return Schedule(
            text=text,
            period_seconds=None,
            ignored_fields=ignored,
            description="not understood (minute/hour fields)",
        )
    times = sorted(h * 60 + m for h in hours for m in minutes)
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(times[0] + 1440 - times[-1])
    seconds = max(gaps) * 60
    description = _describe(seconds)
    if len(set(gaps)) > 1:
        description = f"irregularly, up to {_seconds(seconds)} apart"
    if not all(_unrestricted(f) for f in (day, month, weekday)):
        seconds = max(seconds, 86400)
        description = "only on some days (a day or more between runs)"
    return Schedule(
        text=text, period_seconds=seconds, ignored_fields=ignored, description=description
    )


# --------------------------------------------------------------------------------------
# Report building


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
    fix = _MIGRATE_HINT
    if probe is None:
        fix += (
            " (add --with-schema on a fresh project); if you just applied them, reload "
            "PostgREST's schema cache: NOTIFY pgrst, 'reload schema';"
        )
    elif not probe.users_table:
        fix += " (with --with-schema: public.users is created from schema.sql)"
    check = SetupCheck(name="schema.installed", ok=False, detail=detail, fix=fix)
    return SetupReport(checks=(check,), raw=dict(raw or {}))


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _time(value: Any) -> datetime | None:
    # A report under judgement may be malformed: an unreadable time is "unknown".
    if not isinstance(value, datetime | str):
        return None
    try:
        return _parse_time(value)
    except ValueError:
        return None


def _version_tuple(version: Any) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)", str(version or ""))
    return (int(match[1]), int(match[2])) if match else None


def _normalize_command(command: str) -> str:
    return " ".join(command.strip().rstrip(";").split()).lower()


def _seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Builder:
    def __init__(self, raw: Mapping[str, Any], expected: ExpectedSetup) -> None:
        self.raw = raw
        self.expected = expected
        self.checks: list[SetupCheck] = []
        self.period: int | None = None
        self.functions: dict[str, Mapping[str, Any]] = {
            str(f.get("name")): f for f in raw.get("functions") or () if isinstance(f, Mapping)
        }

    def add(self, name: str, ok: bool, detail: str, fix: str = "") -> None:
        self.checks.append(SetupCheck(name=name, ok=ok, detail=detail, fix="" if ok else fix))

    def signature(self, name: str) -> str:
        return self.expected.signatures.get(name, f"public.{name}()")

    # -- schema --------------------------------------------------------------------
    def schema(self) -> None:
        want = self.expected.schema_version
        have = self.raw.get("schema_version")
        if not isinstance(have, int):
            self.add(
                "schema.version", False, "the setup report has no schema_version", _MIGRATE_HINT
            )
        elif have < want:
            self.add(
                "schema.version",
                False,
                f"database has presence schema version {have}, this package expects {want}",
                "apply the newer migrations: " + _MIGRATE_CMD,
            )
        elif have > want:
            self.add(
                "schema.version",
                True,
                f"database has presence schema version {have}, newer than this package "
                f"({want}): upgrade presence-sdk",
            )
        else:
            self.add("schema.version", True, f"presence schema version {have}")

        missing = sorted(name for name, f in self.functions.items() if not f.get("exists"))
        wrong: list[str] = []
        for name, fn in sorted(self.functions.items()):
            if not fn.get("exists") or name not in self.expected.signatures:
                continue
            should = name in self.expected.security_definer
            if bool(fn.get("security_definer")) != should:
                wrong.append(
                    f"{name} should {'' if should else 'not '}be SECURITY DEFINER"
                    + ("" if should else " (it would bypass row level security)")
                )
        if not self.functions:
            self.add(
                "schema.functions", False, "the setup report lists no functions", _MIGRATE_HINT
            )
        elif missing or wrong:
            parts = []
            if missing:
                parts.append("missing: " + ", ".join(missing))
            parts.extend(wrong)
            self.add(
                "schema.functions",
                False,
                "; ".join(parts),
                "re-apply the presence migrations (they are idempotent): " + _MIGRATE_CMD,
            )
        else:
            self.add(
                "schema.functions", True, f"all {len(self.functions)} presence functions present"
            )

    def users_table(self) -> None:
        table = self.raw.get("users_table")
        if not isinstance(table, Mapping) or not table.get("exists"):
            self.add(
                "users_table",
                False,
                "public.users does not exist",
                "create it from schema.sql (`presence-sdk migrate --dsn <DATABASE_URL> "
                "--with-schema`, or `presence-sdk sql --file schema`)",
            )
            return
        columns = set(table.get("columns") or ())
        needed = ("id", "status", "last_heartbeat", "online_since")
        if absent := [c for c in needed if c not in columns]:
            self.add(
                "users_table",
                False,
                f"public.users lacks column(s) {', '.join(absent)}",
                "re-apply the presence migrations (they add these columns): " + _MIGRATE_CMD,
            )
        else:
            self.add("users_table", True, "public.users has the presence columns")

    def settings(self) -> int | None:
        settings = self.raw.get("settings")
        timeout = _get(settings, "timeout_seconds")
        if not isinstance(timeout, int):
            self.add(
                "settings",
                False,
                "public.presence_config has no row: timeout and sweep period are unknown",
                "INSERT INTO public.presence_config (singleton) VALUES (true) "
                "ON CONFLICT (singleton) DO NOTHING;",
            )
            return None
        sweep = _get(settings, "sweep_interval_seconds")
        beat = _get(settings, "heartbeat_interval_seconds")
        self.add(
            "settings",
            True,
            f"timeout {timeout} s, sweep every {sweep} s, heartbeat every {beat} s",
        )
        return timeout

    # -- security ------------------------------------------------------------------
    def security(self) -> None:
        table = self.raw.get("users_table")
        if isinstance(table, Mapping) and table.get("exists"):
            if table.get("rls_enabled"):
                self.add("security.rls", True, "row level security is enabled on public.users")
            else:
                self.add(
                    "security.rls",
                    False,
                    "row level security is DISABLED on public.users: every API role can "
                    "read and write all rows its grants allow",
                    "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;",
                )
        for name in PRIVILEGED_FUNCTIONS:
            fn = self.functions.get(name)
            if fn is None or not fn.get("exists"):
                continue
            execute = fn.get("execute") or {}
            exposed = [role for role in ("anon", "authenticated") if execute.get(role)]
            check = f"security.{name}"
            if exposed:
                self.add(
                    check,
                    False,
                    f"{name} is executable by {' and '.join(exposed)}: anyone with the "
                    "public API key can call it through the REST API",
                    f"REVOKE EXECUTE ON FUNCTION {self.signature(name)} "
                    "FROM PUBLIC, anon, authenticated;",
                )
            elif name in SERVICE_FUNCTIONS and not execute.get("service_role"):
                self.add(
                    check,
                    False,
                    f"{name} is not executable by service_role",
                    f"GRANT EXECUTE ON FUNCTION {self.signature(name)} TO service_role;",
                )
            else:
                self.add(check, True, f"{name} is not executable by anon or authenticated")
        denied = [
            name
            for name in CLIENT_FUNCTIONS
            if (fn := self.functions.get(name)) is not None
            and fn.get("exists")
            and not (fn.get("execute") or {}).get("authenticated")
        ]
        if denied:
            self.add(
                "security.client_api",
                False,
                f"signed-in users (authenticated) cannot execute {', '.join(denied)}: "
                "the presence clients will get permission errors",
                "GRANT EXECUTE ON FUNCTION "
                + ", ".join(self.signature(n) for n in denied)
                + " TO authenticated;",
            )
        else:
            self.add("security.client_api", True, "signed-in users can call the presence API")

    # -- pg_cron -------------------------------------------------------------------
    def pg_cron(self) -> bool:
        cron = self.raw.get("pg_cron")
        database = self.raw.get("database") or "this database"
        cron_db = _get(cron, "database_name")
        if not isinstance(cron, Mapping) or not cron.get("available"):
            self.add(
                "pg_cron",
                False,
                "pg_cron is not available on this server: stored statuses are never "
                "swept (reads stay exact)",
                _ENABLE_CRON + " Self-hosted: install pg_cron for your PostgreSQL, set "
                "shared_preload_libraries = 'pg_cron' and cron.database_name, restart.",
            )
            return False
        if cron.get("installed"):
            self.add(
                "pg_cron",
                True,
                f"pg_cron {cron.get('version')} is enabled (cron.database_name = {cron_db})",
            )
            return True
        if cron_db is None:
            detail = (
                "pg_cron is installed on the server but not loaded "
                "(not in shared_preload_libraries)"
            )
            fix = (
                _ENABLE_CRON + " Self-hosted: set shared_preload_libraries = 'pg_cron' and "
                f"cron.database_name = '{database}', restart, then CREATE EXTENSION pg_cron; "
                "SELECT public.presence_schedule_sweep();"
            )
        elif cron_db != database:
            detail = (
                f"pg_cron is not enabled here: it only runs in database {cron_db!r} "
                f"(cron.database_name) and the presence SQL is in {database!r}"
            )
            fix = (
                f"apply the presence SQL in database {cron_db!r} (on Supabase: postgres), "
                f"or set cron.database_name = '{database}' and restart"
            )
        else:
            detail = "pg_cron is available but not enabled in this database"
            fix = _ENABLE_CRON + " Self-hosted: CREATE EXTENSION pg_cron; then the same SELECT."
        self.add("pg_cron", False, detail + ": stored statuses are never swept", fix)
        return False

    def job(self, timeout: int | None) -> None:
        job = self.raw.get("job")
        name = self.expected.job_name
        if not isinstance(job, Mapping):
            self.add(
                "cron.job",
                False,
                f"no pg_cron job named {name!r}: stored statuses are never swept",
                _SCHEDULE_HINT,
            )
            return
        jobid = job.get("jobid")
        count = self.raw.get("job_count")
        database = self.raw.get("database")
        if isinstance(count, int) and count > 1:
            self.add(
                "cron.job",
                False,
                f"{count} pg_cron jobs are named {name!r} (scheduled by different users)",
                f"keep one: SELECT cron.unschedule(jobid) FROM cron.job "
                f"WHERE jobname = '{name}' AND jobid <> {jobid};",
            )
        elif database and job.get("database") != database:
            self.add(
                "cron.job",
                False,
                f"job {name!r} runs in database {job.get('database')!r}, but the presence "
                f"SQL is in {database!r}",
                f"SELECT cron.alter_job({jobid}, database := '{database}');",
            )
        else:
            self.add("cron.job", True, f"job {name!r} (id {jobid}) runs as {job.get('username')}")

        if job.get("active"):
            self.add("cron.job.active", True, "the job is active")
        else:
            self.add(
                "cron.job.active",
                False,
                "the job is INACTIVE: pg_cron does not run it",
                f"SELECT cron.alter_job({jobid}, active := true);",
            )

        command = str(job.get("command") or "")
        want = self.expected.job_command
        if _normalize_command(command) == _normalize_command(want):
            self.add("cron.job.command", True, f"runs {want}")
        else:
            unqualified = _normalize_command(command) == _normalize_command(
                want.replace("public.", "")
            )
            detail = f"the job runs {command!r} instead of {want!r}"
            if unqualified:
                detail += " (not schema-qualified: it depends on the job's search_path)"
            self.add("cron.job.command", False, detail, _SCHEDULE_HINT)

        self.schedule(str(job.get("schedule") or ""), timeout)
        self.runs(job, active=bool(job.get("active")))

    def schedule(self, text: str, timeout: int | None) -> None:
        schedule = parse_schedule(text)
        self.period = schedule.period_seconds
        cron_version = _version_tuple(_get(self.raw, "pg_cron", "version"))
        has_intervals = cron_version is None or cron_version >= (1, 5)
        configured = _get(self.raw, "settings", "sweep_interval_seconds")
        fix = _SCHEDULE_HINT
        if not has_intervals:
            fix += " (pg_cron < 1.5 has no second intervals: upgrade pg_cron for 20 s sweeps)"
        if schedule.ignored_fields:
            meant = ""
            step = re.fullmatch(r"\*/(\d+)", text.split(maxsplit=1)[0])
            if step is not None:
                meant = f", NOT every {step[1]} seconds"
            self.add(
                "cron.job.schedule",
                False,
                f"schedule {text!r} has {len(text.split())} fields: cron has no seconds field "
                f"and pg_cron silently ignores the extra one(s), so the sweep runs "
                f"{schedule.description.replace('minutes', 'MINUTES')}{meant}",
                fix,
            )
            return
        if schedule.period_seconds is None:
            self.add(
                "cron.job.schedule",
                False,
                f"schedule {text!r} is not understood ({schedule.description})",
                fix,
            )
            return
        period = schedule.period_seconds
        lag = f"runs {schedule.description} ({text!r})"
        if timeout is not None and period > timeout:
            if not has_intervals and text.split() == ["*"] * 5:
                self.add(
                    "cron.job.schedule",
                    True,
                    f"{lag}: the fallback for pg_cron < 1.5, which has no interval "
                    f"schedules; stored statuses may lag up to {period} s behind the "
                    f"{timeout} s timeout (reads stay exact). Upgrade pg_cron for 20 s sweeps",
                )
                return
            self.add(
                "cron.job.schedule",
                False,
                f"{lag}: longer than the {timeout} s timeout, so stored statuses stay "
                f"online for up to {_seconds(timeout + period)} after the last heartbeat",
                fix,
            )
            return
        if has_intervals and isinstance(configured, int) and period != configured:
            self.add(
                "cron.job.schedule",
                False,
                f"{lag}, but presence_config.sweep_interval_seconds is {configured}",
                _SCHEDULE_HINT + " (or change the period with SELECT public.presence_configure("
                f"sweep_interval_seconds => {period});)",
            )
            return
        within = f", within the {timeout} s timeout" if timeout is not None else ""
        self.add("cron.job.schedule", True, f"{lag}{within}")

    def runs(self, job: Mapping[str, Any], *, active: bool) -> None:
        runs = [r for r in self.raw.get("recent_runs") or () if isinstance(r, Mapping)]
        jobid = job.get("jobid")
        inspect = (
            f"inspect: SELECT status, return_message, start_time FROM cron.job_run_details "
            f"WHERE jobid = {jobid} ORDER BY runid DESC LIMIT 5;"
        )
        finished = [r for r in runs if r.get("status") in ("succeeded", "failed")]
        failed = [r for r in finished if r.get("status") == "failed"]
        if not runs:
            self.add(
                "cron.job.runs",
                True,
                "no runs recorded yet (a new job first runs within one period; if this "
                "stays empty, check cron.log_run and the pg_cron worker in the server log)",
            )
        elif finished and finished[0].get("status") == "failed":
            message = str(finished[0].get("return_message") or "").strip()
            fix = inspect
            if "connection failed" in message or "could not connect" in message:
                fix = (
                    "pg_cron could not connect to run the job: set "
                    "cron.use_background_workers = on, or allow pg_cron's libpq "
                    "connections in pg_hba.conf; " + inspect
                )
            elif "does not exist" in message:
                fix = (
                    "the job's command refers to something missing in the job's database; "
                    f"{_SCHEDULE_HINT} and {inspect}"
                )
            self.add(
                "cron.job.runs",
                False,
                f"the latest run failed ({len(failed)} of the last {len(runs)} failed): "
                f"{message or 'no message'}",
                fix,
            )
        elif finished:
            note = f" ({len(failed)} earlier failure(s))" if failed else ""
            detail = f"the latest of the last {len(runs)} runs succeeded{note}"
            self.add("cron.job.runs", True, detail)
        else:
            self.add("cron.job.runs", True, f"{len(runs)} run(s) in progress")

        if not runs or not active or self.period is None:
            return
        now = _time(self.raw.get("server_time"))
        latest = max(
            (t for r in runs if (t := _time(r.get("start_time"))) is not None), default=None
        )
        if now is None or latest is None:
            return
        age = (now - latest).total_seconds()
        limit = STALE_PERIODS * self.period
        if age > limit:
            self.add(
                "cron.job.recent",
                False,
                f"no run in the last {_seconds(age)} (the latest started at "
                f"{latest.isoformat()}), more than {STALE_PERIODS} periods of {self.period} s: "
                "the pg_cron scheduler is not running the job",
                "check that the pg_cron background worker is running (server log, "
                "pg_stat_activity backend_type = 'pg_cron launcher'), cron.max_running_jobs, "
                "and that the job is active; " + inspect,
            )
        else:
            self.add("cron.job.recent", True, f"last run started {_seconds(max(age, 0))} ago")


def build_report(raw: Mapping[str, Any]) -> SetupReport:
    """Judge the JSON returned by ``presence_setup_report()``; see the module docstring."""
    expected = expected_setup()
    builder = _Builder(raw, expected)
    builder.schema()
    builder.users_table()
    timeout = builder.settings()
    builder.security()
    if builder.pg_cron():
        builder.job(timeout)
    version = raw.get("schema_version")
    return SetupReport(
        checks=tuple(builder.checks),
        raw=dict(raw),
        sweep_period_seconds=builder.period,
        schema_version=version if isinstance(version, int) else None,
    )


def summarize(report: SetupReport) -> str:
    """One line naming the failed checks, e.g. ``"pg_cron, cron.job.active"``."""
    return ", ".join(check.name for check in report.problems) or "none"
