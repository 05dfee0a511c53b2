"""Security of presence sessions (migration 5): grants and RLS on every new object for
anon, authenticated and service_role, and the bad-input list of the per-user RPCs.

Calls go through the PostgREST call shape (``PresenceDatabase.rpc``); direct table
access is tried in a PostgREST-style transaction (``SET LOCAL ROLE`` + claims). Every
rejected call is checked to change no row (a digest of public.users and
public.presence_sessions before and after).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from privacy_support import PRIVACY_FUNCTION_GRANTS
from psycopg import sql
from sessions_support import beat, expect_error, new_id, sessions_of, table_hash

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

API_ROLES = ("anon", "authenticated", "service_role")
# Function -> (anon, authenticated, service_role) may execute.
FUNCTION_GRANTS = {
    "public.presence_session_beat(uuid, text, text, jsonb)": (False, True, False),
    "public.presence_session_leave(uuid)": (False, True, False),
    "public.presence_my_sessions()": (False, True, False),
    "public.presence_track_beat(jsonb)": (False, False, True),
    "public.presence_track_end(uuid[])": (False, False, True),
    # Internals: only the owner, except the read helper the invoker views call.
    "presence_private.live_after()": (False, True, True),
    "presence_private.caller_id()": (False, True, True),  # the policies call it
    "presence_private.sync_users(uuid[], timestamptz[])": (False, False, False),
    "presence_private.adopt_legacy(uuid[])": (False, False, False),
    "presence_private.evict_over_cap(uuid[])": (False, False, False),
    "presence_private.beat(uuid, uuid, text, text, jsonb)": (False, False, False),
    "presence_private.leave(uuid, uuid, boolean)": (False, False, False),
    "presence_private.echo(text)": (False, False, False),
    "presence_private.max_batch()": (False, False, False),
    "presence_private.max_sessions_per_user()": (False, False, False),
    # Migration 6 (events): the RPCs, then the internals (the invoker RPCs and the
    # log's policy call the first four).
    "public.presence_events_since(bigint, integer)": (False, True, True),
    "public.presence_session_history(uuid, timestamptz, timestamptz, integer)": (False, True, True),
    "public.presence_online_per_day(uuid, date, date, text)": (False, True, True),
    "public.presence_prune_events(integer)": (False, False, True),
    "public.presence_configure_events(integer)": (False, False, False),
    "presence_private.can_see_events(uuid, uuid)": (False, True, True),
    "presence_private.can_see_event(uuid, uuid, text)": (False, True, True),
    "presence_private.timeout()": (False, True, True),
    "presence_private.events_horizon(bigint, integer)": (False, True, True),
    "presence_private.check_history_range(timestamptz, timestamptz)": (False, True, True),
    "presence_private.events_lock_key()": (False, False, False),
    "presence_private.events_begin()": (False, False, False),
    "presence_private.event_audience(uuid, timestamptz)": (False, False, False),
    "presence_private.log_sessions_started()": (False, False, False),
    "presence_private.log_sessions_ended()": (False, False, False),
    "presence_private.log_session_changed()": (False, False, False),
    "presence_private.log_user_changed()": (False, False, False),
}
# Relation -> (anon, authenticated, service_role) may SELECT; nobody may change them.
RELATION_GRANTS = {
    "public.presence_sessions": (False, True, True),
    "presence_private.session_presence": (False, True, True),
    "presence_private.user_presence_now": (False, True, True),
    "presence_private.replaced_definitions": (False, False, False),
    "public.presence_events": (False, True, True),  # migration 6; RLS decides the rows
}
# Argument sets PostgREST would send, for calling each new RPC.
CALLS: dict[str, dict[str, Any]] = {
    "presence_session_beat": {"session_id": "5b5f4a6e-8c1e-4d2a-9f57-3f1f0c1d2e3f"},
    "presence_session_leave": {"session_id": "5b5f4a6e-8c1e-4d2a-9f57-3f1f0c1d2e3f"},
    "presence_my_sessions": {},
    "presence_track_beat": {"sessions": []},
    "presence_track_end": {"session_ids": []},
}


@contextmanager
def as_role(db: PresenceDatabase, role: str, user: str | None) -> Iterator[psycopg.Connection[Any]]:
    """A PostgREST-style transaction as ``role`` (rolled back at the end)."""
    claims: dict[str, Any] = {"role": role} | ({"sub": user} if user else {})
    with db.connect() as conn:
        conn.execute("BEGIN")
        try:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            yield conn
        finally:
            conn.execute("ROLLBACK")


def test_execute_grants_on_every_new_function(presence_db: PresenceDatabase) -> None:
    rows = presence_db.query(
        "SELECT f.sig, r.rolname, has_function_privilege(r.rolname, f.sig, 'EXECUTE') AS ok "
        "FROM unnest(%s::text[]) AS f (sig) CROSS JOIN pg_roles AS r "
        "WHERE r.rolname = ANY (%s)",
        (list(FUNCTION_GRANTS), list(API_ROLES)),
    )
    got = {(r["sig"], r["rolname"]): r["ok"] for r in rows}
    for sig, allowed in FUNCTION_GRANTS.items():
        assert tuple(got[sig, role] for role in API_ROLES) == allowed, sig
    # Nothing in presence_private is left out of the table above (or the privacy one,
    # checked in test_sql_privacy_security.py).
    unlisted = presence_db.query(
        "SELECT p.oid::regprocedure::text AS sig FROM pg_proc AS p "
        "WHERE p.pronamespace = 'presence_private'::regnamespace "
        "AND p.oid <> ALL (SELECT to_regprocedure(f) FROM unnest(%s::text[]) AS f)",
        ([*FUNCTION_GRANTS, *PRIVACY_FUNCTION_GRANTS],),
    )
    assert unlisted == []


def test_table_and_view_privileges(presence_db: PresenceDatabase) -> None:
    rows = presence_db.query(
        "SELECT t.rel, r.rolname, "
        "       has_table_privilege(r.rolname, t.rel, 'SELECT') AS can_select, "
        "       has_table_privilege(r.rolname, t.rel, "
        "           'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS can_change "
        "FROM unnest(%s::text[]) AS t (rel) CROSS JOIN pg_roles AS r WHERE r.rolname = ANY (%s)",
        (list(RELATION_GRANTS), list(API_ROLES)),
    )
    got = {(r["rel"], r["rolname"]): (r["can_select"], r["can_change"]) for r in rows}
    for rel, allowed in RELATION_GRANTS.items():
        for role, may_select in zip(API_ROLES, allowed, strict=True):
            assert got[rel, role] == (may_select, False), (rel, role)
    schema = presence_db.query(
        "SELECT r.rolname, has_schema_privilege(r.rolname, 'presence_private', 'USAGE') AS u, "
        "has_schema_privilege(r.rolname, 'presence_private', 'CREATE') AS c "
        "FROM pg_roles AS r WHERE r.rolname = ANY (%s) ORDER BY 1",
        (list(API_ROLES),),
    )
    assert [(r["rolname"], r["u"], r["c"]) for r in schema] == [
        ("anon", False, False),
        ("authenticated", True, False),
        ("service_role", True, False),
    ]
    rls = presence_db.query(
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.presence_sessions'::regclass"
    )
    assert rls == [{"relrowsecurity": True}]


@pytest.mark.parametrize("fn", sorted(CALLS))
def test_rpc_permissions_through_postgrest(presence_db: PresenceDatabase, fn: str) -> None:
    user = presence_db.create_user()
    before = table_hash(presence_db)
    allowed = {
        "anon": False,
        "authenticated": fn.startswith(("presence_session", "presence_my")),
        "service_role": fn.startswith("presence_track"),
    }
    for role, may in allowed.items():
        kwargs: dict[str, Any] = {"user_id": user} if role == "authenticated" else {"role": role}
        if may:
            presence_db.rpc(fn, CALLS[fn], **kwargs)
            continue
        err = expect_error(presence_db, fn, CALLS[fn], **kwargs)
        assert (err.status, err.code) == (401 if role == "anon" else 403, "42501"), (role, err)
        assert err.message == f"permission denied for function {fn}"
    if fn in ("presence_session_leave", "presence_my_sessions"):
        assert table_hash(presence_db) == before  # allowed, but nothing to change


def test_rls_a_user_reads_only_their_own_sessions(presence_db: PresenceDatabase) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    mine, theirs = new_id(), new_id()
    beat(presence_db, me, mine)
    beat(presence_db, other, theirs)
    with as_role(presence_db, "authenticated", me) as conn:
        rows = conn.execute("SELECT session_id::text FROM public.presence_sessions").fetchall()
        assert rows == [(mine,)]
        # Others are visible only as the aggregate.
        seen = conn.execute(
            "SELECT user_id::text, online FROM public.user_presence WHERE user_id = %s", (other,)
        ).fetchall()
        assert seen == [(other, True)]
    with as_role(presence_db, "service_role", None) as conn:
        count = conn.execute("SELECT count(*) FROM public.presence_sessions").fetchone()
        assert count == (2,)
    with (
        as_role(presence_db, "anon", None) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM public.presence_sessions")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO public.presence_sessions (session_id, user_id, status, started_at, "
        "last_beat) VALUES (gen_random_uuid(), %(me)s, 'online', now(), now())",
        "UPDATE public.presence_sessions SET last_beat = now() + interval '1 day'",
        "UPDATE public.presence_sessions SET status = 'busy' WHERE user_id = %(me)s",
        "DELETE FROM public.presence_sessions",
        "TRUNCATE public.presence_sessions",
        "SELECT * FROM presence_private.replaced_definitions",
        "SELECT presence_private.sync_users(ARRAY[%(me)s::uuid])",
        "SELECT presence_private.beat(%(me)s, gen_random_uuid(), 'online', NULL, NULL)",
    ],
)
@pytest.mark.parametrize("role", ["authenticated", "service_role"])
def test_api_roles_cannot_write_sessions_directly(
    presence_db: PresenceDatabase, statement: str, role: str
) -> None:
    me = presence_db.create_user()
    beat(presence_db, me, new_id())
    before = table_hash(presence_db)
    with (
        as_role(presence_db, role, me if role == "authenticated" else None) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement, {"me": me})
    assert table_hash(presence_db) == before


def test_a_user_cannot_beat_end_or_take_another_users_session(
    presence_db: PresenceDatabase,
) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    theirs = new_id()
    beat(presence_db, other, theirs, device="theirs")
    before = table_hash(presence_db)
    for fn, params in (
        ("presence_session_beat", {"session_id": theirs, "new_status": "away"}),
        ("presence_session_leave", {"session_id": theirs}),
        # The other user's id is their implicit (0.1.0) session id: reserved.
        ("presence_session_beat", {"session_id": other}),
    ):
        err = expect_error(presence_db, fn, params, user_id=me)
        assert (err.status, err.code) == (403, "42501"), (fn, err)
        assert "belongs to another user" in err.message
        assert table_hash(presence_db) == before
    assert [s["device"] for s in sessions_of(presence_db, other)] == ["theirs"]
    # There is no parameter to name another user.
    err = expect_error(
        presence_db,
        "presence_session_beat",
        {"session_id": new_id(), "user_id": other},
        user_id=me,
    )
    assert (err.status, err.code) == (404, "PGRST202")
    assert table_hash(presence_db) == before


def test_unknown_own_session_leave_is_a_no_op(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    beat(presence_db, me, new_id())
    before = table_hash(presence_db)
    presence_db.rpc("presence_session_leave", {"session_id": new_id()}, user_id=me)
    assert table_hash(presence_db) == before
    err = expect_error(presence_db, "presence_session_leave", {"session_id": None}, user_id=me)
    assert (err.status, err.code, err.message) == (
        400,
        "22023",
        "presence: session_id must not be null",
    )
    assert table_hash(presence_db) == before


@pytest.mark.parametrize(
    "fn", ["presence_session_beat", "presence_session_leave", "presence_my_sessions"]
)
def test_authenticated_without_a_user_gets_28000(presence_db: PresenceDatabase, fn: str) -> None:
    presence_db.create_user()
    before = table_hash(presence_db)
    err = expect_error(presence_db, fn, CALLS[fn], role="authenticated")
    assert (err.status, err.code, err.message) == (403, "28000", "presence: not authenticated")
    assert err.hint
    assert table_hash(presence_db) == before


def test_a_user_without_a_profile_row_gets_404(presence_db: PresenceDatabase) -> None:
    ghost = "00000000-0000-4000-8000-00000000dead"
    err = expect_error(
        presence_db, "presence_session_beat", {"session_id": new_id()}, user_id=ghost
    )
    assert (err.status, err.code) == (404, "PT404")
    assert ghost in err.message


BIG = "x" * 5_000_000
BAD_BEATS: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, params, code, message start)
    ("status-offline", {"new_status": "offline"}, "22023", "presence: invalid status 'offline'"),
    ("status-unknown", {"new_status": "invisible"}, "22023", "presence: invalid status"),
    ("status-empty", {"new_status": ""}, "22023", "presence: invalid status ''"),
    ("status-case", {"new_status": "ONLINE"}, "22023", "presence: invalid status"),
    ("status-null", {"new_status": None}, "22023", "presence: invalid status NULL"),
    ("status-5MB", {"new_status": BIG}, "22023", "presence: invalid status 'xxxx"),
    ("session-null", {"session_id": None}, "22023", "presence: session_id must not be null"),
    ("session-malformed", {"session_id": "not-a-uuid"}, "22P02", "invalid input syntax"),
    ("device-empty", {"device": ""}, "22023", "presence: device must be 1 to 64"),
    ("device-65", {"device": "d" * 65}, "22023", "presence: device must be 1 to 64"),
    ("device-5MB", {"device": BIG}, "22023", "presence: device must be 1 to 64"),
    ("metadata-array", {"metadata": [1, 2]}, "22023", "presence: metadata must be a JSON object"),
    ("metadata-string", {"metadata": "x"}, "22023", "presence: metadata must be a JSON object"),
    ("metadata-number", {"metadata": 3}, "22023", "presence: metadata must be a JSON object"),
    (
        "metadata-too-big",
        {"metadata": {"k": "v" * 1100}},
        "22023",
        "presence: metadata must be a JSON object of at most 1024 bytes",
    ),
]


@pytest.mark.parametrize(
    ("params", "code", "message"), [b[1:] for b in BAD_BEATS], ids=[b[0] for b in BAD_BEATS]
)
def test_bad_session_beats_are_refused_and_change_nothing(
    presence_db: PresenceDatabase, params: dict[str, Any], code: str, message: str
) -> None:
    me = presence_db.create_user()
    session = new_id()
    beat(presence_db, me, session, "busy", device="web", metadata={"a": 1})
    before = table_hash(presence_db)
    err = expect_error(
        presence_db, "presence_session_beat", {"session_id": session} | params, user_id=me
    )
    assert (err.status, err.code) == (400, code), err
    assert err.message.startswith(message), err.message
    assert len(err.message) < 300  # input is echoed truncated
    assert table_hash(presence_db) == before


def test_the_0_1_0_heartbeat_truncates_what_it_echoes(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    before = table_hash(presence_db)
    err = expect_error(presence_db, "presence_heartbeat", {"new_status": BIG}, user_id=me)
    assert (err.status, err.code) == (400, "22023")
    assert err.message.endswith("... (5000000 characters)")
    assert err.hint is not None
    assert "online, away, busy" in err.hint
    assert table_hash(presence_db) == before


def test_a_missing_settings_row_is_named_not_mistaken_for_a_missing_user(
    presence_db: PresenceDatabase,
) -> None:
    me = presence_db.create_user()
    beat(presence_db, me, new_id())
    presence_db.query("DELETE FROM public.presence_config")
    before = table_hash(presence_db)
    for fn, params, kwargs in (
        ("presence_session_beat", {"session_id": new_id()}, {"user_id": me}),
        ("presence_heartbeat", {}, {"user_id": me}),
        ("presence_get", {"user_ids": [me]}, {"user_id": me}),
        ("presence_list_online", {}, {"user_id": me}),
        ("presence_counts", {}, {"user_id": me}),
        ("presence_my_sessions", {}, {"user_id": me}),
        ("presence_track_beat", {"sessions": []}, {"role": "service_role"}),
        ("mark_inactive_users_offline", {}, {"role": "service_role"}),
    ):
        err = expect_error(presence_db, fn, params, **kwargs)
        assert err.code == "55000", (fn, err)
        assert "public.presence_config" in err.message
        assert err.hint is not None
        assert "INSERT INTO public.presence_config" in err.hint
    assert table_hash(presence_db) == before
