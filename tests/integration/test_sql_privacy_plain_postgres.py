"""Migration 7 on plain PostgreSQL: no ``auth`` schema (no Supabase, no GoTrue).

The API roles exist (a PostgREST setup has them), the app made ``public.users`` itself,
and requests carry ``request.jwt.claims`` as PostgREST sets them. Everything installs,
the privacy RPCs and reads work for the caller the claims name, and the rollbacks undo
it all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from presence_sdk import migrate, migrations
from presence_sdk.testing import PresenceDatabase, PresenceTestServer

pytestmark = pytest.mark.integration


@pytest.fixture
def plain_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database without the Supabase shim: no auth schema; the roles are the cluster's."""
    with presence_server.database(template=None) as db:
        db.query(
            "CREATE TABLE public.users (id uuid PRIMARY KEY, status text);"
            "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;"
            "CREATE POLICY users_read ON public.users FOR SELECT TO authenticated USING (true);"
            "GRANT SELECT ON TABLE public.users TO authenticated;"
            "GRANT ALL ON TABLE public.users TO service_role"
        )
        yield db


def as_api(db: PresenceDatabase, role: str, user: str | None, statement: str) -> Any:
    claims = {"role": role} | ({"sub": user} if user else {})
    with psycopg.connect(db.dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        row = conn.execute(statement).fetchone()
        return row[0] if row else None


def test_privacy_installs_works_and_rolls_back_without_an_auth_schema(
    plain_db: PresenceDatabase,
) -> None:
    assert plain_db.query("SELECT to_regnamespace('auth') AS s") == [{"s": None}]
    assert migrate(plain_db.dsn).applied == tuple(m.version for m in migrations())
    me, other = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    plain_db.query(
        "INSERT INTO public.users (id, status, last_heartbeat) VALUES "
        "(%s, 'online', now()), (%s, 'online', now())",
        (me, other),
    )
    online = f"SELECT public.presence_is_online('{me}')"
    assert as_api(plain_db, "authenticated", other, online) is True
    settings = as_api(plain_db, "authenticated", me, "SELECT public.presence_set_invisible(true)")
    assert (settings["user_id"], settings["invisible"]) == (me, True)
    assert as_api(plain_db, "authenticated", other, online) is False
    assert as_api(plain_db, "authenticated", me, online) is True
    assert as_api(plain_db, "service_role", None, online) is True
    # Another user's settings are not theirs to change; a user without a row is told so.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_api(plain_db, "authenticated", other,
               f"SELECT public.presence_set_invisible(false, '{me}')")  # fmt: skip
    # The service role acts for anyone (its role claim, read without auth.role()).
    as_api(plain_db, "service_role", None, f"SELECT public.presence_set_invisible(false, '{me}')")
    assert as_api(plain_db, "authenticated", other, online) is True
    hidden = as_api(
        plain_db, "service_role", None,
        f"SELECT public.presence_set_invisible_for(ARRAY['{me}'::uuid], true)",
    )  # fmt: skip
    assert hidden["changed"] == 1
    assert as_api(plain_db, "authenticated", other, online) is False
    assert (
        as_api(plain_db, "authenticated", me, "SELECT public.presence_my_privacy()")["invisible"]
        is True
    )
    counts = as_api(plain_db, "authenticated", other, "SELECT public.presence_counts()")
    assert (counts["online"], counts["offline"]) == (1, 1)  # me hidden, other online
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):  # 28000: no sub
        as_api(plain_db, "authenticated", None, "SELECT public.presence_set_invisible(true)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # anon: not for it at all
        as_api(plain_db, "anon", None, "SELECT public.presence_set_invisible(true)")

    # The settings table's policy resolves the caller the same way: each sees their own.
    own = "SELECT count(*) FROM public.presence_privacy"
    assert (
        as_api(plain_db, "authenticated", me, own),
        as_api(plain_db, "authenticated", other, own),
    ) == (1, 0)

    # Roll everything back, newest first: the presence objects go, the users stay.
    with plain_db.connect() as conn:
        for migration in reversed(migrations()):
            conn.execute(migration.down)
    gone = plain_db.query(
        "SELECT to_regclass('public.presence_privacy') AS t, "
        "to_regprocedure('presence_private.caller_role()') AS f, "
        "to_regnamespace('presence_private') AS s"
    )
    assert gone == [{"t": None, "f": None, "s": None}]
    assert plain_db.query("SELECT count(*) AS n FROM public.users") == [{"n": 2}]
