"""The shortcuts the privacy-aware reads take (migration 20240000000007_privacy), real
PostgreSQL: while no user's settings restrict anything, the reads skip the per-user rule
(presence_private.user_presence_all_rows) and presence_counts() skips the per-user checks;
with settings, only the users whose settings can hide them go through the rule. Each
shortcut must answer exactly what the rule answers: checked against a user-by-user
brute force, on the session aggregate (online > busy > away), hand-written rows and
timed-out ones, and on one session whose cached plans outlive a change of settings."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from privacy_support import install_friendships, set_invisible, set_visibility
from psycopg import sql
from sessions_support import new_id

from presence_sdk.testing import PresenceDatabase, call_rpc

pytestmark = pytest.mark.integration

STATUSES = ("online", "away", "busy")


def users(db: PresenceDatabase, n: int) -> list[str]:
    rows = db.query(
        "INSERT INTO auth.users (id) SELECT gen_random_uuid() FROM generate_series(1, %s) "
        "RETURNING id::text",
        (n,),
    )
    return sorted(r["id"] for r in rows)


def world(db: PresenceDatabase) -> dict[str, Any]:
    """40 users: the reader; users online through one or several sessions (the status
    their live sessions aggregate to); hand-written live rows without sessions; stale
    ones; users whose only sessions timed out while their stored row still says
    online. Returns who is what (the truth)."""
    ids = users(db, 40)
    reader, others = ids[0], ids[1:]
    truth: dict[str, str] = {}
    sessions: list[dict[str, str]] = []
    # Several sessions per user: online > busy > away.
    mixes = [("online", "away"), ("busy", "away"), ("away", "away"), ("online", "busy"),
             ("busy",), ("away",), ("online",)]  # fmt: skip
    for user, mix in zip(others[:14], mixes * 2, strict=True):
        for status in mix:
            sessions.append({"session_id": new_id(), "user_id": user, "status": status})
        truth[user] = "online" if "online" in mix else "busy" if "busy" in mix else "away"
    timed_out = others[14:18]
    for user in timed_out:
        sessions.append({"session_id": new_id(), "user_id": user, "status": "online"})
    db.rpc("presence_track_beat", {"sessions": sessions}, role="service_role")
    with db.connect() as conn:
        # Their sessions timed out; the stored row still says online (sweep not run)
        # and was even refreshed by hand: the sessions decide, so they are offline.
        conn.execute(
            "UPDATE public.presence_sessions SET last_beat = now() - interval '1 hour' "
            "WHERE user_id = ANY (%s::uuid[])",
            (timed_out,),
        )
        conn.execute(
            "UPDATE public.users SET status = 'online', last_heartbeat = now() "
            "WHERE id = ANY (%s::uuid[])",
            (timed_out,),
        )
        # Live rows written around the functions (no session): the stored columns.
        for user, status in zip(others[18:24], ("online", "away", "busy") * 2, strict=True):
            conn.execute(
                "UPDATE public.users SET status = %s, last_heartbeat = now(), "
                "online_since = now() WHERE id = %s",
                (status, user),
            )
            truth[user] = status
        conn.execute(  # stale hand-written rows: offline
            "UPDATE public.users SET status = 'online', last_heartbeat = now() - interval '1 hour' "
            "WHERE id = ANY (%s::uuid[])",
            (others[24:28],),
        )
    return {"reader": reader, "users": ids, "truth": truth}


def counts_of(db: PresenceDatabase, viewer: str | None) -> dict[str, int]:
    kwargs: dict[str, Any] = {"user_id": viewer} if viewer else {"role": "service_role"}
    got = db.rpc("presence_counts", **kwargs)
    assert got["offline_estimated"] is False
    return {s: got[s] for s in (*STATUSES, "offline")}


def brute_force(db: PresenceDatabase, viewer: str | None, ids: list[str]) -> dict[str, Any]:
    """Every user through presence_get (more than 16 ids: the bulk read) and one by one
    (the one-id read, and presence_is_online: without the rule's plan for users whose
    settings restrict nothing); all must agree."""
    kwargs: dict[str, Any] = {"user_id": viewer} if viewer else {"role": "service_role"}
    bulk = {r["user_id"]: r for r in db.rpc("presence_get", {"user_ids": ids}, **kwargs)}
    for user in ids:
        (one,) = db.rpc("presence_get", {"user_ids": [user]}, **kwargs)
        assert one == bulk[user]
        assert db.rpc("presence_is_online", {"user_id": user}, **kwargs) is bulk[user]["online"]
    tally = Counter(r["status"] for r in bulk.values())
    return {"rows": bulk, "counts": {s: tally[s] for s in (*STATUSES, "offline")}}


def expected(w: dict[str, Any], hidden: frozenset[str] | set[str] = frozenset()) -> dict[str, int]:
    tally = Counter(status for user, status in w["truth"].items() if user not in hidden)
    present = sum(tally[s] for s in STATUSES)
    return {**{s: tally[s] for s in STATUSES}, "offline": len(w["users"]) - present}


def test_no_settings_reads_and_counts_are_exact(presence_db: PresenceDatabase) -> None:
    """An empty settings table: every read skips the rule, and still answers the truth
    for the reader and for the service role."""
    w = world(presence_db)
    assert presence_db.query("SELECT count(*) AS n FROM public.presence_privacy")[0]["n"] == 0
    want = expected(w)
    for viewer in (w["reader"], None):
        assert counts_of(presence_db, viewer) == want
        assert brute_force(presence_db, viewer, w["users"])["counts"] == want


def test_settings_that_hide_nothing_from_counts(presence_db: PresenceDatabase) -> None:
    """Settings rows that restrict only last seen, or are back to the defaults: counts
    take the path without the per-user rule and count them present; the reads hide
    their last seen (the rule runs: a last-seen setting restricts something)."""
    w = world(presence_db)
    present = sorted(w["truth"])
    quiet, back_to_default = present[:3], present[3:5]
    for user in quiet:
        set_visibility(presence_db, user, last_seen="nobody")
    for user in back_to_default:
        set_visibility(presence_db, user, presence="nobody", last_seen="nobody")
        set_visibility(presence_db, user, presence="everyone", last_seen="everyone")
    want = expected(w)
    assert counts_of(presence_db, w["reader"]) == want
    seen = brute_force(presence_db, w["reader"], w["users"])
    assert seen["counts"] == want
    for user in quiet:
        assert seen["rows"][user]["status"] == w["truth"][user]
        assert seen["rows"][user]["last_seen"] is None
    for user in back_to_default:
        assert seen["rows"][user]["last_seen"] is not None
    # Themselves: the truth, last seen included.
    (own,) = presence_db.rpc("presence_get", {"user_ids": [quiet[0]]}, user_id=quiet[0])
    assert own["last_seen"] is not None


def test_hidden_users_count_as_offline(presence_db: PresenceDatabase) -> None:
    """Invisible, 'nobody' and 'contacts' users count as offline for whoever may not see
    them, and as present for whoever may (themselves, a contact, the service role)."""
    w = world(presence_db)
    present = sorted(w["truth"])
    invisible, nobody, contacts = present[0:2], present[2:4], present[4:7]
    friend = w["users"][-1]  # offline, never hidden
    for user in invisible:
        set_invisible(presence_db, user, True)
    for user in nobody:
        set_visibility(presence_db, user, presence="nobody")
    for user in contacts:
        set_visibility(presence_db, user, presence="contacts")
    install_friendships(presence_db, *((user, friend) for user in contacts))
    hidden = {*invisible, *nobody, *contacts}

    stranger = expected(w, hidden)
    assert counts_of(presence_db, w["reader"]) == stranger
    assert brute_force(presence_db, w["reader"], w["users"])["counts"] == stranger

    as_friend = expected(w, {*invisible, *nobody})
    assert counts_of(presence_db, friend) == as_friend
    assert brute_force(presence_db, friend, w["users"])["counts"] == as_friend

    me = invisible[0]  # sees themselves present, the others hidden from them
    as_me = expected(w, hidden - {me})
    assert counts_of(presence_db, me) == as_me
    assert brute_force(presence_db, me, w["users"])["counts"] == as_me

    assert counts_of(presence_db, None) == expected(w)


def test_counts_apply_the_users_policy_without_settings(presence_db: PresenceDatabase) -> None:
    """A restrictive RLS policy on public.users and no settings: the per-user RLS check
    still runs (the rule is skipped, the policy is not)."""
    w = world(presence_db)
    listed = [*sorted(w["truth"])[:5], w["reader"]]
    with presence_db.connect() as conn:
        conn.execute("CREATE TABLE public.listed (id uuid PRIMARY KEY)")
        conn.execute("INSERT INTO public.listed SELECT unnest(%s::uuid[])", (listed,))
        conn.execute("GRANT SELECT ON public.listed TO authenticated")
        conn.execute(
            "CREATE POLICY only_listed ON public.users AS RESTRICTIVE FOR SELECT "
            "TO authenticated USING (id IN (SELECT l.id FROM public.listed AS l))"
        )
    tally = Counter(w["truth"][u] for u in listed if u in w["truth"])
    got = presence_db.rpc("presence_counts", user_id=w["reader"])
    assert {s: got[s] for s in STATUSES} == {s: tally[s] for s in STATUSES}
    assert got["offline"] == len(listed) - sum(tally.values())


def test_one_session_follows_settings_on_the_next_read(presence_db: PresenceDatabase) -> None:
    """PostgREST keeps its connections: the plans cached in one session (the lookups
    keep a generic plan) must see the shortcut turn on and off with the settings, on
    the bulk lookup, the one-id lookup and presence_is_online (which skip the rule's
    nodes altogether for a user whose settings restrict nothing)."""
    w = world(presence_db)
    target = sorted(w["truth"])[0]
    ids = w["users"]
    claims = {"sub": w["reader"]}
    with presence_db.connect() as conn:

        def rpc(fn: str, args: dict[str, Any]) -> Any:
            return call_rpc(conn, fn, args, role="authenticated", claims=claims)

        def read() -> tuple[str, str, bool, int]:
            rows = rpc("presence_get", {"user_ids": ids})
            (one,) = rpc("presence_get", {"user_ids": [target]})
            online = rpc("presence_is_online", {"user_id": target})
            counts = rpc("presence_counts", {})
            (row,) = [r for r in rows if r["user_id"] == target]
            assert one == row
            return row["status"], one["status"], online, counts[w["truth"][target]]

        status, _, _, counted = read()
        assert status == w["truth"][target]
        shown = (status, status, True, counted)
        hidden = ("offline", "offline", False, counted - 1)
        for _ in range(6):  # past the custom plans: the generic ones are in use
            assert read() == shown
        set_invisible(presence_db, target, True)
        assert read() == hidden
        set_invisible(presence_db, target, False)
        assert read() == shown
        set_visibility(presence_db, target, presence="nobody")
        assert read() == hidden
        set_visibility(presence_db, target, presence="everyone")
        assert read() == shown


def test_one_id_reads_apply_the_users_policy_without_settings(
    presence_db: PresenceDatabase,
) -> None:
    """No settings: the one-id reads skip the rule, never the RLS of public.users (a
    user the caller may not list is left out, and is not online)."""
    w = world(presence_db)
    listed, unlisted = sorted(w["truth"])[:2]
    with presence_db.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE POLICY only_listed ON public.users AS RESTRICTIVE FOR SELECT "
                "TO authenticated USING (id IN ({}::uuid, {}::uuid))"
            ).format(sql.Literal(listed), sql.Literal(w["reader"]))
        )
    (row,) = presence_db.rpc("presence_get", {"user_ids": [listed]}, user_id=w["reader"])
    assert (row["user_id"], row["status"], row["online"]) == (listed, w["truth"][listed], True)
    assert presence_db.rpc("presence_get", {"user_ids": [unlisted]}, user_id=w["reader"]) == []
    assert presence_db.rpc("presence_is_online", {"user_id": listed}, user_id=w["reader"])
    assert not presence_db.rpc("presence_is_online", {"user_id": unlisted}, user_id=w["reader"])
