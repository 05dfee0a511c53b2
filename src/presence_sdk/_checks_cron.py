"""verify_setup() checks of pg_cron and the sweep job: enabled, job, schedule, runs, history.

Each function takes the :class:`~presence_sdk._verify_facts.Facts` of one setup report
and yields its findings; :data:`presence_sdk._verify.CHECKS` lists them in order. The
job checks apply only where pg_cron is enabled, and (after ``cron.job``) only when the
job exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from presence_sdk._models import SetupCheck
from presence_sdk._schedule import describe_seconds
from presence_sdk._verify_facts import SCHEDULE_HINT, Facts, failed, get, passed, report_time

__all__ = [
    "HISTORY_LIMIT",
    "STALE_PERIODS",
    "check_job",
    "check_job_active",
    "check_job_command",
    "check_job_history",
    "check_job_recent",
    "check_job_runs",
    "check_job_schedule",
    "check_pg_cron",
]

#: Runs are judged missing when none started within this many sweep periods.
STALE_PERIODS = 3
#: The job's runs older than a day that are tolerated in cron.job_run_details. The
#: sweep prunes them on every run (1000 at a time), so a healthy setup has next to none.
HISTORY_LIMIT = 10_000

_ENABLE_CRON = (
    "on Supabase: Dashboard > Database > Extensions > enable pg_cron; then, in the SQL "
    "editor: SELECT public.presence_schedule_sweep();"
)


def check_pg_cron(facts: Facts) -> Iterator[SetupCheck]:
    """pg_cron is available, loaded and enabled in the presence database."""
    cron = facts.raw.get("pg_cron")
    database = facts.raw.get("database") or "this database"
    cron_db = get(cron, "database_name")
    if not isinstance(cron, Mapping) or not cron.get("available"):
        yield failed(
            "pg_cron",
            "pg_cron is not available on this server: stored statuses are never "
            "swept (reads stay exact)",
            _ENABLE_CRON + " Self-hosted: install pg_cron for your PostgreSQL, set "
            "shared_preload_libraries = 'pg_cron' and cron.database_name, restart.",
        )
        return
    if cron.get("installed"):
        yield passed(
            "pg_cron", f"pg_cron {cron.get('version')} is enabled (cron.database_name = {cron_db})"
        )
        return
    if cron_db is None:
        detail = (
            "pg_cron is installed on the server but not loaded (not in shared_preload_libraries)"
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
    yield failed("pg_cron", detail + ": stored statuses are never swept", fix)


def check_job(facts: Facts) -> Iterator[SetupCheck]:
    """Exactly one sweep job, in this database."""
    if not facts.cron_enabled:
        return
    job, name = facts.job, facts.expected.job_name
    if job is None:
        yield failed(
            "cron.job",
            f"no pg_cron job named {name!r}: stored statuses are never swept",
            SCHEDULE_HINT,
        )
        return
    jobid = job.get("jobid")
    count = facts.raw.get("job_count")
    database = facts.raw.get("database")
    if isinstance(count, int) and count > 1:
        yield failed(
            "cron.job",
            f"{count} pg_cron jobs are named {name!r} (scheduled by different users)",
            f"keep one: SELECT cron.unschedule(jobid) FROM cron.job "
            f"WHERE jobname = '{name}' AND jobid <> {jobid};",
        )
    elif database and job.get("database") != database:
        yield failed(
            "cron.job",
            f"job {name!r} runs in database {job.get('database')!r}, but the presence "
            f"SQL is in {database!r}",
            f"SELECT cron.alter_job({jobid}, database := '{database}');",
        )
    else:
        yield passed("cron.job", f"job {name!r} (id {jobid}) runs as {job.get('username')}")


def check_job_active(facts: Facts) -> Iterator[SetupCheck]:
    """The job is active."""
    if facts.job is None:
        return
    if facts.job.get("active"):
        yield passed("cron.job.active", "the job is active")
    else:
        yield failed(
            "cron.job.active",
            "the job is INACTIVE: pg_cron does not run it",
            f"SELECT cron.alter_job({facts.job.get('jobid')}, active := true);",
        )


def _normalize_command(command: str) -> str:
    return " ".join(command.strip().rstrip(";").split()).lower()


def check_job_command(facts: Facts) -> Iterator[SetupCheck]:
    """The job runs the schema-qualified sweep."""
    if facts.job is None:
        return
    command = str(facts.job.get("command") or "")
    want = facts.expected.job_command
    if _normalize_command(command) == _normalize_command(want):
        yield passed("cron.job.command", f"runs {want}")
        return
    detail = f"the job runs {command!r} instead of {want!r}"
    if _normalize_command(command) == _normalize_command(want.replace("public.", "")):
        detail += " (not schema-qualified: it depends on the job's search_path)"
    yield failed("cron.job.command", detail, SCHEDULE_HINT)


def check_job_schedule(facts: Facts) -> Iterator[SetupCheck]:
    """The schedule is understood, runs within the timeout and matches presence_config."""
    schedule = facts.schedule
    if schedule is None:
        return
    text, timeout, configured = schedule.text, facts.timeout, facts.sweep_setting
    fix = SCHEDULE_HINT
    if not facts.has_interval_schedules:
        fix += " (pg_cron < 1.5 has no second intervals: upgrade pg_cron for 20 s sweeps)"
    if schedule.ignored_fields:
        meant = ""
        step = re.fullmatch(r"\*/(\d+)", text.split(maxsplit=1)[0])
        if step is not None:
            meant = f", NOT every {step[1]} seconds"
        yield failed(
            "cron.job.schedule",
            f"schedule {text!r} has {len(text.split())} fields: cron has no seconds field "
            f"and pg_cron silently ignores the extra one(s), so the sweep runs "
            f"{schedule.description.replace('minutes', 'MINUTES')}{meant}",
            fix,
        )
        return
    period = schedule.period_seconds
    if period is None:
        yield failed(
            "cron.job.schedule",
            f"schedule {text!r} is not understood ({schedule.description})",
            fix,
        )
        return
    lag = f"runs {schedule.description} ({text!r})"
    if timeout is not None and period > timeout:
        if not facts.has_interval_schedules and text.split() == ["*"] * 5:
            yield passed(
                "cron.job.schedule",
                f"{lag}: the fallback for pg_cron < 1.5, which has no interval "
                f"schedules; stored statuses may lag up to {period} s behind the "
                f"{timeout} s timeout (reads stay exact). Upgrade pg_cron for 20 s sweeps",
            )
            return
        if configured is not None and configured > timeout:
            # Re-scheduling would only re-apply the configured period: fix the setting.
            fix = (
                f"the configured sweep period ({configured} s) is longer than the timeout: "
                f"SELECT public.presence_configure(sweep_interval_seconds => "
                f"{facts.suggested_sweep()});"
            )
        yield failed(
            "cron.job.schedule",
            f"{lag}: longer than the {timeout} s timeout, so stored statuses stay "
            f"online for up to {describe_seconds(timeout + period)} after the last heartbeat",
            fix,
        )
        return
    if facts.has_interval_schedules and configured is not None and period != configured:
        yield failed(
            "cron.job.schedule",
            f"{lag}, but presence_config.sweep_interval_seconds is {configured}",
            SCHEDULE_HINT + " (or change the period with SELECT public.presence_configure("
            f"sweep_interval_seconds => {period});)",
        )
        return
    within = f", within the {timeout} s timeout" if timeout is not None else ""
    yield passed("cron.job.schedule", f"{lag}{within}")


def check_job_runs(facts: Facts) -> Iterator[SetupCheck]:
    """The latest finished run succeeded."""
    if facts.job is None:
        return
    runs = facts.runs
    finished = [r for r in runs if r.get("status") in ("succeeded", "failed")]
    failures = [r for r in finished if r.get("status") == "failed"]
    if not runs:
        yield passed(
            "cron.job.runs",
            "no runs recorded yet (a new job first runs within one period; if this "
            "stays empty, check cron.log_run and the pg_cron worker in the server log)",
        )
    elif finished and finished[0].get("status") == "failed":
        message = str(finished[0].get("return_message") or "").strip()
        fix = facts.inspect_runs
        if "connection failed" in message or "could not connect" in message:
            fix = (
                "pg_cron could not connect to run the job: set "
                "cron.use_background_workers = on, or allow pg_cron's libpq "
                "connections in pg_hba.conf; " + facts.inspect_runs
            )
        elif "does not exist" in message:
            fix = (
                "the job's command refers to something missing in the job's database; "
                f"{SCHEDULE_HINT} and {facts.inspect_runs}"
            )
        yield failed(
            "cron.job.runs",
            f"the latest run failed ({len(failures)} of the last {len(runs)} failed): "
            f"{message or 'no message'}",
            fix,
        )
    elif finished:
        note = f" ({len(failures)} earlier failure(s))" if failures else ""
        yield passed("cron.job.runs", f"the latest of the last {len(runs)} runs succeeded{note}")
    else:
        yield passed("cron.job.runs", f"{len(runs)} run(s) in progress")


def check_job_recent(facts: Facts) -> Iterator[SetupCheck]:
    """An active job started a run within the last few periods (server clock)."""
    period = facts.period
    if facts.job is None or not facts.runs or not facts.job.get("active") or period is None:
        return
    now = report_time(facts.raw.get("server_time"))
    latest = max(
        (t for r in facts.runs if (t := report_time(r.get("start_time"))) is not None),
        default=None,
    )
    if now is None or latest is None:
        return
    age = (now - latest).total_seconds()
    if age > STALE_PERIODS * period:
        yield failed(
            "cron.job.recent",
            f"no run in the last {describe_seconds(age)} (the latest started at "
            f"{latest.isoformat()}), more than {STALE_PERIODS} periods of {period} s: "
            "the pg_cron scheduler is not running the job",
            "check that the pg_cron background worker is running (server log, "
            "pg_stat_activity backend_type = 'pg_cron launcher'), cron.max_running_jobs, "
            "and that the job is active; " + facts.inspect_runs,
        )
    else:
        yield passed("cron.job.recent", f"last run started {describe_seconds(max(age, 0))} ago")


def _size(octets: object) -> str:
    if not isinstance(octets, int):
        return "size unknown"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if octets >= scale:
            return f"{octets / scale:.1f} {unit}"
    return f"{octets} bytes"


def check_job_history(facts: Facts) -> Iterator[SetupCheck]:
    """The job's run history in cron.job_run_details stays bounded (about a day)."""
    history = facts.raw.get("run_history")
    if facts.job is None or not isinstance(history, Mapping):
        return
    rows, old = history.get("rows"), history.get("older_than_a_day")
    if not isinstance(rows, int) or not isinstance(old, int):
        return
    size = _size(history.get("table_bytes"))
    if old > HISTORY_LIMIT:
        oldest = report_time(history.get("oldest_start_time"))
        now = report_time(facts.raw.get("server_time"))
        since = ""
        if oldest is not None and now is not None:
            days = (now - oldest).days
            since = f", the oldest from {days} day{'' if days == 1 else 's'} ago"
        per_day = f" ({86400 // facts.period} a day)" if facts.period else ""
        yield failed(
            "cron.job.history",
            f"cron.job_run_details holds {rows} runs of the job, {old} of them older than a "
            f"day{since} (the whole table: {size}): pg_cron never deletes runs, so it "
            f"grows with every sweep{per_day}",
            "delete the backlog now: SELECT public.presence_prune_job_history(1000000); "
            "the sweep then keeps one day (it prunes on every run; older presence SQL "
            "does not: apply the newer migrations)",
        )
    else:
        yield passed(
            "cron.job.history",
            f"{rows} runs of the job in cron.job_run_details, {old} older than a day "
            f"(the sweep prunes to one day; the whole table: {size})",
        )
