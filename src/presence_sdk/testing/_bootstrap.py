"""Prepare a database like a Supabase project with the presence SQL applied."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from presence_sdk._sql import migrations, schema_sql
from presence_sdk.testing._postgrest import PostgRESTEmulator, call_rpc

__all__ = [
    "PresenceDatabase",
    "apply_presence_sql",
    "install_supabase_shim",
    "supabase_shim_sql",
]


def supabase_shim_sql() -> str:
    """The SQL that stands in for Supabase's roles and ``auth`` schema locally."""
    return (
        resources.files("presence_sdk.testing")
        .joinpath("supabase_shim.sql")
        .read_text(encoding="utf-8")
    )


def _run_collecting_notices(conn: psycopg.Connection[Any], script: str) -> list[str]:
    notices: list[str] = []

    def handler(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary:
            notices.append(diag.message_primary)

    conn.add_notice_handler(handler)
    try:
        conn.execute(script)
    finally:
        conn.remove_notice_handler(handler)
    return notices


def install_supabase_shim(conn: psycopg.Connection[Any]) -> None:
    """Create Supabase's API roles and ``auth`` schema in ``conn``'s database."""
    _run_collecting_notices(conn, supabase_shim_sql())


def apply_presence_sql(conn: psycopg.Connection[Any], *, schema: bool = True) -> list[str]:
    """Apply ``schema.sql`` (optional) and every migration in order.

    Returns the NOTICE messages raised (e.g. why the pg_cron job was not scheduled).
    ``conn`` should be in autocommit mode; each file runs as one implicit
    transaction, as the Supabase SQL editor does.
    """
    notices: list[str] = []
    if schema:
        notices += _run_collecting_notices(conn, schema_sql())
    for migration in migrations():
        notices += _run_collecting_notices(conn, migration.up)
    return notices


@dataclass(frozen=True)
class PresenceDatabase:
    """A database with the Supabase shim and the presence SQL, plus test helpers.

    Attributes:
        dsn: libpq connection string (superuser).
        name: The database name.
    """

    dsn: str
    name: str

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        """Open a superuser connection."""
        return psycopg.connect(self.dsn, autocommit=autocommit)

    def query(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one statement as superuser; return its rows as dicts."""
        with self.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_user(
        self,
        *,
        status: str | None = None,
        last_heartbeat: datetime | str | None = None,
        email: str | None = None,
    ) -> str:
        """Create an auth user (and so, via trigger, its ``public.users`` row).

        ``status``/``last_heartbeat`` set presence directly, for arranging a test.
        Returns the new user's id.
        """
        user_id = str(uuid.uuid4())
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO auth.users (id, email) VALUES (%s, %s)",
                (user_id, email or f"{user_id}@example.test"),
            )
            conn.execute(
                "INSERT INTO public.users (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
                (user_id,),
            )
            if status is not None or last_heartbeat is not None:
                conn.execute(
                    "UPDATE public.users SET status = coalesce(%s, status), "
                    "last_heartbeat = coalesce(%s::timestamptz, last_heartbeat) WHERE id = %s",
                    (status, last_heartbeat, user_id),
                )
        return user_id

    def rpc(
        self,
        fn: str,
        params: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        role: str | None = None,
    ) -> Any:
        """Call an RPC as PostgREST would: as ``user_id`` (authenticated), else anon.

        Pass ``role="service_role"`` for the service key. Raises
        :class:`~presence_sdk.testing.PostgRESTError` like the HTTP API would.
        """
        role = role or ("authenticated" if user_id else "anon")
        claims: dict[str, Any] = {"sub": user_id} if user_id else {}
        with self.connect() as conn:
            return call_rpc(conn, fn, params, role=role, claims=claims)

    def emulator(self, **kwargs: Any) -> PostgRESTEmulator:
        """A PostgREST emulator over this database (close it when done)."""
        return PostgRESTEmulator(self.dsn, **kwargs)
