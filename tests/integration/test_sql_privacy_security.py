"""Security of presence privacy (migration 20240000000007_privacy), real PostgreSQL.

Grants on every new object; the direct table path exactly as PostgREST runs it (role
switch + claims); what Supabase Realtime may send; the bad-input list (each checked to
change no row); a hook that fails (hidden, logged, never a 500); the owner's view.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import psycopg
import pytest
from privacy_support import (
    PRESENCE_COLUMNS,
    PRIVACY_FUNCTION_GRANTS,
    as_api,
    install_friendships,
    observe,
    realtime_columns,
    set_invisible,
    set_visibility,
)
from sessions_support import NOTE_AFFECTED_ROWS, advance, beat, expect_error, new_id

from presence_sdk.testing import PresenceDatabase, PresenceTestServer, http_status_for

pytestmark = pytest.mark.integration

API_ROLES = ("anon", "authenticated", "service_role")
RPC_GRANTS = {
    "public.presence_set_invisible(boolean, uuid)": (False, True, True),
    "public.presence_set_visibility(text, text, uuid)": (False, True, True),
    "public.presence_my_privacy()": (False, True, True),
    "public.presence_set_invisible_for(uuid[], boolean)": (False, False, True),
    "public.presence_can_see(uuid, uuid)": (False, False, False),
}
# Relation -> (anon, authenticated, service_role) may SELECT; nobody may change them.
RELATION_GRANTS = {
    "public.presence_privacy": (False, True, True),
    "presence_private.stored_presence": (False, True, True),
    "presence_private.privacy_settings": (False, True, True),
    "presence_private.user_presence_all_rows": (False, True, True),
    "presence_private.stored_presence_now": (False, True, True),
    "presence_private.live_session_rank": (False, True, True),
    "presence_private.privacy_replaced_definitions": (False, False, False),
    "presence_private.privacy_narrowed_select": (False, False, False),
}


def privacy_digest(db: PresenceDatabase) -> str:
    rows = db.query(
        "SELECT coalesce(string_agg(p::text, '|' ORDER BY p.user_id), '') AS x "
        "FROM public.presence_privacy AS p"
    )
    return hashlib.sha256(rows[0]["x"].encode()).hexdigest()


# -- grants ---------------------------------------------------------------------------


def test_execute_grants_on_every_new_function(presence_db: PresenceDatabase) -> None:
    grants = {**RPC_GRANTS, **PRIVACY_FUNCTION_GRANTS}
    rows = presence_db.query(
        "SELECT f.sig, r.rolname, has_function_privilege(r.rolname, f.sig, 'EXECUTE') AS ok "
        "FROM unnest(%s::text[]) AS f (sig) CROSS JOIN pg_roles AS r WHERE r.rolname = ANY (%s)",
        (list(grants), list(API_ROLES)),
    )
    got = {(r["sig"], r["rolname"]): r["ok"] for r in rows}
    for sig, allowed in grants.items():
        assert tuple(got[sig, role] for role in API_ROLES) == allowed, sig


def test_table_and_view_privileges(presence_db: PresenceDatabase) -> None:
    rows = presence_db.query(
        "SELECT t.rel, r.rolname, has_table_privilege(r.rolname, t.rel, 'SELECT') AS s, "
        "has_table_privilege(r.rolname, t.rel, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, "
        "TRIGGER') AS w FROM unnest(%s::text[]) AS t (rel) CROSS JOIN pg_roles AS r "
        "WHERE r.rolname = ANY (%s)",
        (list(RELATION_GRANTS), list(API_ROLES)),
    )
    got = {(r["rel"], r["rolname"]): (r["s"], r["w"]) for r in rows}
    for rel, allowed in RELATION_GRANTS.items():
        for role, may_select in zip(API_ROLES, allowed, strict=True):
            assert got[rel, role] == (may_select, False), (rel, role)


def test_a_user_reads_only_their_own_settings_row(presence_db: PresenceDatabase) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    set_visibility(presence_db, me, presence="contacts")
    set_visibility(presence_db, other, last_seen="nobody")
    mine = as_api(
        presence_db, "authenticated", me, "SELECT user_id::text FROM public.presence_privacy"
    )
    assert mine == [{"user_id": me}]
    assert (
        len(as_api(presence_db, "service_role", None, "SELECT 1 FROM public.presence_privacy")) == 2
    )


# -- the direct table path, exactly as PostgREST ----------------------------------------

# GET /rest/v1/users?<query> -> the statement PostgREST builds (its pgrst_source shape).
GETS = {
    "select=status,last_heartbeat": 'SELECT "public"."users"."status", '
    '"public"."users"."last_heartbeat" FROM "public"."users"',
    "select=*": 'SELECT "public"."users".* FROM "public"."users"',
    "select=online_since": 'SELECT "public"."users"."online_since" FROM "public"."users"',
    "select=id&status=eq.online": 'SELECT "public"."users"."id" FROM "public"."users" '
    'WHERE "public"."users"."status" = \'online\'',
    "select=id&order=last_heartbeat.desc": 'SELECT "public"."users"."id" FROM "public"."users" '
    'ORDER BY "public"."users"."last_heartbeat" DESC',
}


def _get(db: PresenceDatabase, role: str, user: str | None, source: str) -> Any:
    return as_api(
        db,
        role,
        user,
        f"WITH pgrst_source AS ({source}) SELECT coalesce(json_agg(_t), '[]') AS body "
        "FROM (SELECT * FROM pgrst_source) AS _t",
    )[0]["body"]


@pytest.mark.parametrize("query", list(GETS))
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_presence_columns_cannot_be_read_from_the_table(
    presence_db: PresenceDatabase, query: str, role: str
) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id())
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
        _get(presence_db, role, user if role == "authenticated" else None, GETS[query])
    assert "permission denied" in str(denied.value)
    # PostgREST answers 401 (anon) or 403 (a signed-in user), never the data.
    assert http_status_for("42501", authenticated=role != "anon") == (
        403 if role == "authenticated" else 401
    )


def test_the_app_columns_stay_readable_and_the_service_role_reads_everything(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    presence_db.query("UPDATE public.users SET display_name = 'Ada' WHERE id = %s", (user,))
    beat(presence_db, user, new_id())
    body = _get(
        presence_db,
        "authenticated",
        user,
        'SELECT "public"."users"."id", "public"."users"."display_name" FROM "public"."users"',
    )
    assert body == [{"id": user, "display_name": "Ada"}]
    everything = _get(presence_db, "service_role", None, GETS["select=*"])
    assert everything[0]["status"] == "online"
    assert set(PRESENCE_COLUMNS) <= set(everything[0])


def test_realtime_sends_no_presence_column_to_the_api_roles(presence_db: PresenceDatabase) -> None:
    # realtime.apply_rls keeps, per subscriber role, the columns has_column_privilege()
    # allows, refuses filters on the others, and answers 401 without the primary key.
    authenticated = realtime_columns(presence_db, "authenticated")
    assert "id" in authenticated
    assert not set(PRESENCE_COLUMNS) & set(authenticated)
    assert realtime_columns(presence_db, "anon") == []  # schema.sql grants anon nothing
    assert set(PRESENCE_COLUMNS) <= set(realtime_columns(presence_db, "service_role"))


def test_the_owner_still_sees_every_row_as_the_note_describes(
    presence_db: PresenceDatabase,
) -> None:
    hidden, invisible = presence_db.create_user(), presence_db.create_user()
    for user in (hidden, invisible):
        beat(presence_db, user, new_id())
    set_visibility(presence_db, hidden, presence="nobody", last_seen="nobody")
    set_invisible(presence_db, invisible, True)
    presence_db.query(
        "UPDATE public.users SET last_heartbeat = now() - interval '50 seconds' WHERE id = %s",
        (invisible,),
    )
    listed = {str(r["id"]) for r in presence_db.query(NOTE_AFFECTED_ROWS)}
    assert listed == {invisible}
    rows = presence_db.query(
        "SELECT user_id::text, online FROM public.user_presence ORDER BY user_id"
    )
    assert {r["user_id"]: r["online"] for r in rows} == {hidden: True, invisible: True}


# -- bad input: a clear error and nothing changes --------------------------------------


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"presence": "friends"}, "unknown visibility 'friends' for presence"),
        ({"last_seen": "EVERYONE"}, "unknown visibility 'EVERYONE' for last_seen"),
        ({"presence": "everyone", "last_seen": ""}, "unknown visibility '' for last_seen"),
        ({"presence": "x" * 100_000}, "(100000 characters)"),
    ],
)
def test_unknown_visibility_values(
    presence_db: PresenceDatabase, params: dict[str, Any], words: str
) -> None:
    me = presence_db.create_user()
    set_visibility(presence_db, me, presence="contacts")
    before = privacy_digest(presence_db)
    err = expect_error(presence_db, "presence_set_visibility", params, user_id=me)
    assert (err.status, err.code) == (400, "22023")
    assert words in err.message
    assert len(err.message) < 300
    assert err.hint is not None
    assert "everyone, contacts or nobody" in err.hint
    assert privacy_digest(presence_db) == before


@pytest.mark.parametrize(
    ("fn", "params"),
    [
        ("presence_set_visibility", {"presence": "nobody"}),
        ("presence_set_invisible", {"invisible": True}),
    ],
)
def test_another_users_settings_cannot_be_changed(
    presence_db: PresenceDatabase, fn: str, params: dict[str, Any]
) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    set_visibility(presence_db, other, presence="everyone")
    before = privacy_digest(presence_db)
    err = expect_error(presence_db, fn, {**params, "user_id": other}, user_id=me)
    assert (err.status, err.code) == (403, "42501")
    assert "only change their own privacy settings" in err.message
    assert privacy_digest(presence_db) == before
    # Naming oneself is fine.
    presence_db.rpc(fn, {**params, "user_id": me}, user_id=me)


def test_the_service_role_may_set_any_users_settings(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    got = presence_db.rpc(
        "presence_set_visibility",
        {"presence": "contacts", "user_id": user},
        role="service_role",
    )
    assert (got["presence"], got["last_seen"]) == ("contacts", "everyone")
    ghost = str(uuid.uuid4())
    err = expect_error(
        presence_db,
        "presence_set_invisible",
        {"invisible": True, "user_id": ghost},
        role="service_role",
    )
    assert err.code == "23503"


def test_null_and_unauthenticated_calls(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    before = privacy_digest(presence_db)
    err = expect_error(presence_db, "presence_set_invisible", {"invisible": None}, user_id=me)
    assert (err.code, err.message) == (
        "22023",
        "presence: invisible must be true or false (got NULL)",
    )
    for fn, params in (
        ("presence_set_invisible", {"invisible": True}),
        ("presence_set_visibility", {"presence": "nobody"}),
        ("presence_my_privacy", {}),
    ):
        anon = expect_error(presence_db, fn, params)
        assert (anon.status, anon.code) == (401, "42501"), fn
        # A signed-in role without a user id (a token without "sub").
        nobody = expect_error(presence_db, fn, params, role="authenticated")
        assert (nobody.status, nobody.code) == (403, "28000"), fn
    assert privacy_digest(presence_db) == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO public.presence_privacy (user_id, invisible) VALUES (%(me)s, false)",
        "UPDATE public.presence_privacy SET presence_visibility = 'everyone'",
        "DELETE FROM public.presence_privacy",
        "UPDATE public.users SET status = 'offline' WHERE id = %(me)s",
    ],
)
def test_settings_and_presence_columns_are_not_writable_directly(
    presence_db: PresenceDatabase, statement: str
) -> None:
    me = presence_db.create_user()
    set_visibility(presence_db, me, presence="nobody")
    before = privacy_digest(presence_db)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_api(presence_db, "authenticated", me, statement.replace("%(me)s", f"'{me}'"))
    assert privacy_digest(presence_db) == before


BAD_BATCHES = {
    # case: (build the params from a real user id and an unknown one, code, words)
    "no array": (lambda user, ghost: {"user_ids": None, "invisible": True}, "22023",
                 "must be an array of uuids"),
    "no flag": (lambda user, ghost: {"user_ids": [user], "invisible": None}, "22023",
                "must be true or false"),
    "a null id": (lambda user, ghost: {"user_ids": [user, None], "invisible": True}, "22023",
                  "must not contain null (position 2)"),
    "an unknown user": (lambda user, ghost: {"user_ids": [user, ghost], "invisible": True},
                        "23503", "1 user ids have no public.users row; nothing was changed"),
    "too many": (lambda user, ghost: {"user_ids": [user] * 10_001, "invisible": True}, "22023",
                 "at most 10000 users per call"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_the_batch_rpc_refuses_bad_input_and_changes_nothing(
    presence_db: PresenceDatabase, case: str
) -> None:
    build, code, words = BAD_BATCHES[case]
    user = presence_db.create_user()
    before = privacy_digest(presence_db)
    params = build(user, str(uuid.uuid4()))
    err = expect_error(presence_db, "presence_set_invisible_for", params, role="service_role")
    assert err.code == code
    assert words in err.message
    assert privacy_digest(presence_db) == before


def test_the_batch_rpc_is_for_the_service_role_only(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    err = expect_error(
        presence_db, "presence_set_invisible_for", {"user_ids": [me], "invisible": True}, user_id=me
    )
    assert (err.status, err.code) == (403, "42501")
    done = presence_db.rpc(
        "presence_set_invisible_for", {"user_ids": [me, me], "invisible": True}, role="service_role"
    )
    assert done["changed"] == 1
    again = presence_db.rpc(
        "presence_set_invisible_for", {"user_ids": [me], "invisible": True}, role="service_role"
    )
    assert again["changed"] == 0  # already invisible: the first moment is kept
    assert presence_db.rpc("presence_my_privacy", user_id=me)["invisible"] is True


# -- the hook, fail-closed ---------------------------------------------------------------

BROKEN_HOOKS = {
    "raises": (
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'friends service down'; END$$",
        "failed (SQLSTATE P0001: friends service down)",
    ),
    "returns NULL": (
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql AS 'SELECT NULL::boolean'",
        "returned NULL",
    ),
    "is dropped": (
        "DROP FUNCTION public.presence_can_see(uuid, uuid)",
        "failed (SQLSTATE 42883",
    ),
    "divides by zero": (
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql AS 'SELECT 1 / 0 = 1'",
        "failed (SQLSTATE 22012",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_HOOKS))
def test_a_failing_hook_hides_logs_and_never_answers_500(
    presence_server: PresenceTestServer, presence_db: PresenceDatabase, case: str
) -> None:
    target, friend = presence_db.create_user(), presence_db.create_user()
    install_friendships(presence_db, (target, friend))
    beat(presence_db, target, new_id())
    set_visibility(presence_db, target, presence="contacts", last_seen="contacts")
    assert observe(presence_db, "authenticated", friend, target).online["get"] is True
    statement, logged = BROKEN_HOOKS[case]
    presence_db.query(statement)
    seen = observe(presence_db, "authenticated", friend, target)
    assert set(seen.errors) == {"table"}  # every other path answers
    assert not seen.online_anywhere(), seen.online
    assert set(seen.last_seen.values()) == {None}
    log = presence_server.cluster.server_log()
    assert f"presence: public.presence_can_see({friend}, {target}) {logged}" in log
    # Settings of 'everyone' never call the hook: unaffected.
    set_visibility(presence_db, target, presence="everyone", last_seen="everyone")
    assert observe(presence_db, "authenticated", friend, target).online["is_online"] is True


def test_the_hook_is_called_only_for_contacts_settings(presence_db: PresenceDatabase) -> None:
    presence_db.query("CREATE TABLE public.hook_calls (viewer uuid, target uuid)")
    presence_db.query(
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql VOLATILE AS "
        "'INSERT INTO public.hook_calls VALUES (viewer, target) RETURNING true'"
    )
    users = [presence_db.create_user() for _ in range(3)]
    reader = presence_db.create_user()
    for user in users:
        beat(presence_db, user, new_id())
    set_visibility(presence_db, users[0], presence="contacts", last_seen="contacts")
    presence_db.rpc("presence_get", {"user_ids": users}, user_id=reader)
    calls = presence_db.query("SELECT viewer::text, target::text FROM public.hook_calls")
    # One call, for the one 'contacts' user (not again for its last seen).
    assert calls == [{"viewer": reader, "target": users[0]}]


def test_a_token_without_sub_sees_nobody_as_a_contact(presence_db: PresenceDatabase) -> None:
    target, friend = presence_db.create_user(), presence_db.create_user()
    install_friendships(presence_db, (target, friend))
    beat(presence_db, target, new_id())
    set_visibility(presence_db, target, presence="contacts")
    rows = as_api(
        presence_db,
        "authenticated",
        None,
        "SELECT online FROM public.user_presence WHERE user_id = %s",
        (target,),
    )
    assert rows == [{"online": False}]


def test_time_passing_never_unfreezes_an_invisible_last_seen(presence_db: PresenceDatabase) -> None:
    target, stranger = presence_db.create_user(), presence_db.create_user()
    beat(presence_db, target, new_id())
    set_invisible(presence_db, target, True)
    (first,) = presence_db.rpc("presence_get", {"user_ids": [target]}, user_id=stranger)
    for _ in range(3):
        advance(presence_db, 30)
        beat(presence_db, target, new_id())
        (later,) = presence_db.rpc("presence_get", {"user_ids": [target]}, user_id=stranger)
        assert (later["online"], later["last_seen"]) == (False, first["last_seen"])
