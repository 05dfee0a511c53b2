"""Apply and roll back the shipped presence migrations over a direct psycopg 3 connection.

Applied versions are recorded the way the Supabase CLI records them, in
``supabase_migrations.schema_migrations (version text PRIMARY KEY, statements text[],
name text)``, so ``supabase migration list`` shows them and a project that already ran
the same files through ``supabase db push`` is not migrated twice.

Each migration runs in its own transaction together with its bookkeeping row, under a
transaction-level advisory lock: two concurrent runs (two deploys, two CI jobs) apply
every migration exactly once, in order, and the lock is released by COMMIT/ROLLBACK, so
it is also safe behind a transaction-mode connection pooler.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from presence_sdk._errors import translate
from presence_sdk._exceptions import ConfigurationError, MigrationError
from presence_sdk._sql import Migration, migrations, schema_sql
from presence_sdk._verify_io import connection_kwargs

__all__ = [
    "LOCK_KEY",
    "MigrationResult",
    "applied_versions",
    "migrate",
    "rollback",
    "split_statements",
]

logger = logging.getLogger("presence_sdk")

#: The advisory lock key every presence-sdk migrate/rollback takes (64-bit, stable).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"presence_sdk.migrate").digest()[:8], "big", signed=True)

_CREATE_TABLE = (
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations "
    "(version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
_INSERT = (
    "INSERT INTO supabase_migrations.schema_migrations (version, name, statements) "
    "VALUES (%s, %s, %s)"
)
_DELETE = "DELETE FROM supabase_migrations.schema_migrations WHERE version = %s"
_IS_RECORDED = (
    "SELECT EXISTS (SELECT 1 FROM supabase_migrations.schema_migrations WHERE version = %s)"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationResult:
    """What :func:`migrate` or :func:`rollback` did (or, with ``dry_run``, would do).

    Attributes:
        applied: Versions applied by this run, oldest first.
        rolled_back: Versions rolled back by this run, newest first.
        skipped: Versions left alone because they were already in the wanted state
            (applied for migrate; not applied for rollback).
        schema_applied: ``schema.sql`` was run (``with_schema`` and no ``public.users``).
        dry_run: Nothing was changed; ``applied``/``rolled_back`` list what would be.
        notices: ``presence:`` NOTICEs the SQL raised (e.g. why pg_cron was not used).
    """

    applied: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    schema_applied: bool = False
    dry_run: bool = False
    notices: tuple[str, ...] = ()


def _skip_block_comment(script: str, i: int) -> int:
    level, i, n = 1, i + 2, len(script)
    while i < n and level:
        if script.startswith("/*", i):
            level, i = level + 1, i + 2
        elif script.startswith("*/", i):
            level, i = level - 1, i + 2
        else:
            i += 1
    return i


def _skip_quote(script: str, i: int) -> int:
    quote, i, n = script[i], i + 1, len(script)
    while i < n:
        if script[i] == quote:
            if not script.startswith(quote * 2, i):
                return i + 1
            i += 1  # a doubled quote stands for itself
        i += 1
    return n


def _skip_literal(script: str, i: int) -> int | None:
    """If a comment or quoted text starts at ``i``, return the index just after it."""
    n = len(script)
    if script.startswith("--", i):
        end = script.find("\n", i)
        return n if end < 0 else end + 1
    if script.startswith("/*", i):
        return _skip_block_comment(script, i)
    if script[i] in ("'", '"'):
        return _skip_quote(script, i)
    if script[i] == "$" and not script[i + 1 : i + 2].isdigit():  # $1 is a parameter
        tag_end = i + 1
        while tag_end < n and (script[tag_end].isalnum() or script[tag_end] == "_"):
            tag_end += 1
        if tag_end < n and script[tag_end] == "$":
            tag = script[i : tag_end + 1]
            close = script.find(tag, tag_end + 1)
            return n if close < 0 else close + len(tag)
    return None


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements the way the Supabase CLI does.

    Splits on ``;`` outside quotes (``'...'``, ``"..."``), dollar quotes
    (``$tag$...$tag$``), comments (``--``, nested ``/* */``) and parentheses; each
    statement keeps its comments, is stripped and loses its trailing ``;``. Pieces
    holding only comments are dropped.
    """
    statements: list[str] = []
    start = i = depth = 0
    while i < len(script):
        after = _skip_literal(script, i)
        if after is not None:
            i = after
            continue
        ch = script[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0:
            statements.append(script[start:i])
            start = i + 1
        i += 1
    statements.append(script[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(piece: str) -> bool:
    """True unless ``piece`` is only whitespace and comments."""
    return bool(_strip_comments(piece).strip())


def _strip_comments(piece: str) -> str:
    """``piece`` with ``--`` line comments and ``/* */`` comments removed (quotes kept)."""
    out: list[str] = []
    i, n = 0, len(piece)
    while i < n:
        if piece.startswith("--", i):
            end = piece.find("\n", i)
            i = n if end < 0 else end
        elif piece.startswith("/*", i):
            end = piece.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(piece[i])
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------
# Connection plumbing


class _Session:
    """A connection plus the NOTICEs it received and the migration lock."""

    def __init__(self, conn: psycopg.Connection[Any], lock_timeout: float) -> None:
        self.conn = conn
        self.lock_timeout = lock_timeout
        self.notices: list[str] = []
        conn.add_notice_handler(self._on_notice)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if message.startswith("presence:"):
            self.notices.append(message)
            logger.info("%s", message)
        else:
            logger.debug("NOTICE: %s", message)

    @contextmanager
    def locked(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction holding the advisory lock (released at COMMIT/ROLLBACK)."""
        conn = self.conn
        with conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{max(1, round(self.lock_timeout * 1000))}ms")
                )
            )
            conn.execute("SET LOCAL statement_timeout = 0")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            except psycopg.errors.LockNotAvailable:
                msg = (
                    f"timed out after {self.lock_timeout:g} s waiting for another "
                    "presence-sdk migrate/rollback on this database to finish"
                )
                raise MigrationError(msg) from None
            yield conn

    def table_exists(self) -> bool:
        row = self.conn.execute(
            "SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL"
        ).fetchone()
        return bool(row and row[0])

    def users_table_exists(self) -> bool:
        row = self.conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()
        return bool(row and row[0])

    def recorded(self) -> set[str]:
        if not self.table_exists():
            return set()
        rows = self.conn.execute("SELECT version FROM supabase_migrations.schema_migrations")
        return {str(r[0]) for r in rows}

    def is_recorded(self, version: str) -> bool:
        row = self.conn.execute(_IS_RECORDED, (version,)).fetchone()
        return bool(row and row[0])


@contextmanager
def _session(dsn: str, *, connect_timeout: float, lock_timeout: float) -> Iterator[_Session]:
    kwargs = connection_kwargs(dsn, timeout=connect_timeout)
    try:
        conn = psycopg.connect(**kwargs, autocommit=True)
    except psycopg.Error as exc:
        raise translate(exc) from exc
    with conn:
        try:
            yield _Session(conn, lock_timeout)
        except psycopg.Error as exc:
            # Bookkeeping failures (not a migration's own SQL, which _run wraps).
            raise translate(exc) from exc


def _run(conn: psycopg.Connection[Any], label: str, script: str) -> list[str]:
    """Execute ``script`` statement by statement; wrap a failure in MigrationError."""
    statements = split_statements(script)
    for number, statement in enumerate(statements, start=1):
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            first = " ".join(_strip_comments(statement).split())
            excerpt = first if len(first) <= 80 else first[:77] + "..."
            diag = exc.diag
            reason = diag.message_primary or str(exc).strip()
            hint = f" (hint: {diag.message_hint})" if diag.message_hint else ""
            msg = (
                f"{label} failed at statement {number} of {len(statements)} "
                f"[{excerpt}]: {reason}{hint}; nothing of it was applied"
            )
            raise MigrationError(msg) from exc
    return statements


def _check_target(to: str) -> list[Migration]:
    shipped = migrations()
    versions = [m.version for m in shipped]
    if to != "0" and to not in versions:
        msg = f"unknown version {to!r}: use one of {', '.join(versions)}, or 0 to roll back all"
        raise ConfigurationError(msg)
    return [m for m in reversed(shipped) if m.version > to]


# --------------------------------------------------------------------------------------
# Public API


def applied_versions(dsn: str, *, connect_timeout: float = 10.0) -> list[str]:
    """The shipped presence migration versions recorded as applied, oldest first."""
    with _session(dsn, connect_timeout=connect_timeout, lock_timeout=0) as session:
        recorded = session.recorded()
    return [m.version for m in migrations() if m.version in recorded]


def migrate(
    dsn: str,
    *,
    with_schema: bool = False,
    dry_run: bool = False,
    lock_timeout: float = 60.0,
    connect_timeout: float = 10.0,
) -> MigrationResult:
    """Apply the pending presence migrations to the database at ``dsn``, in order.

    Each migration runs in its own transaction with its record in
    ``supabase_migrations.schema_migrations``, under an advisory lock, so re-running
    and concurrent runs are safe.

    Args:
        dsn: PostgreSQL URL of the project's database (as ``postgres``; on Supabase
            use the direct or session-pooler connection string).
        with_schema: Run ``schema.sql`` first if ``public.users`` does not exist (a
            fresh project). An existing ``public.users`` is never touched. Not needed
            on Supabase any more: the first migration (``base_schema``) creates the
            same table when it is missing.
        dry_run: Only report what would be applied.
        lock_timeout: Seconds to wait for a concurrent migrate/rollback.
        connect_timeout: Seconds to wait for the connection.

    Raises:
        MigrationError: A migration failed (it was rolled back; earlier ones stay
            applied), ``public.users`` is missing without ``with_schema``, or the
            lock could not be taken in time.
        ConfigurationError: The DSN is malformed.
        AuthenticationError, TransientError: The database could not be reached.
    """
    shipped = migrations()
    with _session(dsn, connect_timeout=connect_timeout, lock_timeout=lock_timeout) as session:
        if dry_run:
            recorded = session.recorded()
            pending = tuple(m.version for m in shipped if m.version not in recorded)
            users = session.users_table_exists()
            base_pending = any(m.name == _BASE_SCHEMA for m in shipped if m.version in pending)
            if pending and not users and not with_schema and not base_pending:
                raise MigrationError(_NO_USERS)
            return MigrationResult(
                applied=pending,
                skipped=tuple(m.version for m in shipped if m.version in recorded),
                schema_applied=with_schema and not users,
                dry_run=True,
            )
        with session.locked() as conn:
            for statement in _CREATE_TABLE:
                conn.execute(statement)
        schema_applied = False
        if with_schema:
            with session.locked() as conn:
                if not session.users_table_exists():
                    logger.info("applying schema.sql (public.users does not exist)")
                    try:
                        _run(conn, "schema.sql", schema_sql())
                    except MigrationError as exc:
                        if 'schema "auth" does not exist' not in str(exc):
                            raise
                        msg = (
                            f"{exc}. schema.sql is for Supabase projects (public.users "
                            "references auth.users); elsewhere create public.users (id uuid "
                            "PRIMARY KEY, status text) yourself and migrate without --with-schema"
                        )
                        raise MigrationError(msg) from exc.__cause__
                    schema_applied = True
        applied: list[str] = []
        skipped: list[str] = []
        for migration in shipped:
            with session.locked() as conn:
                if session.is_recorded(migration.version):
                    skipped.append(migration.version)
                    continue
                if migration.name != _BASE_SCHEMA and not session.users_table_exists():
                    raise MigrationError(_NO_USERS)
                logger.info("applying %s", migration.filename)
                statements = _run(conn, migration.filename, migration.up)
                conn.execute(_INSERT, (migration.version, migration.name, statements))
                applied.append(migration.version)
        return MigrationResult(
            applied=tuple(applied),
            skipped=tuple(skipped),
            schema_applied=schema_applied,
            notices=tuple(session.notices),
        )


# The first migration creates public.users on a fresh project (like schema.sql), so
# that `supabase db push` alone works; the others need the table.
_BASE_SCHEMA = "base_schema"

_NO_USERS = (
    "public.users does not exist: pass --with-schema (with_schema=True) to create it from "
    "schema.sql on a fresh project, or create your users table (id uuid, status text) first"
)


def rollback(
    dsn: str,
    *,
    to: str,
    dry_run: bool = False,
    lock_timeout: float = 60.0,
    connect_timeout: float = 10.0,
) -> MigrationResult:
    """Roll back the applied presence migrations newer than ``to``, newest first.

    Runs each migration's rollback script (``supabase/rollbacks/``) and deletes its
    record, in one transaction per migration under the migration lock. Only
    migrations recorded as applied are rolled back. ``schema.sql`` (the users table
    and its data) is never dropped; its rollback is ``presence-sdk sql --rollback
    --file schema``.

    Args:
        dsn: PostgreSQL URL of the database.
        to: Keep this version and older ones; ``"0"`` rolls back every migration.
        dry_run: Only report what would be rolled back.
        lock_timeout: Seconds to wait for a concurrent migrate/rollback.
        connect_timeout: Seconds to wait for the connection.

    Raises:
        ConfigurationError: ``to`` is not a shipped version (or ``"0"``), bad DSN.
        MigrationError: A rollback script failed (that step was undone).
    """
    targets = _check_target(to)
    with _session(dsn, connect_timeout=connect_timeout, lock_timeout=lock_timeout) as session:
        if dry_run or not session.table_exists():
            recorded = session.recorded()
            return MigrationResult(
                rolled_back=tuple(m.version for m in targets if m.version in recorded),
                skipped=tuple(m.version for m in targets if m.version not in recorded),
                dry_run=dry_run,
            )
        done: list[str] = []
        skipped: list[str] = []
        for migration in targets:
            with session.locked() as conn:
                if not session.is_recorded(migration.version):
                    skipped.append(migration.version)
                    continue
                logger.info("rolling back %s", migration.filename)
                _run(conn, f"rollback of {migration.filename}", migration.down)
                conn.execute(_DELETE, (migration.version,))
                done.append(migration.version)
        return MigrationResult(
            rolled_back=tuple(done), skipped=tuple(skipped), notices=tuple(session.notices)
        )
