"""Helpers for the SQL contract tests: PostgREST-style sessions, hand-made users tables,
catalog snapshots (privileges only, or everything the presence SQL is responsible
for), and the statements of a verify fix."""

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


CATALOG_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.reloptions, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(c.relacl::text[], '{}') AS acl,
               obj_description(c.oid, 'pg_class') AS comment
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
        ORDER BY c.relname""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
               coalesce(a.attacl::text[], '{}') AS acl,
               col_description(c.oid, a.attnum) AS comment
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attname""",
    "constraints": """
        SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def,
               convalidated
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY 1, 2""",
    "functions": """
        SELECT 'public.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')'
                   AS signature,
               pg_get_functiondef(p.oid) AS definition,
               p.proconfig, p.prosecdef, p.provolatile, coalesce(p.proacl::text[], '{}') AS acl,
               obj_description(p.oid, 'pg_proc') AS comment
        FROM pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
        ORDER BY 1""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text[] AS roles, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text AS rel, tgname, tgenabled, pg_get_triggerdef(oid) AS def
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
}
CRON_QUERY = """
    SELECT jobid, jobname, schedule, command, database, username, active
    FROM cron.job ORDER BY jobid"""


def catalog_snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """The catalog state the presence SQL is responsible for: relations, columns and
    their grants, constraints, indexes, functions (``pg_get_functiondef``, settings,
    grants, comments), views, policies, triggers, extensions and the pg_cron jobs."""
    result: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for key, query in CATALOG_QUERIES.items():
            result[key] = cur.execute(query).fetchall()
        has_cron = cur.execute("SELECT to_regclass('cron.job') IS NOT NULL AS x").fetchone()
        assert has_cron is not None
        result["cron_jobs"] = cur.execute(CRON_QUERY).fetchall() if has_cron["x"] else []
    return result


def without_jobids(snap: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """A re-created job gets a new jobid; everything else must match."""
    return snap | {
        "cron_jobs": [{k: v for k, v in j.items() if k != "jobid"} for j in snap["cron_jobs"]]
    }


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
