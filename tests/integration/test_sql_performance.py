"""Heartbeats are HOT updates (not timed: counts what PostgreSQL did, not how fast).

DESIGN.md §2: no index on the beat time, free space on the page (fillfactor), so a
beat writes its new row version on the same page without index maintenance. Since
migration 5 a beat writes the user's session row (public.presence_sessions); the user's
row in public.users is written only at transitions (and when its last_heartbeat needs
a refresh, which a burst of beats within seconds never does).

The measure is pg_stat_user_tables.n_tup_upd / n_tup_hot_upd for both tables over a
burst of 1,000 online users x 10 heartbeats, each its own PostgREST-style transaction
as ``authenticated`` (plain SQL). The round before the burst starts the sessions
(offline -> online): it inserts the session rows and writes each user's transition.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

USERS = 1_000
BEATS = 10
BATCH = 100  # transactions sent per round trip
TABLES = ("public.users", "public.presence_sessions")


def beat_script(user_ids: list[str]) -> str:
    """One explicit transaction per heartbeat, exactly what PostgREST runs."""
    parts = []
    for user in user_ids:
        claims = json.dumps({"role": "authenticated", "sub": user})
        parts.append(
            "BEGIN; SET LOCAL ROLE authenticated; "
            f"SELECT set_config('request.jwt.claims', '{claims}', true); "
            "SELECT public.presence_heartbeat('online'); COMMIT;"
        )
    return "\n".join(parts)


Counters = dict[str, tuple[int, int, int]]  # table -> (inserts, updates, HOT updates)


def counters(db: PresenceDatabase) -> Counters:
    rows = db.query(
        "SELECT relid::regclass::text AS rel, n_tup_ins, n_tup_upd, n_tup_hot_upd "
        "FROM pg_stat_user_tables WHERE relid = ANY (%s::regclass[])",
        (list(TABLES),),
    )
    return {
        f"public.{r['rel'].removeprefix('public.')}": (
            r["n_tup_ins"],
            r["n_tup_upd"],
            r["n_tup_hot_upd"],
        )
        for r in rows
    }


def flushed_counters(db: PresenceDatabase, conn: psycopg.Connection[Any], writes: int) -> Counters:
    """PG15 flushes backend stats lazily: force it, then wait until ``writes`` more
    session writes (inserts + updates) than before are visible."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    deadline = time.monotonic() + 10
    found = counters(db)
    while sum(found["public.presence_sessions"][:2]) < writes and time.monotonic() < deadline:
        time.sleep(0.05)
        conn.execute("SELECT pg_stat_force_next_flush()")
        found = counters(db)
    return found


def delta(after: Counters, before: Counters, table: str) -> tuple[int, int, int]:
    a, b = after[table], before[table]
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def test_heartbeat_burst_is_hot(presence_db: PresenceDatabase) -> None:
    # A beat refreshes users.last_heartbeat once it is timeout - 2 x interval old (15 s
    # by default); a long timeout keeps the burst clear of that however slow the machine.
    presence_db.query("SELECT public.presence_configure(timeout_seconds => 600)")
    with presence_db.connect() as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "INSERT INTO auth.users (email) "
                "SELECT 'hot' || i || '@example.test' FROM generate_series(1, %s) AS i "
                "RETURNING id",
                (USERS,),
            ).fetchall()
        ]
        assert conn.execute("SELECT count(*) FROM public.users").fetchone() == (USERS,)
        options = conn.execute(
            "SELECT relname, reloptions FROM pg_class WHERE oid = ANY (%s::regclass[]) "
            "ORDER BY relname",
            (list(TABLES),),
        ).fetchall()
        assert options == [("presence_sessions", ["fillfactor=50"]), ("users", ["fillfactor=70"])]
        indexed = conn.execute(
            "SELECT count(*) FROM pg_index AS i JOIN pg_attribute AS a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "WHERE (i.indrelid = 'public.users'::regclass AND a.attname = 'last_heartbeat') "
            "OR (i.indrelid = 'public.presence_sessions'::regclass "
            "    AND a.attname IN ('last_beat', 'status', 'started_at'))"
        ).fetchone()
        assert indexed == (0,)

        start = flushed_counters(presence_db, conn, 0)
        base = sum(start["public.presence_sessions"][:2])
        # Round 0 starts every session: one session insert and one users transition
        # (offline -> online moves the row into the partial index
        # users_presence_active_idx, which can never be a HOT update).
        # Rounds 1..BEATS are the burst of heartbeats from online users.
        rounds: list[Counters] = []
        for n in range(1 + BEATS):
            for i in range(0, USERS, BATCH):
                conn.execute(beat_script(ids[i : i + BATCH]))
            rounds.append(flushed_counters(presence_db, conn, base + USERS * (n + 1)))

    sessions_start = delta(rounds[0], start, "public.presence_sessions")
    users_start = delta(rounds[0], start, "public.users")
    sessions_burst = delta(rounds[-1], rounds[0], "public.presence_sessions")
    users_burst = delta(rounds[-1], rounds[0], "public.users")
    burst = sessions_burst[2] / sessions_burst[1]
    print(
        f"\n{USERS} online users x {BEATS} heartbeats: presence_sessions "
        f"{sessions_burst[1]} updates, {burst:.1%} HOT; public.users {users_burst[1]} updates. "
        f"Session starts: {sessions_start[0]} session inserts, {users_start[1]} users updates"
    )
    assert sessions_start == (USERS, 0, 0)
    assert users_start[:2] == (0, USERS)  # the transitions, one per user
    assert sessions_burst[:2] == (0, USERS * BEATS)
    assert burst >= 0.9
    # Steady beats long before a refresh is due never write public.users.
    assert users_burst == (0, 0, 0)
    assert presence_db.query("SELECT count(*) AS n FROM public.users WHERE status = 'online'") == [
        {"n": USERS}
    ]
