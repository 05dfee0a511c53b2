"""Heartbeats are HOT updates (not timed: counts what PostgreSQL did, not how fast).

DESIGN.md §2: no index on last_heartbeat, free space on the page (fillfactor), so a
heartbeat writes its new row version on the same page without index maintenance.
The measure is pg_stat_user_tables.n_tup_hot_upd / n_tup_upd for public.users over
a burst of 1,000 online users x 10 heartbeats, each its own PostgREST-style
transaction as ``authenticated`` (plain SQL). The round before the burst starts the
sessions (offline -> online): those updates change the partial index's predicate
column and can never be HOT; they are reported separately.
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


def update_counters(db: PresenceDatabase) -> tuple[int, int]:
    rows = db.query(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE relid = 'public.users'::regclass"
    )
    return rows[0]["n_tup_upd"], rows[0]["n_tup_hot_upd"]


def flushed_counters(
    db: PresenceDatabase, conn: psycopg.Connection[Any], at_least: int
) -> tuple[int, int]:
    """PG15 flushes backend stats lazily: force it, then wait until they are visible."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    deadline = time.monotonic() + 10
    counters = update_counters(db)
    while counters[0] < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
        conn.execute("SELECT pg_stat_force_next_flush()")
        counters = update_counters(db)
    return counters


def test_heartbeat_burst_is_hot(presence_db: PresenceDatabase) -> None:
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
        fillfactor = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'public.users'::regclass"
        ).fetchone()
        assert fillfactor == (["fillfactor=70"],)
        indexed = conn.execute(
            "SELECT count(*) FROM pg_index AS i JOIN pg_attribute AS a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "WHERE i.indrelid = 'public.users'::regclass AND a.attname = 'last_heartbeat'"
        ).fetchone()
        assert indexed == (0,)

        start_upd, start_hot = flushed_counters(presence_db, conn, 0)
        # Round 0 starts every session: offline -> online moves the row into the
        # partial index users_presence_active_idx, which can never be a HOT update.
        # Rounds 1..BEATS are the burst of heartbeats from online users.
        rounds: list[tuple[int, int]] = []
        for n in range(1 + BEATS):
            for i in range(0, USERS, BATCH):
                conn.execute(beat_script(ids[i : i + BATCH]))
            rounds.append(flushed_counters(presence_db, conn, start_upd + USERS * (n + 1)))

    total_upd, total_hot = rounds[-1][0] - start_upd, rounds[-1][1] - start_hot
    assert total_upd == USERS * (1 + BEATS)
    start_sessions_upd, start_sessions_hot = rounds[0][0] - start_upd, rounds[0][1] - start_hot
    burst_upd = total_upd - start_sessions_upd
    burst_hot = total_hot - start_sessions_hot
    burst = burst_hot / burst_upd
    print(
        f"\nHOT updates of public.users, {USERS} online users x {BEATS} heartbeats: "
        f"{burst:.1%} ({burst_hot}/{burst_upd}); session starts (offline -> online): "
        f"{start_sessions_hot}/{start_sessions_upd} HOT; all {total_upd} updates: "
        f"{total_hot / total_upd:.1%}"
    )
    assert burst_upd == USERS * BEATS
    assert burst >= 0.9
    assert presence_db.query("SELECT count(*) AS n FROM public.users WHERE status = 'online'") == [
        {"n": USERS}
    ]
