"""Helpers for the SQL contract tests: PostgREST-style sessions, hand-made users tables,
catalog snapshots of privileges, and the statements of a verify fix."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from presence_sdk.testing import PresenceDatabase

PRIVILEGE_QUERIES = {
    "relations": """
        SELECT c.relname, coalesce(c.relacl::text[], '{}') AS acl, c.relrowsecurity
        FROM pg_class AS c WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, coalesce(a.attacl::text[], '{}') AS acl
        FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "functions": """
        SELECT p.oid::regprocedure::text AS signature, coalesce(p.proacl::text[], '{}') AS acl,
               p.proconfig, p.prosecdef
        FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1""",
    "policies": """
        SELECT tablename, policyname, roles::text[] AS roles, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def,
               convalidated
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
}


def privileges_snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """Grants, function settings, policies and constraints of everything in public."""
    with conn.cursor(row_factory=dict_row) as cur:
        return {key: cur.execute(query).fetchall() for key, query in PRIVILEGE_QUERIES.items()}


@contextmanager
def session(db: PresenceDatabase, role: str, user: str | None) -> Iterator[psycopg.Connection[Any]]:
    """An open PostgREST-style transaction as ``role`` (rolled back at the end)."""
    claims: dict[str, Any] = {"role": role} | ({"sub": user} if user else {})
    with db.connect() as conn:
        conn.execute("BEGIN")
        try:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            yield conn
        finally:
            conn.execute("ROLLBACK")


def denied(db: PresenceDatabase, role: str, user: str | None, statement: str) -> str:
    """Run ``statement`` as ``role``; it must fail with 42501. Returns the message."""
    with session(db, role, user) as conn:
        try:
            conn.execute(statement, {"me": user})
        except psycopg.errors.InsufficientPrivilege as exc:
            return exc.diag.message_primary or ""
    raise AssertionError(f"{role} could run: {statement}")


def rowcount(db: PresenceDatabase, role: str, user: str | None, statement: str) -> int:
    """Run ``statement`` as ``role`` (rolled back); return the number of rows it touched."""
    with session(db, role, user) as conn:
        return conn.execute(statement, {"me": user}).rowcount


def fix_statements(fix: str) -> list[str]:
    """Every SQL statement in a verify fix hint, in order."""
    found = re.findall(
        r"\b((?:SELECT|REVOKE|GRANT|ALTER|INSERT|CREATE|DROP)\s.*?;)(?=\s|$)", fix, re.DOTALL
    )
    assert found, fix
    return found


def apply_fix(db: PresenceDatabase, fix: str) -> None:
    """Run every statement of a fix hint as the owner (as a user would in the SQL editor)."""
    with db.connect() as conn:
        for statement in fix_statements(fix):
            conn.execute(statement)


HAND_MADE_USERS = """
    CREATE TABLE public.users (
        id uuid PRIMARY KEY,
        status text NOT NULL DEFAULT 'offline',
        nickname text
    );
    ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
    CREATE POLICY users_read ON public.users FOR SELECT TO authenticated USING (true);
    CREATE POLICY users_update_own ON public.users FOR UPDATE TO authenticated
        USING (id = auth.uid()) WITH CHECK (id = auth.uid());
    CREATE POLICY users_insert_own ON public.users FOR INSERT TO authenticated
        WITH CHECK (id = auth.uid());
"""
