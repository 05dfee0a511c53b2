"""verify_setup() and averify_setup(): fetch the setup report, judge it, raise or return.

Both flavours make one call to ``public.presence_setup_report()`` — an RPC over
PostgREST with a supabase-py client (service role key), or one query over a direct
psycopg 3 connection — and hand the JSON to the pure judge in
:mod:`presence_sdk._verify`. Errors of the layers below are translated by
:mod:`presence_sdk._errors`; this module only adds what they mean for a setup check
(e.g. "verify_setup needs the service role key").
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from presence_sdk._errors import translate
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    RejectedError,
    RequestError,
    SetupError,
    TransientError,
)
from presence_sdk._models import SetupReport
from presence_sdk._sql import migrations
from presence_sdk._verify import InstallProbe, build_report, not_installed_report, summarize

if TYPE_CHECKING:
    from supabase import AsyncClient, Client

__all__ = [
    "averify_setup",
    "connection_kwargs",
    "fetch_report",
    "fetch_report_async",
    "verify_setup",
]

logger = logging.getLogger("presence_sdk")

_RPC = "presence_setup_report"
_REPORT_SQL = "SELECT public.presence_setup_report()"
_PROBE_SQL = (
    "SELECT to_regclass('public.users') IS NOT NULL, "
    "to_regprocedure('public.presence_heartbeat(text)') IS NOT NULL, "
    "to_regclass('supabase_migrations.schema_migrations') IS NOT NULL"
)
_RECORDED_SQL = (
    "SELECT version FROM supabase_migrations.schema_migrations "
    "WHERE version = ANY(%s) ORDER BY version"
)
_NOT_FOUND_CODES = ("PGRST202", "42883")


def connection_kwargs(dsn: str, *, timeout: float) -> dict[str, Any]:
    """Validate a DSN and return ``psycopg.connect`` keyword arguments for it.

    Raises :class:`ConfigurationError` (without echoing the DSN, which may hold a
    password) when it is not a libpq URL or ``key=value`` string.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        msg = "a database URL is required (postgresql://user:password@host:5432/postgres)"
        raise ConfigurationError(msg)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        msg = (
            "invalid database URL: expected postgresql://user:password@host:5432/dbname "
            "or 'host=... dbname=... user=...'"
        )
        raise ConfigurationError(msg) from None
    params.setdefault("connect_timeout", max(1, round(timeout)))
    params.setdefault("application_name", "presence-sdk")
    return {"conninfo": make_conninfo("", **params), "prepare_threshold": None}


def _explain(error: PresenceError, *, http: bool) -> PresenceError:
    """Add what a lower-level failure means for verify_setup to its hint."""
    if not isinstance(error, RequestError):
        return error
    ours: str | None = None
    denied = isinstance(error, PermissionDeniedError) or error.code == "42501"
    if denied:
        ours = (
            "verify_setup needs the service_role key (the anon key may not call "
            "presence_setup_report), or a direct database URL"
            if http
            else "connect as postgres (the role needs EXECUTE on public.presence_setup_report())"
        )
    elif isinstance(error, AuthenticationError):
        ours = (
            "check the API key: verify_setup needs the project's service_role key "
            "(SUPABASE_SERVICE_ROLE_KEY)"
            if http
            else "check the user name and password in the database URL"
        )
    elif isinstance(error, NotInstalledError) and error.code not in _NOT_FOUND_CODES:
        # An HTTP 404 that PostgREST did not produce: the URL points elsewhere.
        return RejectedError(
            f"no PostgREST API at this URL ({error.message}, HTTP {error.status or 404})",
            status=error.status,
            hint="use the project URL, e.g. https://<project-ref>.supabase.co (without /rest/v1)",
        )
    elif isinstance(error, TransientError):
        ours = (
            "check SUPABASE_URL and that the project is up"
            if http
            else "check the host and port in the database URL and that the server is up"
        )
    if ours is not None:
        error.hint = ours if not error.hint else f"{ours} (server hint: {error.hint})"
    return error


def _report_from_data(data: Any) -> SetupReport:
    if not isinstance(data, Mapping):
        msg = (
            "presence_setup_report() returned something other than a JSON object "
            f"({type(data).__name__}): is this the presence SQL of presence_sdk?"
        )
        raise RejectedError(msg)
    return build_report(data)


def _finish(report: SetupReport, *, raise_on_error: bool, source: str) -> SetupReport:
    for check in report.warnings:
        logger.warning("presence setup (%s): warning %s: %s", source, check.name, check.detail)
    if report.ok:
        logger.debug("presence setup verified (%s): OK", source)
        return report
    if raise_on_error:
        raise SetupError(report)
    logger.warning("presence setup (%s) has problems: %s", source, summarize(report))
    return report


def _check_args(client: object, dsn: str | None) -> None:
    if (client is None) == (dsn is None):
        msg = "pass either a supabase client or dsn=..., not both or neither"
        raise ConfigurationError(msg)
    if client is not None and not callable(getattr(client, "rpc", None)):
        msg = f"expected a supabase client, got {type(client).__name__}"
        raise ConfigurationError(msg)


# --------------------------------------------------------------------------------------
# Direct database connection


def _probe(rows: tuple[Any, ...] | None, recorded: list[str] | None) -> InstallProbe | None:
    if rows is None:
        return None
    return InstallProbe(
        users_table=bool(rows[0]),
        presence_api=bool(rows[1]),
        recorded_versions=tuple(recorded) if recorded is not None else None,
    )


def fetch_report(conn: psycopg.Connection[Any], *, timeout: float = 10.0) -> SetupReport:
    """Run the setup report on an open connection and judge it (no raising on problems).

    Runs in a transaction (a savepoint if one is open), so it also sees uncommitted
    changes of the caller's transaction.
    """
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{round(timeout * 1000)}ms")
                )
            )
            row = conn.execute(_REPORT_SQL).fetchone()
    except psycopg.errors.UndefinedFunction as exc:
        probe = None
        try:
            with conn.transaction():
                found = conn.execute(_PROBE_SQL).fetchone()
                recorded = None
                if found is not None and found[2]:
                    versions = [m.version for m in migrations()]
                    recorded = [r[0] for r in conn.execute(_RECORDED_SQL, (versions,))]
                probe = _probe(found, recorded)
        except psycopg.Error:
            logger.debug("could not probe the database after a missing setup report")
        return not_installed_report(exc.diag.message_primary or str(exc), probe=probe)
    except psycopg.Error as exc:
        raise _explain(translate(exc), http=False) from exc
    return _report_from_data(row[0] if row else None)


async def fetch_report_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - server-side statement_timeout, not a deadline
) -> SetupReport:
    """Async twin of :func:`fetch_report`."""
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{round(timeout * 1000)}ms")
                )
            )
            row = await (await conn.execute(_REPORT_SQL)).fetchone()
    except psycopg.errors.UndefinedFunction as exc:
        probe = None
        try:
            async with conn.transaction():
                found = await (await conn.execute(_PROBE_SQL)).fetchone()
                recorded = None
                if found is not None and found[2]:
                    versions = [m.version for m in migrations()]
                    cur = await conn.execute(_RECORDED_SQL, (versions,))
                    recorded = [r[0] for r in await cur.fetchall()]
                probe = _probe(found, recorded)
        except psycopg.Error:
            logger.debug("could not probe the database after a missing setup report")
        return not_installed_report(exc.diag.message_primary or str(exc), probe=probe)
    except psycopg.Error as exc:
        raise _explain(translate(exc), http=False) from exc
    return _report_from_data(row[0] if row else None)


def _report_via_dsn(dsn: str, timeout: float) -> SetupReport:
    kwargs = connection_kwargs(dsn, timeout=timeout)
    try:
        conn = psycopg.connect(**kwargs, autocommit=True)
    except psycopg.Error as exc:
        raise _explain(translate(exc), http=False) from exc
    with conn:
        return fetch_report(conn, timeout=timeout)


async def _areport_via_dsn(dsn: str, seconds: float) -> SetupReport:
    kwargs = connection_kwargs(dsn, timeout=seconds)
    try:
        conn = await psycopg.AsyncConnection.connect(**kwargs, autocommit=True)
    except psycopg.Error as exc:
        raise _explain(translate(exc), http=False) from exc
    async with conn:
        return await fetch_report_async(conn, timeout=seconds)


# --------------------------------------------------------------------------------------
# PostgREST (supabase-py)


def _from_http_failure(exc: Exception) -> SetupReport:
    """A missing RPC becomes a report; anything else is raised as a PresenceError."""
    error = translate(exc)
    if isinstance(error, NotInstalledError) and error.code in _NOT_FOUND_CODES:
        return not_installed_report(error.message)
    raise _explain(error, http=True) from exc


def _rpc(client: Any, *, want_async: bool) -> Any:
    """The request builder for the setup report, after checking the client's flavour."""
    builder = client.rpc(_RPC, {})
    if inspect.iscoroutinefunction(builder.execute) != want_async:
        msg = (
            "this is a sync supabase client: use `verify_setup(client)`"
            if want_async
            else "this is an async supabase client: use `await averify_setup(client)`"
        )
        raise ConfigurationError(msg)
    return builder


def _report_via_client(client: Client) -> SetupReport:
    builder = _rpc(client, want_async=False)
    try:
        data = builder.execute().data
    except Exception as exc:  # translated: httpx, postgrest, anything below
        return _from_http_failure(exc)
    return _report_from_data(data)


async def _areport_via_client(client: AsyncClient) -> SetupReport:
    builder = _rpc(client, want_async=True)
    try:
        data = (await builder.execute()).data
    except Exception as exc:  # translated: httpx, postgrest, anything below
        return _from_http_failure(exc)
    return _report_from_data(data)


# --------------------------------------------------------------------------------------
# Public API


def verify_setup(
    client: Client | None = None,
    *,
    dsn: str | None = None,
    raise_on_error: bool = True,
    timeout: float = 10.0,
) -> SetupReport:
    """Check that the presence setup of a Supabase project is complete and healthy.

    One call to ``public.presence_setup_report()``: over PostgREST with ``client``
    (a supabase-py client created with the **service role key**), or over a direct
    PostgreSQL connection with ``dsn`` (run as ``postgres``). The answer is judged
    against what this package's SQL installs: migrations and schema version,
    functions and their grants, RLS on ``public.users``, pg_cron, the
    ``mark-inactive-users`` job (exists, active, command, schedule versus the
    timeout) and its recent runs. See :class:`SetupReport` for the findings and
    ``sweep_period_seconds`` for the effective sweep period.

    Args:
        client: A sync ``supabase.Client`` with the service role key.
        dsn: A PostgreSQL URL instead of ``client``.
        raise_on_error: Raise :class:`SetupError` (carrying the report) when any
            check fails; False returns the report either way.
        timeout: Connect and statement timeout in seconds for ``dsn`` (the
            client's own HTTP timeout applies to ``client``).

    Returns:
        The report; ``report.ok`` is True when every check passed.

    Raises:
        SetupError: Something is wrong and ``raise_on_error`` is True.
        AuthenticationError: Wrong API key or database password.
        PermissionDeniedError: The key/role may not run the setup report (anon key).
        TransientError: The server could not be reached or failed (5xx, timeout).
        ConfigurationError: Bad arguments (both or neither of client/dsn, bad DSN,
            an async client).
    """
    _check_args(client, dsn)
    if dsn is not None:
        report = _report_via_dsn(dsn, timeout)
        source = "database connection"
    else:
        assert client is not None
        report = _report_via_client(client)
        source = "PostgREST"
    return _finish(report, raise_on_error=raise_on_error, source=source)


async def averify_setup(
    client: AsyncClient | None = None,
    *,
    dsn: str | None = None,
    raise_on_error: bool = True,
    timeout: float = 10.0,  # noqa: ASYNC109 - connect/statement timeout of the dsn path
) -> SetupReport:
    """Async twin of :func:`verify_setup`: ``supabase.AsyncClient`` or ``dsn``.

    Same checks, arguments, result and exceptions; the DSN path uses
    ``psycopg.AsyncConnection``.
    """
    _check_args(client, dsn)
    if dsn is not None:
        report = await _areport_via_dsn(dsn, timeout)
        source = "database connection"
    else:
        assert client is not None
        report = await _areport_via_client(client)
        source = "PostgREST"
    return _finish(report, raise_on_error=raise_on_error, source=source)
