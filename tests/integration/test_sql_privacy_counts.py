"""presence_counts() with privacy (migration 20240000000007_privacy), real PostgreSQL:
online, away and busy exact as the caller may see them, checked against a brute-force
count; offline exact on a small table, estimated (and flagged) beyond 10,000 users; the
RLS of public.users respected whether or not its policies list every user."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from privacy_support import install_friendships

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

STATUSES = ("online", "away", "busy")


def bulk_users(db: PresenceDatabase, n: int) -> list[str]:
    """``n`` users (auth + public rows through the sign-up trigger), in one statement."""
    rows = db.query(
        "INSERT INTO auth.users (id) SELECT gen_random_uuid() FROM generate_series(1, %s) "
        "RETURNING id::text",
        (n,),
    )
    return [r["id"] for r in rows]


def arrange(db: PresenceDatabase, n: int, seed: int) -> dict[str, Any]:
    """n users: some online through sessions (any status), some 0.1.0 rows written by
    hand, some timed out; settings of every kind. Returns what each user is."""
    rng = random.Random(seed)
    users = bulk_users(db, n)
    reader = users[0]
    online: dict[str, str] = {}
    sessions = []
    for user in rng.sample(users[1:], min(600, n // 10)):
        status = rng.choice(STATUSES)
        online[user] = status
        sessions.append({"session_id": user, "user_id": user, "status": status})
    db.rpc("presence_track_beat", {"sessions": sessions}, role="service_role")
    legacy = [u for u in users[1:] if u not in online][:40]
    for user in legacy[:30]:  # live rows written around the functions
        online[user] = "busy"
    db.query(
        "UPDATE public.users SET status = 'busy', last_heartbeat = now(), online_since = now() "
        "WHERE id = ANY (%s::uuid[])",
        (legacy[:30],),
    )
    db.query(  # stale: timed out, not swept
        "UPDATE public.users SET status = 'online', last_heartbeat = now() - interval '1 hour' "
        "WHERE id = ANY (%s::uuid[])",
        (legacy[30:],),
    )
    present = list(online)
    rng.shuffle(present)
    nobody, contacts, contacts_friend, invisible = (
        present[:40],
        present[40:80],
        present[80:100],
        present[100:130],
    )
    settings = [(u, "nobody") for u in nobody] + [
        (u, "contacts") for u in contacts + contacts_friend
    ]
    for user, rule in settings:
        db.query(
            "INSERT INTO public.presence_privacy (user_id, presence_visibility) VALUES (%s, %s)",
            (user, rule),
        )
    install_friendships(db, *((u, reader) for u in contacts_friend))
    db.rpc("presence_set_invisible_for", {"user_ids": invisible, "invisible": True},
           role="service_role")  # fmt: skip
    hidden = set(nobody) | set(contacts) | set(invisible)
    seen = Counter(status for user, status in online.items() if user not in hidden)
    return {"users": users, "reader": reader, "online": online, "seen": seen}


def brute_force(db: PresenceDatabase, reader: str) -> dict[str, int]:
    """Every user read one by one through presence_get, as the reader (1000 per call)."""
    (users,) = db.query("SELECT array_agg(id::text) AS ids FROM public.users")
    counted: Counter[str] = Counter()
    ids = users["ids"]
    for start in range(0, len(ids), 1000):
        for row in db.rpc("presence_get", {"user_ids": ids[start : start + 1000]}, user_id=reader):
            counted[row["status"]] += 1
    return {s: counted[s] for s in (*STATUSES, "offline")}


@pytest.mark.parametrize(("n", "estimated"), [(3_000, False), (12_000, True)])
def test_counts_match_a_brute_force_count(
    presence_db: PresenceDatabase, n: int, estimated: bool
) -> None:
    world = arrange(presence_db, n, seed=n)
    presence_db.query("ANALYZE public.users")
    counts = presence_db.rpc("presence_counts", user_id=world["reader"])
    expected = brute_force(presence_db, world["reader"])
    assert {s: counts[s] for s in STATUSES} == {s: expected[s] for s in STATUSES}
    assert {s: counts[s] for s in STATUSES} == {s: world["seen"][s] for s in STATUSES}
    assert counts["offline_estimated"] is estimated
    if estimated:
        # From the table statistics (exact right after ANALYZE, as here).
        assert abs(counts["offline"] - expected["offline"]) <= n // 100
    else:
        assert counts["offline"] == expected["offline"]
    # The service role counts the truth.
    truth = presence_db.rpc("presence_counts", role="service_role")
    assert sum(truth[s] for s in STATUSES) == len(world["online"])


def test_counts_respect_a_restrictive_users_policy(presence_db: PresenceDatabase) -> None:
    """An app whose RLS shows a user only some users: every read, counts included,
    checks each user as the caller (no shortcut)."""
    users = bulk_users(presence_db, 50)
    reader = users[0]
    presence_db.rpc(
        "presence_track_beat",
        {"sessions": [{"session_id": u, "user_id": u} for u in users[1:]]},
        role="service_role",
    )
    presence_db.query("UPDATE public.users SET display_name = 'team' WHERE id = ANY (%s::uuid[])",
                      (users[:11],))  # fmt: skip
    presence_db.query(
        "DROP POLICY users_select_authenticated ON public.users; "
        "CREATE POLICY users_select_team ON public.users FOR SELECT TO authenticated "
        "USING (display_name = 'team')"
    )
    counts = presence_db.rpc("presence_counts", user_id=reader)
    assert (counts["online"], counts["offline"], counts["offline_estimated"]) == (10, 1, False)
    listed = presence_db.rpc("presence_list_online", {"page_size": 1000}, user_id=reader)
    assert {r["user_id"] for r in listed} == set(users[1:11])
    got = presence_db.rpc("presence_get", {"user_ids": users}, user_id=reader)
    assert {r["user_id"] for r in got} == set(users[:11])
    # A restrictive policy also turns the shortcut off.
    presence_db.query(
        "DROP POLICY users_select_team ON public.users; "
        "CREATE POLICY users_select_all ON public.users FOR SELECT TO authenticated USING (true); "
        "CREATE POLICY users_not_team ON public.users AS RESTRICTIVE FOR SELECT TO authenticated "
        "USING (display_name IS DISTINCT FROM 'team')"
    )
    counts = presence_db.rpc("presence_counts", user_id=reader)
    assert (counts["online"], counts["offline"]) == (39, 0)
    assert presence_db.rpc("presence_is_online", {"user_id": users[1]}, user_id=reader) is False
