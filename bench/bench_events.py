#!/usr/bin/env python3
"""Benchmark of the presence event log (``make bench``; migration 6).

One run starts ONE throwaway, durable PostgreSQL 15 (fsync on) with the shipped SQL
and measures, side by side in that run:

1. delivery latency, from the commit of a transition to ``watch()`` yielding its event:
   over LISTEN (``PresenceWatcher(dsn=...)``) and over polling at 1 s
   (``PresenceClient.watch(poll_interval=1.0)`` through supabase-py and the PostgREST
   emulation); p50 and p99;
2. server CPU per transition with the log and without it (the event triggers disabled
   on the same tables): the backend's own CPU time (``/proc/<pid>/stat``, utime +
   stime) over N session cycles (a new session of an offline user, then its leave:
   two user transitions, four events), each call in the PostgREST envelope;
3. server CPU per steady beat with and without the log (it should not change), and
   the events written by steady beats (should be 0);
4. log size: bytes per event (table + indexes, after real transitions), and per million
   transitions;
5. pruning a day of events: a day at the given rate, aged past the retention, pruned
   in the sweep's batches of 10,000: total time and the longest batch (the longest any
   lock is held).

Prints a table with the targets, writes ``bench/results/events.json`` and, with
``--update-docs``, the generated block of ``docs/events.md``. It is a report, not a
test: exit 0 unless it could not run.

Usage::

    python bench/bench_events.py            # full run, a few minutes
    python bench/bench_events.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import respx
from supabase import Client, ClientOptions

from presence_sdk import PresenceClient, PresenceWatcher
from presence_sdk.testing import PostgresCluster, PresenceDatabase, PresenceTestServer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "events.json"
DOC = REPO / "docs" / "events.md"
TICKS = os.sysconf("SC_CLK_TCK")
WARMUP = 50  # calls per connection before measuring its CPU
TRIGGERS = (
    ("public.presence_sessions", "presence_events_session_insert"),
    ("public.presence_sessions", "presence_events_session_delete"),
    ("public.presence_sessions", "presence_events_session_update"),
    ("public.users", "presence_events_user_update"),
)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    mode: str
    listen_events: int
    poll_events: int
    cpu_cycles: int
    cpu_rounds: int
    steady_beats: int
    size_sessions: int
    prune_day_events: int


FULL = Sizes(
    mode="full",
    listen_events=400,
    poll_events=60,
    cpu_cycles=2000,
    cpu_rounds=3,
    steady_beats=6000,
    size_sessions=50_000,
    prune_day_events=2_000_000,
)
QUICK = Sizes(
    mode="quick",
    listen_events=60,
    poll_events=12,
    cpu_cycles=500,
    cpu_rounds=1,
    steady_beats=1000,
    size_sessions=5_000,
    prune_day_events=200_000,
)


# ----------------------------------------------------------------------------- helpers


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def as_user(conn: psycopg.Connection[Any], user: str, call: str, params: tuple[Any, ...]) -> None:
    """One PostgREST request: role, claims and the call in one transaction."""
    with conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": user, "role": "authenticated"}),),
        )
        conn.execute(call, params)


def create_users(db: PresenceDatabase, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with db.connect() as conn:
        conn.execute("INSERT INTO auth.users (id) SELECT unnest(%s::uuid[])", (ids,))
        conn.execute(
            "INSERT INTO public.users (id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING",
            (ids,),
        )
    return ids


def set_log(db: PresenceDatabase, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    with db.connect() as conn:
        for table, trigger in TRIGGERS:
            conn.execute(f"ALTER TABLE {table} {verb} TRIGGER {trigger}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ----------------------------------------------------------------------------- latency


def _writer(
    db: PresenceDatabase, n: int, gap: tuple[float, float], committed: dict[str, float]
) -> None:
    """Start n sessions (each: an offline user comes online), spaced by a random gap."""
    users = create_users(db, n)
    rng = random.Random(1)
    with db.connect(autocommit=False) as conn:
        for user in users:
            session = str(uuid.uuid4())
            conn.execute(
                "SELECT public.presence_track_beat(jsonb_build_array(jsonb_build_object("
                "'session_id', %s::text, 'user_id', %s::text)))",
                (session, user),
            )
            # From the start of COMMIT: the commit happens between this and its return.
            committed[session] = time.perf_counter()
            conn.commit()
            time.sleep(rng.uniform(*gap))


def _latencies(
    watcher: PresenceWatcher, db: PresenceDatabase, n: int, gap: tuple[float, float]
) -> list[float]:
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}
    writer = threading.Thread(target=_writer, args=(db, n, gap, committed))

    def watch() -> None:
        for event in watcher:
            now = time.perf_counter()
            # Only this writer's sessions (committed[] is filled before each COMMIT).
            if event.kind == "session_start" and str(event.session_id) in committed:
                seen[str(event.session_id)] = now
                if len(seen) == n:
                    return

    reader = threading.Thread(target=watch)
    reader.start()
    time.sleep(0.5)  # the watcher is connected and caught up
    writer.start()
    writer.join()
    reader.join(30)
    watcher.close()
    return [(seen[s] - committed[s]) * 1000 for s in committed if s in seen]


def measure_latency(db: PresenceDatabase, sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    listen = _latencies(
        PresenceWatcher(dsn=db.dsn, poll_interval=5.0), db, sizes.listen_events, (0.005, 0.02)
    )
    emulator = db.emulator()
    try:
        with respx.mock(base_url=emulator.url, assert_all_called=False) as router:
            router.route(path__startswith="/rest/v1/rpc/").mock(side_effect=emulator.handle)
            options = ClientOptions(httpx_client=httpx.Client(), auto_refresh_token=False)
            options.headers["Authorization"] = f"Bearer {emulator.service_role_key}"
            client = PresenceClient(Client(emulator.url, emulator.anon_key, options))
            poll = _latencies(client.watch(poll_interval=1.0), db, sizes.poll_events, (0.05, 0.15))
    finally:
        emulator.close()
    for name, values in (("listen", listen), ("poll_1s", poll)):
        out[name] = {
            "events": len(values),
            "p50_ms": round(percentile(values, 0.5), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
            "max_ms": round(max(values), 2),
        }
    return out


# --------------------------------------------------------------------------------- CPU


def _cycles_cpu(db: PresenceDatabase, users: list[str]) -> float:
    """Backend CPU seconds for one session cycle (start + leave) per user."""
    warm, users = users[:WARMUP], users[WARMUP:]
    with db.connect() as conn:
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
        for user in warm:  # compiles the plpgsql functions in this backend
            session = str(uuid.uuid4())
            as_user(conn, user, "SELECT public.presence_session_beat(%s)", (session,))
            as_user(conn, user, "SELECT public.presence_session_leave(%s)", (session,))
        before = backend_cpu(pid)
        for user in users:
            session = str(uuid.uuid4())
            as_user(conn, user, "SELECT public.presence_session_beat(%s)", (session,))
            as_user(conn, user, "SELECT public.presence_session_leave(%s)", (session,))
        return backend_cpu(pid) - before


def _steady_cpu(db: PresenceDatabase, sessions: list[tuple[str, str]], beats: int) -> float:
    with db.connect() as conn:
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
        for user, session in sessions[:WARMUP]:
            as_user(conn, user, "SELECT public.presence_session_beat(%s)", (session,))
        before = backend_cpu(pid)
        for k in range(beats):
            user, session = sessions[k % len(sessions)]
            as_user(conn, user, "SELECT public.presence_session_beat(%s)", (session,))
        return backend_cpu(pid) - before


def events_count(db: PresenceDatabase) -> int:
    (row,) = db.query("SELECT count(*) AS n FROM public.presence_events")
    count: int = row["n"]
    return count


def measure_cpu(db: PresenceDatabase, sizes: Sizes) -> dict[str, Any]:
    with_log: list[float] = []
    without: list[float] = []
    for k in range(sizes.cpu_rounds):
        order = ((True, with_log), (False, without))
        for enabled, into in order if k % 2 == 0 else order[::-1]:  # alternate the order
            users = create_users(db, WARMUP + sizes.cpu_cycles)
            set_log(db, enabled)
            into.append(_cycles_cpu(db, users) / (2 * sizes.cpu_cycles))
    set_log(db, True)

    # Steady beats: live sessions keeping their status.
    users = create_users(db, 200)
    sessions = [(u, str(uuid.uuid4())) for u in users]
    with db.connect() as conn:
        for user, session in sessions:
            as_user(conn, user, "SELECT public.presence_session_beat(%s)", (session,))
    steady_with: list[float] = []
    steady_without: list[float] = []
    logged_by_steady = 0
    for k in range(2 * sizes.cpu_rounds):
        enabled = k % 4 in (0, 3)  # with, without, without, with, ...: no order bias
        set_log(db, enabled)
        before = events_count(db)
        cpu = _steady_cpu(db, sessions, sizes.steady_beats) / sizes.steady_beats
        (steady_with if enabled else steady_without).append(cpu)
        logged_by_steady += events_count(db) - before
    set_log(db, True)
    per_with, per_without = statistics.median(with_log), statistics.median(without)
    beat_with, beat_without = statistics.median(steady_with), statistics.median(steady_without)
    return {
        "transition_us_with_log": round(per_with * 1e6, 1),
        "transition_us_without_log": round(per_without * 1e6, 1),
        "transition_ratio": round(per_with / per_without, 3),
        "steady_beat_us_with_log": round(beat_with * 1e6, 1),
        "steady_beat_us_without_log": round(beat_without * 1e6, 1),
        "steady_beat_ratio": round(beat_with / beat_without, 3),
        "events_written_by_steady_beats": logged_by_steady,
        "cycles_per_round": sizes.cpu_cycles,
        "steady_beats_per_round": sizes.steady_beats,
        "rounds": sizes.cpu_rounds,
    }


# ------------------------------------------------------------------------ size, prune


def measure_size(db: PresenceDatabase, sizes: Sizes) -> dict[str, Any]:
    """Real transitions through the batch API: n sessions start, then end."""
    db.query("TRUNCATE public.presence_events")
    db.query("VACUUM public.presence_events")
    users = create_users(db, sizes.size_sessions)
    for k in range(0, len(users), 10_000):
        chunk = users[k : k + 10_000]
        sessions = [{"session_id": str(uuid.uuid4()), "user_id": u} for u in chunk]
        with db.connect() as conn:
            conn.execute("SELECT public.presence_track_beat(%s)", (json.dumps(sessions),))
            conn.execute(
                "SELECT public.presence_track_end(%s::uuid[])",
                ([s["session_id"] for s in sessions],),
            )
    db.query("VACUUM ANALYZE public.presence_events")
    (row,) = db.query(
        "SELECT count(*) AS events, pg_total_relation_size('public.presence_events') AS total, "
        "pg_relation_size('public.presence_events') AS heap, "
        "count(*) FILTER (WHERE session_id IS NULL) AS user_events "
        "FROM public.presence_events"
    )
    per_event = row["total"] / row["events"]
    per_transition = row["total"] / row["user_events"]  # a user going online or offline
    return {
        "events": row["events"],
        "user_transitions": row["user_events"],
        "bytes_per_event": round(per_event, 1),
        "heap_bytes_per_event": round(row["heap"] / row["events"], 1),
        "mb_per_million_transitions": round(per_transition * 1e6 / 2**20, 1),
        "note": "a transition here = one user online/offline edge with its session event",
    }


def measure_prune(db: PresenceDatabase, sizes: Sizes) -> dict[str, Any]:
    """A day of events (synthetic rows, same shape), aged past the retention, pruned."""
    db.query("TRUNCATE public.presence_events")
    n = sizes.prune_day_events
    db.query(
        "INSERT INTO public.presence_events (occurred_at, kind, user_id, session_id, "
        "old_status, new_status, reason) "
        "SELECT now() - interval '31 days' - (g * interval '86400 seconds') / %(n)s, "
        "CASE WHEN g %% 2 = 0 THEN 'session_start' ELSE 'online' END, "
        "gen_random_uuid(), CASE WHEN g %% 2 = 0 THEN gen_random_uuid() END, "
        "'offline', 'online', 'join' FROM generate_series(1, %(n)s) AS g",
        {"n": n},
    )
    db.query("VACUUM ANALYZE public.presence_events")
    batches: list[float] = []
    with db.connect() as conn:
        while True:
            started = time.perf_counter()
            row = conn.execute("SELECT public.presence_prune_events(10000)").fetchone()
            batches.append(time.perf_counter() - started)
            if row is None or row[0] == 0:
                break
    return {
        "events": n,
        "batches": len(batches) - 1,
        "total_s": round(sum(batches), 2),
        "longest_batch_ms": round(max(batches) * 1000, 1),
        "median_batch_ms": round(statistics.median(batches) * 1000, 1),
    }


# ------------------------------------------------------------------------------ report

TARGETS = {
    "listen_p99_ms": 50.0,
    "transition_ratio": 1.3,
}


def verdicts(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    lat, cpu, size, prune = res["latency"], res["cpu"], res["size"], res["prune"]
    return [
        (
            "delivery latency, LISTEN (p50 / p99)",
            f"{lat['listen']['p50_ms']} / {lat['listen']['p99_ms']} ms",
            "p99 < 50 ms",
            "PASS" if lat["listen"]["p99_ms"] < TARGETS["listen_p99_ms"] else "FAIL",
        ),
        (
            "delivery latency, polling at 1 s (p50 / p99)",
            f"{lat['poll_1s']['p50_ms']} / {lat['poll_1s']['p99_ms']} ms",
            "(reported)",
            "",
        ),
        (
            "server CPU per transition, with / without the log",
            f"{cpu['transition_us_with_log']} / {cpu['transition_us_without_log']} us "
            f"= {cpu['transition_ratio']}x",
            "<= 1.3x",
            "PASS" if cpu["transition_ratio"] <= TARGETS["transition_ratio"] else "FAIL",
        ),
        (
            "server CPU per steady beat, with / without the log",
            f"{cpu['steady_beat_us_with_log']} / {cpu['steady_beat_us_without_log']} us "
            f"= {cpu['steady_beat_ratio']}x",
            "unchanged",
            "",
        ),
        (
            "events written by steady beats",
            str(cpu["events_written_by_steady_beats"]),
            "0",
            "PASS" if cpu["events_written_by_steady_beats"] == 0 else "FAIL",
        ),
        (
            "log size",
            f"{size['bytes_per_event']} B/event, "
            f"{size['mb_per_million_transitions']} MB per 1M transitions",
            "(reported)",
            "",
        ),
        (
            "pruning a day of events",
            f"{prune['events']:,} events: {prune['total_s']} s in {prune['batches']} batches "
            f"(median {prune['median_batch_ms']} ms, longest {prune['longest_batch_ms']} ms)",
            "(reported)",
            "",
        ),
    ]


def render_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Measured {res['date']} on {res['machine']} ({res['mode']} run, one durable "
        "PostgreSQL 15, shared 2-core machine: noisy).",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdicts(res)]
    return "\n".join(lines)


def update_doc(markdown: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(r"(<!-- bench:begin events -->\n).*?(\n<!-- bench:end events -->)", re.S)
    if not pattern.search(text):
        msg = f"{DOC} has no bench:begin/end events markers"
        raise SystemExit(msg)
    DOC.write_text(pattern.sub(lambda m: m[1] + markdown + m[2], text))


@contextmanager
def database(sizes: Sizes) -> Iterator[PresenceDatabase]:
    cluster = PostgresCluster(pg_cron=False, durable=True, settings={"shared_buffers": "'512MB'"})
    with PresenceTestServer(cluster=cluster) as server, server.database() as db:
        yield db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (smaller sizes)")
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs/events.md's block")
    parser.add_argument(
        "--render-only", metavar="JSON", help="render a results file instead of measuring"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        res = json.loads(Path(args.render_only).read_text())
    else:
        sizes = QUICK if args.quick else FULL
        with database(sizes) as db:
            print("latency ...", file=sys.stderr)
            latency = measure_latency(db, sizes)
            print("cpu ...", file=sys.stderr)
            cpu = measure_cpu(db, sizes)
            print("size ...", file=sys.stderr)
            size = measure_size(db, sizes)
            print("prune ...", file=sys.stderr)
            prune = measure_prune(db, sizes)
        res = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "mode": sizes.mode,
            "latency": latency,
            "cpu": cpu,
            "size": size,
            "prune": prune,
        }
        if sizes.mode == "full" or not RESULTS.exists():
            RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    width = max(len(r[0]) for r in verdicts(res))
    for name, result, target, verdict in verdicts(res):
        print(f"{name:<{width}}  {result:<60}  {target:<10}  {verdict}")
    if args.update_docs and res["mode"] == "full":
        update_doc(render_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
