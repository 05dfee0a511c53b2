#!/usr/bin/env python3
"""Benchmark of presence sessions (migration 5), part of ``make bench``.

One run starts ONE throwaway, durable PostgreSQL 15 cluster and measures, side by side
and in the same PostgREST envelope as ``bench_sql.py`` (``BEGIN; SET LOCAL ROLE ...;
set_config('request.jwt.claims', ...); SELECT <rpc> FROM json_to_record(<body>); COMMIT``):

1. **Steady cadence.** Every session beats once per round, rounds one heartbeat
   interval +- 10 % apart (time is shifted between rounds, corrected for the real time
   that passed, so the last_heartbeat throttle sees the gaps of a real client). The
   timings are the defaults scaled by ten (interval 150 s, timeout 450 s): the rule
   only depends on their ratios, and the seconds a round itself takes are then small
   against the jitter. Five designs, each in its
   own database, rounds interleaved: 0.1.0's per-user ``presence_heartbeat`` on a
   0.1.0 database (migrations 1-3), the per-session ``presence_session_beat``, 0.1.0's
   RPC on its implicit session after the upgrade, and the service-role batch
   ``presence_track_beat`` with 1,000 and 10,000 sessions per call. Per design:
   sessions/s, server CPU and WAL per session beat, HOT share of every table written,
   writes to public.users per steady beat.
2. **Sweep scaling.** ``mark_inactive_users_offline()`` (steady state: nothing timed
   out) at 100k and 1M users with 10k and with 100k live sessions: mean time and
   buffers, the databases alternating run by run.

Prints a table with the targets, writes ``bench/results/sessions.json`` and rewrites
the ``sessions_*`` blocks of docs/performance.md (``--update-docs``, full runs only).

Usage::

    python bench/bench_sessions.py              # full run, a few minutes
    python bench/bench_sessions.py --quick      # smoke run, under a minute
    python bench/bench_sessions.py --render-only bench/results/sessions.json --update-docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from presence_sdk import migrations, schema_sql
from presence_sdk.testing import PostgresCluster, PresenceTestServer, install_supabase_shim

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sessions_report as report  # sibling modules of this script
import bench_sql as base

REPO = base.REPO
RESULTS_DIR = base.RESULTS_DIR

# User k has the uuid UUID_PREFIX || (UUID_BASE + k) (bench_sql's scheme); its session
# has the same digits under SESSION_PREFIX.
SESSION_PREFIX = "00000000-0000-4000-9000-"
# The default timings (interval 15 s, timeout 45 s) scaled by TIME_SCALE: a round of
# 30,000 beats takes a few seconds, and how much that varies from round to round must
# stay small against the jitter (+- 10 % of the interval), or the simulated gaps drift
# past the refresh threshold (timeout - 2 x interval = one interval) together.
TIME_SCALE = 10
INTERVAL_S = 15.0 * TIME_SCALE
TIMEOUT_S = 45 * TIME_SCALE
JITTER = 0.1


def session_sql(k: str) -> str:
    """SQL expression for the session uuid of user number ``k``."""
    return f"('{SESSION_PREFIX}' || ({base.UUID_BASE} + ({k})))::uuid"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class SessionsConfig:
    mode: str
    cadence_users: int
    rounds: int  # round 1 starts the sessions, round 2 warms up; rounds 3.. are measured
    clients: int
    sweep_sizes: tuple[tuple[int, int], ...]  # (users, live sessions)
    # The comparison: 10x the users with 10x the live sessions, judged per live
    # session (the sweep must cost in proportion to live sessions, not users).
    sweep_pair: tuple[tuple[int, int], tuple[int, int]]
    sweep_runs: int


FULL = SessionsConfig(
    mode="full",
    cadence_users=30_000,
    rounds=7,
    clients=8,
    sweep_sizes=((100_000, 10_000), (1_000_000, 10_000), (1_000_000, 100_000)),
    sweep_pair=((100_000, 10_000), (1_000_000, 100_000)),
    sweep_runs=60,
)

QUICK = SessionsConfig(
    mode="quick",
    cadence_users=10_000,
    rounds=4,
    clients=4,
    sweep_sizes=((10_000, 1_000), (100_000, 1_000), (100_000, 10_000)),
    sweep_pair=((10_000, 1_000), (100_000, 10_000)),
    sweep_runs=10,
)


# ------------------------------------------------------------------------- designs


def user_envelope(call: str) -> str:
    """A signed-in user's request (bench_sql's envelope, body decoded like PostgREST)."""
    return base.SEQUENTIAL_USER + base.postgrest_envelope(call)


SERVICE_ENVELOPE = (
    "BEGIN;\nSET LOCAL ROLE service_role;\n"
    "SELECT set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true);\n"
    "{call}\nCOMMIT;\n"
)


@dataclass(frozen=True)
class Design:
    """One way of beating every session once per round."""

    key: str
    label: str
    description: str
    batch: int  # sessions per request
    legacy: bool = False  # runs on a 0.1.0 database (migrations 1-3)
    # False: before each round the sessions' refreshed_at is set to the round's start,
    # so no beat of the round is due to refresh users.last_heartbeat: the session's own
    # cost.
    refresh: bool = True

    def script(self) -> str:
        if self.key in {"heartbeat_010", "heartbeat_implicit"}:
            return user_envelope(
                "SELECT public.presence_heartbeat(_a.new_status) "
                'FROM json_to_record(\'{"new_status":"online"}\'::json) AS _a (new_status text);'
            )
        if self.key in {"session_beat", "session_beat_no_refresh"}:
            body = (
                f'(\'{{"session_id":"{SESSION_PREFIX}\' || :uid || '
                '\'","new_status":"online"}\')::json'
            )
            return user_envelope(
                "SELECT public.presence_session_beat(_a.session_id, _a.new_status) "
                f"FROM json_to_record({body}) AS _a (session_id uuid, new_status text);"
            )
        # Batches: each request carries one stored body (as a tracker would send it);
        # fetched with \gset before the request's transaction.
        fetch = (
            "\\set bid (:client_id + :nclients * :seq) % :nbatches\n\\set seq :seq + 1\n"
            "SELECT body FROM public.bench_batches WHERE id = :bid \\gset\n"
        )
        call = (
            "SELECT public.presence_track_beat(_a.sessions) "
            "FROM json_to_record(:body::json) AS _a (sessions jsonb);"
        )
        return fetch + SERVICE_ENVELOPE.replace("{call}", call)


DESIGNS = (
    Design(
        "heartbeat_010",
        "0.1.0 per-user heartbeat",
        "presence_heartbeat('online') on a 0.1.0 database (migrations 1-3): one UPDATE of "
        "the user's row per beat - today's baseline",
        1,
        legacy=True,
    ),
    Design(
        "session_beat",
        "per-session beat",
        "presence_session_beat(session_id, 'online') as the signed-in user: one session per "
        "user, each its own request",
        1,
    ),
    Design(
        "session_beat_no_refresh",
        "per-session beat, no refresh due",
        "the same requests as the per-session beat, with every session's record of its "
        "last refresh (refreshed_at) set to the start of the round: no beat refreshes "
        "public.users, "
        "so this is what the session itself costs (not a real cadence: it shows the "
        "share of the seed contract's refresh in the per-session beat)",
        1,
        refresh=False,
    ),
    Design(
        "heartbeat_implicit",
        "0.1.0 RPC after the upgrade",
        "presence_heartbeat('online') on the sessions schema: the user's implicit session",
        1,
    ),
    Design(
        "track_1000",
        "batch, 1,000 per call",
        "presence_track_beat(sessions) as service_role, 1,000 sessions of 1,000 users per call",
        1_000,
    ),
    Design(
        "track_10000",
        "batch, 10,000 per call",
        "presence_track_beat(sessions) as service_role, 10,000 sessions per call",
        10_000,
    ),
)


# ----------------------------------------------------------------------- databases


def create_legacy_database(cluster: PostgresCluster, dbname: str) -> None:
    """A database at 0.1.0: shim, schema.sql and migrations 1-3."""
    cluster.create_database(dbname)
    with base.connect(cluster, dbname) as conn:
        install_supabase_shim(conn)
        conn.execute(schema_sql())
        for migration in migrations():
            if migration.name == "sessions":
                break
            conn.execute(migration.up)


def store_batches(conn: psycopg.Connection[Any], n: int, size: int) -> int:
    """Request bodies of ``size`` sessions each, as JSON text (the HTTP body)."""
    conn.execute("CREATE TABLE public.bench_batches (id integer PRIMARY KEY, body text NOT NULL)")
    conn.execute(
        f"""
        INSERT INTO public.bench_batches (id, body)
        SELECT (g - 1) / {size},
               jsonb_build_object('sessions', jsonb_agg(jsonb_build_object(
                   'session_id', {session_sql("g")},
                   'user_id', {base.uuid_sql("g")},
                   'status', 'online') ORDER BY g))::text
        FROM generate_series(1, {n}) AS g
        GROUP BY (g - 1) / {size}
        """
    )
    row = conn.execute("SELECT count(*) FROM public.bench_batches").fetchone()
    assert row is not None
    return int(row[0])


# Before each steady round every user's stored beat times are moved so that their
# next beat (at their usual position in the round) comes one interval +- 10 % after
# the last one: age at the round's start = gap - position x round duration. The jitter
# of each user's beats is independent from round to round, as a real client's is (a
# hash of user and round; a linear formula made a user's gaps nearly the same in every
# round, so the same users were due for a refresh round after round). One delta per user,
# applied to all their presence timestamps (sessions and users row alike). The round
# starts `lag` seconds after the shift's now() (the shift itself takes about a second
# at 30,000 users): uncorrected, every gap would come out that much longer, and with
# the refresh threshold at exactly one interval nearly every beat would be due.
_K = f"((right(%s::text, 12))::bigint - {base.UUID_BASE})"
_DELTA = (
    "{beat} - (now() + make_interval(secs => %(lag)s) - make_interval(secs => %(gap)s"
    " + %(jitter)s * ((abs(hashint8(({k}) * 1000 + %(round)s)::bigint) %% 201) - 100) / 100.0"
    " - %(duration)s * (({k}) - 1) / %(users)s::float))"
)
SHIFT_SESSIONS = f"""
    WITH d AS (
        SELECT s.user_id, {_DELTA.format(beat="s.last_beat", k=_K % "s.user_id")} AS delta
        FROM public.presence_sessions AS s
    ),
    moved AS (
        UPDATE public.presence_sessions AS s
        SET last_beat = s.last_beat - d.delta, started_at = s.started_at - d.delta,
            refreshed_at = s.refreshed_at - d.delta
        FROM d WHERE s.user_id = d.user_id
    )
    UPDATE public.users AS u
    SET last_heartbeat = u.last_heartbeat - d.delta, online_since = u.online_since - d.delta
    FROM d WHERE u.id = d.user_id
"""
# The same shift, then every session's record of its last refresh (and the stored
# last_heartbeat) at now(): no beat of the round is due to refresh public.users
# (design session_beat_no_refresh).
SHIFT_SESSIONS_NO_REFRESH = SHIFT_SESSIONS.replace(
    "refreshed_at = s.refreshed_at - d.delta", "refreshed_at = now()"
).replace("SET last_heartbeat = u.last_heartbeat - d.delta", "SET last_heartbeat = now()")
assert SHIFT_SESSIONS_NO_REFRESH != SHIFT_SESSIONS
SHIFT_USERS = f"""
    UPDATE public.users AS u
    SET last_heartbeat = u.last_heartbeat - d.delta, online_since = u.online_since - d.delta
    FROM (
        SELECT u.id, {_DELTA.format(beat="u.last_heartbeat", k=_K % "u.id")} AS delta
        FROM public.users AS u WHERE u.status <> 'offline'
    ) AS d
    WHERE u.id = d.id
"""


def shift_time(
    conn: psycopg.Connection[Any],
    *,
    legacy: bool,
    rnd: int,
    duration: float,
    users: int,
    lag: float,
    refresh: bool = True,
) -> None:
    """Make each user's next beat come 15 s +- 10 % after their last one.

    ``duration``: how long this design's previous round took (a user near the end of
    the round beats that much later than one at its start). ``lag``: how long after
    the shift's start the round started last time.
    """
    params = {
        "lag": lag,
        "gap": INTERVAL_S,
        "jitter": INTERVAL_S * JITTER,
        "round": rnd,
        "duration": duration,
        "users": users,
    }
    if legacy:
        conn.execute(SHIFT_USERS, params)
    else:
        conn.execute(SHIFT_SESSIONS if refresh else SHIFT_SESSIONS_NO_REFRESH, params)


# ------------------------------------------------------------------ phase: cadence


def cadence_phase(
    cfg: SessionsConfig, cluster: PostgresCluster, bench: base.Pgbench, dbs: dict[str, str]
) -> dict[str, Any]:
    assert cluster.datadir is not None
    cpu = base.CpuMeter(cluster.datadir)
    n = cfg.cadence_users
    tables = ("public.users", "public.presence_sessions")
    runs: list[dict[str, Any]] = []
    duration: dict[str, float] = {}
    lag: dict[str, float] = {}
    nbatches = {d.key: -(-n // d.batch) for d in DESIGNS}
    with base.connect(cluster, "postgres") as idle_conn:
        conns = {d.key: base.connect(cluster, dbs[d.key]) for d in DESIGNS}
        try:
            for rnd in range(1, cfg.rounds + 1):
                for d in DESIGNS:
                    conn = conns[d.key]
                    mine = tables[:1] if d.legacy else tables
                    if rnd > 1:
                        # Dead row versions of the previous round and of the time shift
                        # are an artefact of the simulation (a real server spreads the
                        # beats over 15 s and autovacuum keeps up): clean them first.
                        conn.execute("VACUUM " + ", ".join(mine))
                    base.wait_idle(idle_conn)
                    shifted_at = time.monotonic()
                    if rnd > 1:
                        shift_time(
                            conn,
                            legacy=d.legacy,
                            rnd=rnd,
                            duration=duration[d.key],
                            lag=lag.get(d.key, 0.0),
                            users=n,
                            refresh=d.refresh,
                        )
                    before = {t: base.table_stats(conn, t) for t in mine}
                    wal0, server0 = base.wal_stats(conn), cpu.server_seconds()
                    # Every session beats exactly once: as many clients as divide the
                    # requests of a round evenly.
                    clients = max(c for c in range(1, cfg.clients + 1) if nbatches[d.key] % c == 0)
                    per_client = nbatches[d.key] // clients
                    lag[d.key] = time.monotonic() - shifted_at  # for the next round's shift
                    res = bench.run(
                        f"cadence_{d.key}",
                        d.script(),
                        dbs[d.key],
                        clients=clients,
                        transactions=per_client,
                        defines={
                            "nusers": n,
                            "nclients": clients,
                            "seq": 0,
                            "nbatches": nbatches[d.key],
                        },
                    )
                    duration[d.key] = res.seconds
                    base.wait_idle(idle_conn)
                    wal1, server1 = base.wal_stats(conn), cpu.server_seconds()
                    after = {}
                    for t in mine:
                        # Stats of exited backends are flushed when they exit: wait.
                        after[t] = base.table_stats(conn, t)
                    sessions = res.transactions * d.batch
                    writes = {
                        t: {
                            "updates": after[t].n_tup_upd - before[t].n_tup_upd,
                            "hot_updates": after[t].n_tup_hot_upd - before[t].n_tup_hot_upd,
                        }
                        for t in mine
                    }
                    runs.append(
                        {
                            "design": d.key,
                            "round": rnd,
                            "ok": res.ok,
                            "error": res.error,
                            "requests": res.transactions,
                            "sessions": sessions,
                            "seconds": res.seconds,
                            "tps": res.tps,
                            "sessions_per_s": res.tps * d.batch,
                            "server_cpu_us_per_session": base.ratio(
                                (server1 - server0) * 1e6, sessions
                            ),
                            "wal_bytes_per_session": base.ratio(wal1.lsn - wal0.lsn, sessions),
                            "writes": writes,
                            "loadavg_1m": os.getloadavg()[0],
                        }
                    )
                    status = "ok" if res.ok else f"FAILED: {res.error}"
                    users_w = writes["public.users"]["updates"]
                    print(
                        f"  round {rnd} {d.key:<20} {sessions:>7} beats "
                        f"{res.tps * d.batch:>10,.0f} sessions/s "
                        f"{runs[-1]['server_cpu_us_per_session'] or 0:>8.1f} µs CPU/beat "
                        f"users writes {users_w:>6}  {status}",
                        flush=True,
                    )
            checks = {d.key: final_state(conns[d.key], n, legacy=d.legacy) for d in DESIGNS}
        finally:
            for conn in conns.values():
                conn.close()
    return {
        "users": n,
        "rounds": cfg.rounds,
        "clients": cfg.clients,
        "interval_s": INTERVAL_S,
        "timeout_s": TIMEOUT_S,
        "jitter": JITTER,
        "designs": [asdict(d) | {"script": d.script()} for d in DESIGNS],
        "runs": runs,
        "summary": summarize(runs),
        "final_state": checks,
    }


def final_state(conn: psycopg.Connection[Any], n: int, *, legacy: bool) -> dict[str, Any]:
    """After the last round everyone must be online (the beats really happened)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'online'), "
        + ("0" if legacy else "(SELECT count(*) FROM public.presence_sessions)")
        + " FROM public.users"
    ).fetchone()
    assert row is not None
    return {"online_users": int(row[0]), "sessions": int(row[1]), "expected": n}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in DESIGNS:
        # Round 2 is a warm-up: its gaps follow the (slow) start round.
        steady = [r for r in runs if r["design"] == d.key and r["round"] > 2]
        start = [r for r in runs if r["design"] == d.key and r["round"] == 1]
        good = [r for r in steady if r["ok"]]
        if not good:
            out[d.key] = {"ok": False}
            continue

        def med(key: str, rows: list[dict[str, Any]] = good) -> float | None:
            values = [r[key] for r in rows if r[key] is not None]
            return statistics.median(values) if values else None

        tables: dict[str, Any] = {}
        for table in good[0]["writes"]:
            upd = sum(r["writes"][table]["updates"] for r in good)
            hot = sum(r["writes"][table]["hot_updates"] for r in good)
            tables[table] = {
                "updates": upd,
                "hot_updates": hot,
                "hot_pct": base.pct(hot, upd),
                "updates_per_beat": upd / sum(r["sessions"] for r in good),
            }
        out[d.key] = {
            "ok": len(good) == len(steady) and all(r["ok"] for r in start),
            "steady_rounds": len(good),
            "sessions_per_round": good[0]["sessions"],
            "sessions_per_s": med("sessions_per_s"),
            "server_cpu_us_per_session": med("server_cpu_us_per_session"),
            "wal_bytes_per_session": med("wal_bytes_per_session"),
            "tables": tables,
            "start": {
                "sessions_per_s": start[0]["sessions_per_s"] if start else None,
                "server_cpu_us_per_session": start[0]["server_cpu_us_per_session"]
                if start
                else None,
                "users_updates": start[0]["writes"]["public.users"]["updates"] if start else None,
            },
        }
    return out


# -------------------------------------------------------------------- phase: sweep


def load_sessions(conn: psycopg.Connection[Any], n: int, live: int) -> None:
    """``n`` users, ``live`` of them online with one session each (bench_sql's loader)."""
    base.load_users(conn, n, online=live)
    conn.execute("VACUUM (ANALYZE)")


def sweep_phase(
    cfg: SessionsConfig, cluster: PostgresCluster, dbs: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    targets: list[base.Target] = []
    out: dict[str, Any] = {}
    try:
        for dbname, (users, _) in dbs.items():
            conn = base.connect(cluster, dbname)
            viewer = conn.execute(
                "SELECT user_id::text FROM public.presence_sessions LIMIT 1"
            ).fetchone()
            assert viewer is not None
            targets.append(base.Target(dbname, dbname, users, conn, str(viewer[0])))
        sweep = base.measure_call(
            targets,
            "SELECT public.mark_inactive_users_offline()",
            runs=cfg.sweep_runs,
            as_user=False,
        )
        listing = base.measure_call(
            targets,
            "SELECT * FROM public.presence_list_online(100, NULL)",
            runs=cfg.sweep_runs,
            as_user=True,
        )
        for t in targets:
            users, live = dbs[t.key]
            sizes = t.conn.execute(
                "SELECT pg_total_relation_size('public.presence_sessions'), "
                "(SELECT count(*) FROM public.presence_sessions)"
            ).fetchone()
            assert sizes is not None
            out[t.key] = {
                "users": users,
                "live_sessions": int(sizes[1]),
                "sessions_bytes": int(sizes[0]),
                "sweep": sweep[t.key],
                "list_online": listing[t.key],
            }
            print(
                f"  {users:>9,} users {live:>7,} sessions: sweep "
                f"{sweep[t.key]['mean_ms']:.2f} ms / {sweep[t.key]['buffers']:.0f} buf, "
                f"list {listing[t.key]['mean_ms']:.3f} ms",
                flush=True,
            )
    finally:
        for t in targets:
            t.conn.close()
    return out


# ------------------------------------------------------------------------- targets


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    s = res["cadence"]["summary"]

    def value(key: str, metric: str) -> float | None:
        v = s.get(key, {}).get(metric)
        return float(v) if v is not None else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    per_session = value("session_beat", "sessions_per_s")
    targets: list[tuple[str, str, float | None, str, str, float]] = [
        (
            "batch_1000_vs_session",
            "sessions/s: batch of 1,000 per call / per-session RPC",
            div(value("track_1000", "sessions_per_s"), per_session),
            "x",
            ">=",
            10.0,
        ),
        (
            "batch_10000_vs_session",
            "sessions/s: batch of 10,000 per call / per-session RPC",
            div(value("track_10000", "sessions_per_s"), per_session),
            "x",
            ">=",
            10.0,
        ),
        (
            "session_cpu_vs_010",
            "server CPU per beat: per-session RPC / 0.1.0 per-user heartbeat",
            div(
                value("session_beat", "server_cpu_us_per_session"),
                value("heartbeat_010", "server_cpu_us_per_session"),
            ),
            "x",
            "<=",
            1.15,
        ),
        (
            "session_cpu_no_refresh_vs_010",
            "server CPU per beat: per-session RPC with no refresh due / 0.1.0 per-user "
            "heartbeat (the session's own cost; the seed contract's refresh excluded)",
            div(
                value("session_beat_no_refresh", "server_cpu_us_per_session"),
                value("heartbeat_010", "server_cpu_us_per_session"),
            ),
            "x",
            "<=",
            1.15,
        ),
    ]
    for d in DESIGNS:
        if d.legacy or not d.refresh:
            continue
        for table, t in s.get(d.key, {}).get("tables", {}).items():
            if t["updates"]:
                targets.append(
                    (
                        f"hot_{d.key}_{table}",
                        f"HOT share of steady beats, {d.label}, {table}",
                        t["hot_pct"],
                        "%",
                        ">=",
                        95.0,
                    )
                )
    sw = res["sweep"]
    by_size = {(v["users"], v["live_sessions"]): v for v in sw.values()}
    (small_u, small_l), (large_u, large_l) = res["config"]["sweep_pair"]
    a, b = by_size.get((small_u, small_l)), by_size.get((large_u, large_l))
    if a is not None and b is not None:
        note = f"{large_u:,} users / {large_l:,} sessions vs {small_u:,} / {small_l:,}"
        for metric, label in (("mean_ms", "mean time"), ("buffers", "buffers")):
            targets.append(
                (
                    f"sweep_{metric}_per_session",
                    f"sweep {label} per live session, growth ({note})",
                    div(b["sweep"][metric] / large_l, a["sweep"][metric] / small_l),
                    "x",
                    "<=",
                    1.5,
                )
            )
    out = []
    for key, label, measured, unit, op, threshold in targets:
        passed = None
        if measured is not None:
            passed = measured >= threshold if op == ">=" else measured <= threshold
        out.append(
            {
                "key": key,
                "label": label,
                "measured": measured,
                "unit": unit,
                "op": op,
                "target": threshold,
                "passed": bool(passed),
            }
        )
    return out


# ------------------------------------------------------------------------------ run


def run_benchmark(cfg: SessionsConfig) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    timer = base.Timer()
    machine = base.machine_info()
    cluster = PostgresCluster(durable=True, pg_cron=False, settings=base.CLUSTER_SETTINGS)
    server = PresenceTestServer(cluster=cluster)
    result: dict[str, Any] = {"format": 1, "mode": cfg.mode, "config": asdict(cfg)}
    with timer.phase("start cluster, apply the shipped SQL"):
        server.start()
    try:
        result["machine"] = machine
        result["postgres"] = base.server_info(cluster)
        with tempfile.TemporaryDirectory(prefix="presence-bench-sessions-") as tmp:
            bench = base.Pgbench(cluster, Path(tmp))
            result["postgres"]["pgbench"] = bench.version()
            cadence_dbs = {d.key: f"cadence_{d.key}" for d in DESIGNS}
            with timer.phase("load the cadence databases"):
                for d in DESIGNS:
                    if d.legacy:
                        create_legacy_database(cluster, cadence_dbs[d.key])
                    else:
                        cluster.create_database(cadence_dbs[d.key], template=server.template_name)
                    with base.connect(cluster, cadence_dbs[d.key]) as conn:
                        base.load_users(conn, cfg.cadence_users, online=0)
                        if not d.legacy:  # 0.1.0 writes the users row on every beat
                            conn.execute(
                                "SELECT public.presence_configure(timeout_seconds => %s, "
                                "heartbeat_interval_seconds => %s)",
                                (TIMEOUT_S, int(INTERVAL_S)),
                            )
                        if d.batch > 1:
                            store_batches(conn, cfg.cadence_users, d.batch)
                        # Not presence_sessions: analyzed empty, it would get plans for
                        # an empty table (as a real table does only before its first
                        # autovacuum/analyze round).
                        conn.execute("VACUUM (ANALYZE) public.users")
                print(f"  {len(DESIGNS)} databases, {cfg.cadence_users:,} users each", flush=True)
            with timer.phase(
                f"steady cadence: {cfg.rounds} rounds, one beat per session per round"
            ):
                result["cadence"] = cadence_phase(cfg, cluster, bench, cadence_dbs)
            sweep_dbs: dict[str, tuple[int, int]] = {}
            with timer.phase("load the sweep databases"):
                for users, live in cfg.sweep_sizes:
                    name = f"sweep_{users}_{live}"
                    cluster.create_database(name, template=server.template_name)
                    with base.connect(cluster, name) as conn:
                        load_sessions(conn, users, live)
                    sweep_dbs[name] = (users, live)
                    print(f"  {name}: {users:,} users, {live:,} live sessions", flush=True)
                with base.connect(cluster, "postgres") as conn:
                    conn.execute("CHECKPOINT")
            with timer.phase("sweep and list-online at each size"):
                result["sweep"] = sweep_phase(cfg, cluster, sweep_dbs)
    finally:
        server.stop()
    finished = dt.datetime.now(dt.UTC)
    result["started_at"] = started.isoformat(timespec="seconds")
    result["finished_at"] = finished.isoformat(timespec="seconds")
    result["duration_s"] = round((finished - started).total_seconds(), 1)
    result["phase_seconds"] = timer.phases
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    result["targets"] = evaluate_targets(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 minute)")
    parser.add_argument("--output", type=Path, help="JSON results file")
    parser.add_argument("--render-only", type=Path, metavar="JSON", help="print an earlier run")
    parser.add_argument(
        "--update-docs", action="store_true", help="rewrite the sessions_* blocks of the docs"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        result = json.loads(args.render_only.read_text())
    else:
        cfg = QUICK if args.quick else FULL
        result = run_benchmark(cfg)
        name = "sessions-quick.json" if args.quick else "sessions.json"
        output = args.output or RESULTS_DIR / name
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        shown = output.relative_to(REPO) if output.is_relative_to(REPO) else output
        print(f"\nresults written to {shown}")
    print()
    print(report.render_text(result))
    if args.update_docs and result["mode"] != "full":
        print("quick run: docs not updated (they show full runs only)")
    elif args.update_docs:
        for path in report.update_docs(result, REPO / "docs"):
            print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
