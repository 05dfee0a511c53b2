"""The ``presence-sdk`` command line (also ``python -m presence_sdk``).

Commands::

    presence-sdk sql [--file NAME] [--rollback] [--no-schema] [--list]
    presence-sdk migrate [--dsn URL] [--with-schema] [--dry-run]
    presence-sdk rollback --to VERSION [--dsn URL] [--dry-run]
    presence-sdk verify [--dsn URL | --url URL --key KEY] [--json]
    presence-sdk status [--dsn URL] [--limit N] [--json]
    presence-sdk history USER_ID [--dsn URL] [--days N] [--tz ZONE] [--limit N] [--json]

``--dsn`` defaults to ``$DATABASE_URL``; ``--url``/``--key`` to ``$SUPABASE_URL`` and
``$SUPABASE_SERVICE_ROLE_KEY``.

Exit codes: 0 success; 1 the setup has problems or a migration failed; 2 bad input
(arguments, missing or malformed URL/DSN); 3 the server could not be reached or
refused the credentials. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import httpx
import psycopg
from psycopg.rows import dict_row
from supabase import ClientOptions, SupabaseException, create_client

from presence_sdk._cli_history import add_history_command
from presence_sdk._errors import translate
from presence_sdk._exceptions import (
    ConfigurationError,
    MigrationError,
    NotInstalledError,
    PresenceError,
    RequestError,
    SetupError,
)
from presence_sdk._migrate import MigrationResult, migrate, rollback
from presence_sdk._models import SetupReport
from presence_sdk._sql import Migration, migrations, rollback_schema_sql, schema_sql
from presence_sdk._verify_io import connection_kwargs, verify_setup

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "main"]

#: Success (``verify``: every check passed).
EXIT_OK = 0
#: ``verify`` found problems, a migration failed, or the presence SQL is missing.
EXIT_PROBLEMS = 1
#: Bad input: arguments, a missing or malformed database URL / Supabase URL.
EXIT_USAGE = 2
#: The server could not be reached, refused the credentials or failed.
EXIT_UNREACHABLE = 3

_PROG = "presence-sdk"
_Handler = Callable[[argparse.Namespace], int]


class _UsageError(Exception):
    """Bad command-line arguments (argparse's error, as an exception)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------
# Targets (DSN, Supabase URL + key)


def _dsn(args: argparse.Namespace) -> str:
    dsn: str | None = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        msg = "no database URL: pass --dsn postgresql://... or set DATABASE_URL"
        raise ConfigurationError(msg)
    connection_kwargs(dsn, timeout=1)  # validates before any I/O
    return dsn


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        msg = "invalid Supabase URL: expected https://<project-ref>.supabase.co"
        raise ConfigurationError(msg)


def _supabase_client(url: str, key: str, timeout: float) -> tuple[Any, httpx.Client]:
    """A sync supabase client on our own httpx client (no deprecated options)."""
    _check_url(url)
    http = httpx.Client(timeout=timeout)
    try:
        client = create_client(url, key, options=ClientOptions(httpx_client=http))
    except SupabaseException as exc:
        http.close()
        msg = f"invalid Supabase URL or key: {exc.message}"
        raise ConfigurationError(msg) from None
    return client, http


# --------------------------------------------------------------------------------------
# sql


def _find_file(name: str) -> Migration | None:
    wanted = name.removesuffix(".sql")
    for migration in migrations():
        if wanted in (migration.version, migration.name, migration.filename.removesuffix(".sql")):
            return migration
    return None


def _cmd_sql(args: argparse.Namespace) -> int:
    shipped = migrations()
    if args.list:
        _out("schema.sql")
        for migration in shipped:
            _out(f"migrations/{migration.filename}")
        return EXIT_OK
    if args.file is not None:
        if args.file.removesuffix(".sql") == "schema":
            sys.stdout.write(rollback_schema_sql() if args.rollback else schema_sql())
            return EXIT_OK
        found = _find_file(args.file)
        if found is None:
            choices = ", ".join(["schema", *(m.version for m in shipped)])
            msg = f"no shipped SQL file {args.file!r}; choose one of: {choices}"
            raise ConfigurationError(msg)
        sys.stdout.write(found.down if args.rollback else found.up)
        return EXIT_OK
    parts: list[tuple[str, str]] = []
    if args.rollback:
        parts = [(f"rollbacks/{m.filename}", m.down) for m in reversed(shipped)]
    else:
        if not args.no_schema:
            parts.append(("schema.sql", schema_sql()))
        parts += [(f"migrations/{m.filename}", m.up) for m in shipped]
    for index, (path, text) in enumerate(parts):
        if index:
            _out()
        _out(f"-- ===== supabase/{path} =====")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.rollback:
        _out()
        _out("-- schema.sql's rollback drops public.users and its data; print it with:")
        _out("--   presence-sdk sql --rollback --file schema")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# migrate / rollback


def _print_result(result: MigrationResult) -> None:
    verb = "would apply" if result.dry_run else "applied"
    if result.schema_applied:
        _out(f"{verb} schema.sql (public.users did not exist)")
    for version in result.applied:
        found = _find_file(version)
        _out(f"{verb} {found.filename if found else version}")
    undo = "would roll back" if result.dry_run else "rolled back"
    for version in result.rolled_back:
        found = _find_file(version)
        _out(f"{undo} {found.filename if found else version}")
    for notice in result.notices:
        _err(f"NOTICE: {notice}")


def _cmd_migrate(args: argparse.Namespace) -> int:
    dsn = _dsn(args)
    result = migrate(
        dsn, with_schema=args.with_schema, dry_run=args.dry_run, lock_timeout=args.lock_timeout
    )
    _print_result(result)
    total = len(result.applied) + len(result.skipped)
    if result.dry_run:
        _out(f"dry run: {len(result.applied)} of {total} migration(s) pending, nothing changed")
    elif result.applied or result.schema_applied:
        _out(
            f"{len(result.applied)} migration(s) applied; "
            "check the setup with: presence-sdk verify --dsn ..."
        )
    else:
        _out(f"nothing to do: all {total} presence migrations are already applied")
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    dsn = _dsn(args)
    result = rollback(dsn, to=args.to, dry_run=args.dry_run, lock_timeout=args.lock_timeout)
    _print_result(result)
    if result.dry_run:
        _out(f"dry run: {len(result.rolled_back)} migration(s) would be rolled back")
    elif result.rolled_back:
        _out(f"{len(result.rolled_back)} migration(s) rolled back")
    else:
        _out(f"nothing to roll back after {args.to}")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# verify


def _cmd_verify(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("SUPABASE_URL")
    key = args.key or os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    use_http = not args.dsn and (args.url or args.key or (url and key))
    if not use_http and not args.dsn and not os.environ.get("DATABASE_URL"):
        if url and not key:
            msg = "no service role key: pass --key or set SUPABASE_SERVICE_ROLE_KEY"
        else:
            msg = (
                "nothing to verify: pass --dsn postgresql://... (or set DATABASE_URL), "
                "or --url and --key (SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY)"
            )
        raise ConfigurationError(msg)
    report: SetupReport
    if use_http:
        if not url:
            msg = "no Supabase URL: pass --url or set SUPABASE_URL"
            raise ConfigurationError(msg)
        if not key:
            msg = "no service role key: pass --key or set SUPABASE_SERVICE_ROLE_KEY"
            raise ConfigurationError(msg)
        client, http = _supabase_client(url, key, args.timeout)
        with http:
            report = verify_setup(client, raise_on_error=False)
    else:
        report = verify_setup(dsn=_dsn(args), raise_on_error=False, timeout=args.timeout)
    if args.json:
        _out(json.dumps(report.to_dict(), indent=2))
    else:
        _out(str(report))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


# --------------------------------------------------------------------------------------
# status

# A status column the app made may be nullable (NULL reads as offline and is never
# swept), and rows written around the presence functions may hold any value or an
# infinite heartbeat: count them apart instead of failing on them.
_STATUS_SQL = """
SELECT public.presence_counts() AS counts,
       public.presence_settings() AS settings,
       current_database() AS database,
       (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
        FROM (SELECT status, count(*) AS n FROM public.users
              WHERE status IS NOT NULL GROUP BY status) AS s) AS stored,
       (SELECT count(*) FROM public.users WHERE status IS NULL) AS stored_without_status,
       (SELECT count(*)
        FROM public.users AS u CROSS JOIN public.presence_config AS c
        WHERE u.status <> 'offline'
          AND (u.last_heartbeat IS NULL
               OR u.last_heartbeat <= now() - make_interval(secs => c.timeout_seconds))
       ) AS awaiting_sweep,
       (SELECT count(*) FROM public.users
        WHERE last_heartbeat IS NOT NULL AND NOT isfinite(last_heartbeat)) AS infinite_heartbeats
"""
_NEWEST_SQL = """
SELECT p.user_id, p.status, p.online, u.status AS stored_status, p.last_heartbeat,
       extract(epoch FROM now() - p.last_heartbeat)::float8 AS age_seconds
FROM public.user_presence AS p
JOIN public.users AS u ON u.id = p.user_id
WHERE p.last_heartbeat IS NOT NULL AND isfinite(p.last_heartbeat)
ORDER BY p.last_heartbeat DESC
LIMIT %s
"""
# Invisible mode (migration 20240000000007_privacy): the owner sees the truth, so the
# status shows who is invisible to everyone else. Asked only when the table exists.
_INVISIBLE_SQL = """
SELECT count(*) AS invisible,
       coalesce(array_agg(p.user_id::text) FILTER (WHERE p.user_id = ANY (%s::uuid[])), '{}')
           AS among_newest
FROM public.presence_privacy AS p
WHERE p.invisible
"""
_PRESENCE_STATUSES = ("online", "away", "busy", "offline")
_INSTALLED_SQL = (
    "SELECT to_regprocedure('public.presence_counts()') IS NOT NULL "
    "AND to_regclass('public.user_presence') IS NOT NULL"
)


def _status_data(dsn: str, limit: int) -> dict[str, Any]:
    kwargs = connection_kwargs(dsn, timeout=10)
    try:
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            installed = conn.execute(_INSTALLED_SQL).fetchone()
            if not installed or not installed[0]:
                msg = "the presence SQL is not installed in this database"
                raise NotInstalledError(
                    msg, hint="apply it with: presence-sdk migrate --dsn ... [--with-schema]"
                )
            with conn.cursor(row_factory=dict_row) as cur:
                summary = cur.execute(_STATUS_SQL).fetchone() or {}
                newest = cur.execute(_NEWEST_SQL, (limit,)).fetchall()
                invisible: dict[str, Any] = {"invisible": None, "among_newest": []}
                privacy = cur.execute("SELECT to_regclass('public.presence_privacy') AS t")
                if (privacy.fetchone() or {}).get("t") is not None:
                    ids = [str(row["user_id"]) for row in newest]
                    invisible = cur.execute(_INVISIBLE_SQL, (ids,)).fetchone() or invisible
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return {
        "database": summary.get("database"),
        "settings": summary.get("settings"),
        "counts": summary.get("counts"),
        "stored": summary.get("stored"),
        "stored_without_status": summary.get("stored_without_status"),
        "awaiting_sweep": summary.get("awaiting_sweep"),
        "infinite_heartbeats": summary.get("infinite_heartbeats"),
        "invisible": invisible["invisible"],
        "newest": [
            {
                "user_id": str(row["user_id"]),
                "status": row["status"],
                "online": row["online"],
                "invisible": str(row["user_id"]) in invisible["among_newest"],
                "stored_status": row["stored_status"],
                "last_heartbeat": row["last_heartbeat"].isoformat(),
                "age_seconds": round(row["age_seconds"], 1),
            }
            for row in newest
        ],
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _print_total_and_privacy(counts: dict[str, Any], invisible: int | None) -> None:
    estimated = bool(counts.get("offline_estimated"))
    total = f"{'~' if estimated else ''}{sum(counts.get(s, 0) for s in _PRESENCE_STATUSES)}"
    _out(f"  {'total':<8} {total:>8}")
    if estimated:
        _out("  ~ offline estimated from table statistics (presence_counts, big tables)")
    if invisible:
        _out(
            f"  invisible: {invisible} user(s) (others see them offline; "
            "the owner and the service role see the truth)"
        )


def _cmd_status(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        msg = "--limit must be between 1 and 1000"
        raise ConfigurationError(msg)
    data = _status_data(_dsn(args), args.limit)
    if args.json:
        _out(json.dumps(data, indent=2))
        return EXIT_OK
    settings = data["settings"] or {}
    counts = data["counts"] or {}
    stored = data["stored"] or {}
    server_time = settings.get("server_time")
    when = datetime.fromisoformat(server_time).isoformat(timespec="seconds") if server_time else "?"
    _out(
        f"presence in database {data['database']} at {when} "
        f"(timeout {settings.get('timeout_seconds')} s, "
        f"sweep every {settings.get('sweep_interval_seconds')} s)"
    )
    _out(f"  {'status':<8} {'now':>8} {'stored':>8}")
    estimated = bool(counts.get("offline_estimated"))
    for status in _PRESENCE_STATUSES:
        now = f"{'~' if estimated and status == 'offline' else ''}{counts.get(status, 0)}"
        _out(f"  {status:<8} {now:>8} {stored.get(status, 0):>8}")
    for other in sorted(set(stored) - set(_PRESENCE_STATUSES)):
        _out(f"  {_one_line(other)[:40]:<8} {'-':>8} {stored[other]:>8}  (not a presence status)")
    if data["stored_without_status"]:
        _out(
            f"  {'(none)':<8} {'-':>8} {data['stored_without_status']:>8}  "
            "(no status: reads as offline)"
        )
    _print_total_and_privacy(counts, data.get("invisible"))
    _out(
        f"  awaiting the sweep: {data['awaiting_sweep']} "
        "(stored as present, silent for the timeout or longer)"
    )
    if data["infinite_heartbeats"]:
        _out(
            f"  {data['infinite_heartbeats']} user(s) with an infinite last_heartbeat, "
            "written around the presence functions (infinity reads as online forever): "
            "run presence-sdk verify"
        )
    if not data["newest"]:
        _out("no heartbeats yet")
        return EXIT_OK
    _out(f"newest heartbeats (latest {len(data['newest'])}):")
    for row in data["newest"]:
        stored = row["stored_status"]
        note = ""
        if stored is None:
            note = "  (stored: no status)"
        elif stored != row["status"]:
            note = f"  (stored: {_one_line(stored)[:40]}, awaiting the sweep)"
        if row.get("invisible"):
            note += "  (invisible)"
        _out(
            f"  {row['user_id']}  {row['status']:<8} "
            f"{row['last_heartbeat']} ({_age(row['age_seconds'])}){note}"
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Parser and main


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value <= 0:
        msg = f"must be positive: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        metavar="URL",
        help="PostgreSQL URL, e.g. postgresql://postgres:PASSWORD@HOST:5432/postgres "
        "(default: $DATABASE_URL)",
    )


def _add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for a concurrent run (default 60)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``presence-sdk`` (errors raise instead of exiting)."""
    from presence_sdk import __version__  # noqa: PLC0415 - the package imports this module

    parser = _Parser(
        prog=_PROG,
        description="Presence for Supabase: print and apply the SQL, verify the setup.",
        epilog="Exit codes: 0 ok, 1 setup problems or failed migration, 2 bad input, "
        "3 server unreachable or credentials refused.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sql = commands.add_parser(
        "sql",
        help="print the shipped SQL (schema + migrations in order)",
        description="Print schema.sql and the migrations in order (to paste into the "
        "Supabase SQL editor or pipe to psql), one file, or the rollbacks.",
    )
    sql.add_argument(
        "--file",
        metavar="NAME",
        help="only this file: 'schema', a version (20240000000001) or a migration name",
    )
    sql.add_argument(
        "--rollback",
        action="store_true",
        help="print rollbacks instead (all migrations newest first, or the --file's)",
    )
    sql.add_argument("--no-schema", action="store_true", help="leave out schema.sql")
    sql.add_argument("--list", action="store_true", help="list the shipped files")
    sql.set_defaults(handler=_cmd_sql)

    mig = commands.add_parser(
        "migrate",
        help="apply pending migrations",
        description="Apply the pending presence migrations in order, each in a "
        "transaction, recorded in supabase_migrations.schema_migrations like the "
        "Supabase CLI does. Safe to re-run and to run concurrently (advisory lock).",
    )
    _add_dsn(mig)
    mig.add_argument(
        "--with-schema",
        action="store_true",
        help="first run schema.sql if public.users does not exist (fresh projects); "
        "an existing public.users is never touched",
    )
    mig.add_argument("--dry-run", action="store_true", help="show what would be applied")
    _add_lock_timeout(mig)
    mig.set_defaults(handler=_cmd_migrate)

    rb = commands.add_parser(
        "rollback",
        help="roll back migrations newer than a version",
        description="Run the rollbacks of the applied migrations newer than --to, "
        "newest first, and delete their records. public.users is never dropped.",
    )
    _add_dsn(rb)
    rb.add_argument(
        "--to",
        required=True,
        metavar="VERSION",
        help="keep this version and older (0: roll back all presence migrations)",
    )
    rb.add_argument("--dry-run", action="store_true", help="show what would be rolled back")
    _add_lock_timeout(rb)
    rb.set_defaults(handler=_cmd_rollback)

    ver = commands.add_parser(
        "verify",
        help="check the setup (exit 1 on problems)",
        description="Check migrations, grants, RLS, pg_cron, the sweep job and its runs. "
        "Uses --url/--key (or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY) over the REST "
        "API, else --dsn (or DATABASE_URL).",
    )
    _add_dsn(ver)
    ver.add_argument("--url", help="Supabase project URL (default: $SUPABASE_URL)")
    ver.add_argument("--key", help="service role key (default: $SUPABASE_SERVICE_ROLE_KEY)")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.add_argument(
        "--timeout", type=_positive, default=10.0, metavar="SECONDS", help="default 10"
    )
    ver.set_defaults(handler=_cmd_verify)

    st = commands.add_parser(
        "status",
        help="counts by status and the newest heartbeats",
        description="Users per status (exact now, and as stored before the next sweep) "
        "and the newest heartbeats.",
    )
    _add_dsn(st)
    st.add_argument("--limit", type=int, default=10, help="newest heartbeats to show (10)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=_cmd_status)

    add_history_command(commands, add_dsn=_add_dsn, dsn_of=_dsn, out=_out)
    return parser


def _exit_code(error: PresenceError) -> int:
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    if isinstance(error, MigrationError | SetupError | NotInstalledError):
        return EXIT_PROBLEMS
    if isinstance(error, RequestError):
        return EXIT_UNREACHABLE
    return EXIT_PROBLEMS


@contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Log the library's records to stderr for the duration of one command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level = logging.ERROR if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler.setLevel(level)
    logger = logging.getLogger("presence_sdk")
    previous = logger.level
    logger.addHandler(handler)
    if verbosity:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``presence-sdk`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _err(f"{_PROG}: error: {_one_line(str(exc))} (see {_PROG} --help)")
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    command: _Handler = args.handler
    try:
        with _logging(args.verbose):
            return command(args)
    except PresenceError as exc:
        _err(f"{_PROG}: error: {_one_line(str(exc))}")
        return _exit_code(exc)
    except KeyboardInterrupt:
        _err(f"{_PROG}: interrupted")
        return 130
    except BrokenPipeError:
        # `presence-sdk sql | head`: the reader left. Point stdout at devnull so the
        # interpreter's final flush does not fail again (Python docs, SIGPIPE note).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PROBLEMS
