"""Security of the presence API, exercised exactly as PostgREST runs requests.

Every call goes through ``PresenceDatabase.rpc`` (``SET LOCAL ROLE`` + the JWT claims
in ``request.jwt.claims``, one transaction), so grants and RLS behave as on Supabase.
Supabase's default privileges (ALL to anon/authenticated/service_role on new objects
in ``public``) are part of the shim, so every REVOKE in the migrations is tested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from presence_sdk.testing import PostgRESTError, PresenceDatabase

pytestmark = pytest.mark.integration

# Callable with the argument names PostgREST would send.
OWNER_ONLY: dict[str, dict[str, Any]] = {
    "presence_configure": {"timeout_seconds": 600},
    "presence_schedule_sweep": {},
}
SERVICE_ONLY: dict[str, dict[str, Any]] = {
    "mark_inactive_users_offline": {},
    "presence_setup_report": {},
}


def presence_row(db: PresenceDatabase, user: str) -> dict[str, Any]:
    rows = db.query(
        "SELECT status, last_heartbeat, online_since FROM public.users WHERE id = %s", (user,)
    )
    assert len(rows) == 1
    return rows[0]


def all_presence(db: PresenceDatabase) -> list[dict[str, Any]]:
    return db.query("SELECT id, status, last_heartbeat, online_since FROM public.users ORDER BY id")


def expect_error(
    db: PresenceDatabase,
    fn: str,
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PostgRESTError:
    with pytest.raises(PostgRESTError) as info:
        db.rpc(fn, params, **kwargs)
    return info.value


def test_a_user_beats_only_their_own_row(presence_db: PresenceDatabase) -> None:
    alice = presence_db.create_user()
    bob = presence_db.create_user()
    bob_before = presence_row(presence_db, bob)

    beat_at = presence_db.rpc("presence_heartbeat", {"new_status": "away"}, user_id=alice)
    alice_row = presence_row(presence_db, alice)
    assert alice_row["status"] == "away"
    assert alice_row["last_heartbeat"] == datetime.fromisoformat(beat_at)
    assert presence_row(presence_db, bob) == bob_before

    # There is no parameter to name another user: PostgREST finds no such function.
    err = expect_error(
        presence_db, "presence_heartbeat", {"new_status": "online", "user_id": bob}, user_id=alice
    )
    assert (err.status, err.code) == (404, "PGRST202")
    assert presence_row(presence_db, bob) == bob_before

    # Leaving is also only for oneself.
    presence_db.rpc("presence_leave", user_id=bob)
    assert presence_row(presence_db, alice)["status"] == "away"
    assert presence_row(presence_db, bob)["status"] == "offline"


def test_anon_cannot_beat_or_leave(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    before = all_presence(presence_db)
    for fn, params in (("presence_heartbeat", {"new_status": "online"}), ("presence_leave", {})):
        err = expect_error(presence_db, fn, params)
        assert (err.status, err.code) == (401, "42501"), err
        assert "permission denied" in err.message
    # Even a forged sub claim does not help the anon role.
    with (
        session(presence_db, "anon", user) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT public.presence_heartbeat('online')")
    assert all_presence(presence_db) == before


def test_authenticated_without_a_user_gets_a_clear_error(presence_db: PresenceDatabase) -> None:
    presence_db.create_user()
    before = all_presence(presence_db)
    for fn in ("presence_heartbeat", "presence_leave"):
        err = expect_error(presence_db, fn, role="authenticated")
        assert (err.status, err.code) == (403, "28000")
        assert err.message == "presence: not authenticated"
        assert err.hint
    assert all_presence(presence_db) == before


def test_user_without_a_profile_row_gets_404(presence_db: PresenceDatabase) -> None:
    ghost = "00000000-0000-4000-8000-00000000dead"
    err = expect_error(presence_db, "presence_heartbeat", user_id=ghost)
    assert (err.status, err.code) == (404, "PT404")
    assert ghost in err.message


@pytest.mark.parametrize("fn", sorted(OWNER_ONLY | SERVICE_ONLY))
def test_anon_cannot_call_admin_functions(presence_db: PresenceDatabase, fn: str) -> None:
    user = presence_db.create_user(status="online", last_heartbeat="2000-01-01T00:00:00Z")
    err = expect_error(presence_db, fn, (OWNER_ONLY | SERVICE_ONLY)[fn])
    assert (err.status, err.code) == (401, "42501")
    assert presence_row(presence_db, user)["status"] == "online"  # nothing swept


@pytest.mark.parametrize("fn", sorted(OWNER_ONLY | SERVICE_ONLY))
def test_authenticated_cannot_call_admin_functions(presence_db: PresenceDatabase, fn: str) -> None:
    user = presence_db.create_user(status="online", last_heartbeat="2000-01-01T00:00:00Z")
    err = expect_error(presence_db, fn, (OWNER_ONLY | SERVICE_ONLY)[fn], user_id=user)
    assert (err.status, err.code) == (403, "42501")
    assert presence_row(presence_db, user)["status"] == "online"
    settings = presence_db.rpc("presence_settings", user_id=user)
    assert settings["timeout_seconds"] == 45


def test_service_role_may_sweep_and_report_but_not_reconfigure(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user(status="online", last_heartbeat="2000-01-01T00:00:00Z")
    assert presence_db.rpc("mark_inactive_users_offline", role="service_role") == 1
    assert presence_row(presence_db, user)["status"] == "offline"
    report = presence_db.rpc("presence_setup_report", role="service_role")
    assert report["schema_version"] == 5
    for fn, params in OWNER_ONLY.items():
        err = expect_error(presence_db, fn, params, role="service_role")
        assert (err.status, err.code) == (403, "42501")


def test_setup_report_lists_the_grants(presence_db: PresenceDatabase) -> None:
    report = presence_db.rpc("presence_setup_report", role="service_role")
    grants = {f["name"]: f["execute"] for f in report["functions"]}
    assert all(f["exists"] for f in report["functions"])
    nobody = {"anon": False, "authenticated": False, "service_role": False}
    service = {"anon": False, "authenticated": False, "service_role": True}
    users = {"anon": False, "authenticated": True, "service_role": True}
    signed_in = {"anon": False, "authenticated": True, "service_role": False}
    assert grants == {
        "mark_inactive_users_offline": service,
        "presence_configure": nobody,
        "presence_configure_events": nobody,
        "presence_counts": users,
        "presence_events_since": users,
        "presence_get": users,
        "presence_heartbeat": users,
        "presence_is_online": users,
        "presence_leave": users,
        "presence_list_online": users,
        "presence_my_privacy": users,
        "presence_my_sessions": signed_in,
        "presence_online_per_day": users,
        "presence_prune_events": service,
        "presence_prune_job_history": nobody,
        "presence_schedule_sweep": nobody,
        "presence_session_beat": signed_in,
        "presence_session_history": users,
        "presence_session_leave": signed_in,
        "presence_set_invisible": users,
        "presence_set_invisible_for": service,
        "presence_set_visibility": users,
        "presence_settings": {"anon": True, "authenticated": True, "service_role": True},
        "presence_setup_report": service,
        "presence_track_beat": service,
        "presence_track_end": service,
    }
    assert report["users_table"]["rls_enabled"] is True


@pytest.mark.parametrize("bad", ["offline", "invisible", "", "ONLINE", " online", None])
def test_bad_status_raises_22023_and_changes_nothing(
    presence_db: PresenceDatabase, bad: str | None
) -> None:
    user = presence_db.create_user()
    presence_db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=user)
    before = all_presence(presence_db)
    err = expect_error(presence_db, "presence_heartbeat", {"new_status": bad}, user_id=user)
    assert (err.status, err.code) == (400, "22023")
    assert err.message.startswith("presence: invalid status")
    assert err.hint is not None
    assert "online, away, busy" in err.hint
    assert all_presence(presence_db) == before


def test_server_clock_is_used_whatever_the_client_sends(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    before = presence_row(presence_db, user)
    for forged in (
        {"new_status": "online", "last_heartbeat": "2999-01-01T00:00:00Z"},
        {"new_status": "online", "beat_at": "2999-01-01T00:00:00Z"},
        {"new_status": "online", "now": "2999-01-01T00:00:00Z"},
    ):
        err = expect_error(presence_db, "presence_heartbeat", forged, user_id=user)
        assert (err.status, err.code) == (404, "PGRST202")
    assert presence_row(presence_db, user) == before

    # Exactly PostgREST's transaction, plus now() read in the same transaction.
    with presence_db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"role": "authenticated", "sub": user}),),
        )
        row = conn.execute("SELECT public.presence_heartbeat('online'), now()").fetchone()
    assert row is not None
    beat_at, tx_now = row
    assert beat_at == tx_now
    stored = presence_row(presence_db, user)
    assert stored["last_heartbeat"] == tx_now
    assert stored["online_since"] == tx_now


def test_heartbeat_result_is_server_time(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    (t0,) = [r["now"] for r in presence_db.query("SELECT now()")]
    beat_at = datetime.fromisoformat(presence_db.rpc("presence_heartbeat", user_id=user))
    (t1,) = [r["now"] for r in presence_db.query("SELECT now()")]
    assert t0 <= beat_at <= t1
    assert presence_row(presence_db, user)["last_heartbeat"] == beat_at


def as_user(conn: psycopg.Connection[Any], user: str) -> None:
    conn.execute("SET LOCAL ROLE authenticated")
    conn.execute(
        "SELECT set_config('request.jwt.claims', %s, true)",
        (json.dumps({"role": "authenticated", "sub": user}),),
    )


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


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.users SET last_heartbeat = now() + interval '1 day' WHERE id = %(me)s",
        "UPDATE public.users SET status = 'online' WHERE id = %(me)s",
        "UPDATE public.users SET online_since = now() WHERE id = %(me)s",
        "INSERT INTO public.users (id, status) VALUES (gen_random_uuid(), 'online')",
        "DELETE FROM public.users WHERE id = %(me)s",
        "UPDATE public.presence_config SET timeout_seconds = 3600",
        "TRUNCATE public.presence_config",
    ],
)
def test_authenticated_cannot_write_presence_directly(
    presence_db: PresenceDatabase, statement: str
) -> None:
    """schema.sql grants authenticated UPDATE on profile columns only."""
    me = presence_db.create_user()
    before = all_presence(presence_db)
    with (
        session(presence_db, "authenticated", me) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement, {"me": me})
    assert all_presence(presence_db) == before
    assert presence_db.query("SELECT timeout_seconds FROM public.presence_config") == [
        {"timeout_seconds": 45}
    ]


def test_api_roles_only_read_the_view_and_the_settings(presence_db: PresenceDatabase) -> None:
    """Supabase's default privileges grant ALL on new relations; the migrations cut
    them back to SELECT (no INSERT/UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER)."""
    rows = presence_db.query(
        """
        SELECT r.rolname, c.relname,
               has_table_privilege(r.rolname, c.oid, 'SELECT') AS can_select,
               has_table_privilege(r.rolname, c.oid,
                   'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS can_change
        FROM pg_roles AS r
        CROSS JOIN pg_class AS c
        WHERE r.rolname IN ('anon', 'authenticated', 'service_role')
          AND c.oid IN ('public.user_presence'::regclass, 'public.presence_config'::regclass)
        ORDER BY 1, 2
        """
    )
    assert [(r["rolname"], r["relname"], r["can_select"], r["can_change"]) for r in rows] == [
        ("anon", "presence_config", True, False),
        ("anon", "user_presence", False, False),
        ("authenticated", "presence_config", True, False),
        ("authenticated", "user_presence", True, False),
        ("service_role", "presence_config", True, False),
        ("service_role", "user_presence", True, False),
    ]


def test_authenticated_may_edit_only_their_own_profile(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    other = presence_db.create_user()
    with presence_db.connect() as conn, conn.transaction():
        as_user(conn, me)
        mine = conn.execute(
            "UPDATE public.users SET display_name = 'Me' WHERE id = %s", (me,)
        ).rowcount
        theirs = conn.execute(
            "UPDATE public.users SET display_name = 'Hacked' WHERE id = %s", (other,)
        ).rowcount
    assert (mine, theirs) == (1, 0)


def test_anon_cannot_read_presence(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    presence_db.rpc("presence_heartbeat", user_id=user)
    for fn, params in (
        ("presence_get", {"user_ids": [user]}),
        ("presence_is_online", {"user_id": user}),
        ("presence_list_online", {}),
        ("presence_counts", {}),
    ):
        err = expect_error(presence_db, fn, params)
        assert (err.status, err.code) == (401, "42501"), fn
    for relation in ("public.users", "public.user_presence"):
        with (
            session(presence_db, "anon", None) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(f"SELECT * FROM {relation}")
    # The timings are public (clients need them before signing in).
    assert presence_db.rpc("presence_settings")["timeout_seconds"] == 45


def test_security_definer_functions_pin_an_empty_search_path(
    presence_db: PresenceDatabase,
) -> None:
    rows = presence_db.query(
        "SELECT proname, proconfig FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace AND prosecdef ORDER BY 1"
    )
    assert [r["proname"] for r in rows] == [
        "handle_new_auth_user",
        "mark_inactive_users_offline",
        "presence_heartbeat",
        "presence_leave",
        "presence_my_privacy",
        "presence_prune_events",
        "presence_prune_job_history",
        "presence_session_beat",
        "presence_session_leave",
        "presence_set_invisible",
        "presence_set_invisible_for",
        "presence_set_visibility",
        "presence_setup_report",
        "presence_track_beat",
        "presence_track_end",
    ]
    # Three invoker helpers of the reads run without SET, by design (inlining; one call
    # per read row), and so do the event log's per-event rule (inlined into its policy)
    # and the snapshot its trigger writes (one call per user event, under the trigger's
    # own search_path): every name and operator in them is schema-qualified instead.
    internal = presence_db.query(
        "SELECT proname, proconfig FROM pg_proc "
        "WHERE pronamespace = 'presence_private'::regnamespace "
        "AND proname NOT IN ('visible_to', 'viewer_sees_all', 'lists_every_user', "
        "'can_see_event', 'event_audience', 'anyone_restricting', 'user_restricting') ORDER BY 1"
    )
    assert internal
    assert all('search_path=""' in r["proconfig"] for r in internal), internal
    assert all('search_path=""' in r["proconfig"] for r in rows), rows
    # The only other setting: no JIT compilation of the batch paths (migration 5).
    assert {r["proname"]: r["proconfig"] for r in rows if r["proconfig"] != ['search_path=""']} == {
        "presence_track_beat": ['search_path=""', "jit=off"],
        "presence_track_end": ['search_path=""', "jit=off"],
    }
