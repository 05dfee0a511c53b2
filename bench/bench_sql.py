#!/usr/bin/env python3
"""Database benchmark for presence_sdk's SQL (``make bench``).

One run starts ONE throwaway, durable PostgreSQL 15 cluster (fsync on, the server's
default ``synchronous_commit``), applies the shipped SQL through
:class:`presence_sdk.testing.PresenceTestServer`, and measures side by side:

1. heartbeat throughput with pgbench (``-M prepared -j 2``, TCP to 127.0.0.1): the
   heartbeat RPC run the way PostgREST runs a request (one transaction:
   ``SET LOCAL ROLE authenticated``, ``set_config('request.jwt.claims', ...)``, the
   call), against ``SELECT 1`` and against the original note's naive design (a plain
   ``UPDATE`` on a copy of the table with a btree index on ``last_heartbeat`` and the
   default fillfactor);
2. the HOT-update share and the table's growth over 10 heartbeats per user, and the
   WAL written per heartbeat;
3. the sweep (``mark_inactive_users_offline()``) and ``presence_list_online(100, NULL)``
   at two table sizes (100k and 1M users in a full run) with the same 1,000 users
   online: mean time over repeated runs, and buffers touched (EXPLAIN ANALYZE, BUFFERS)
   as a noise-free second metric.

It prints a table with the targets and PASS/FAIL, writes the results as JSON (the
docs are generated from that file) and always exits 0 unless the benchmark itself
could not run: it is a report, not a test.

Usage::

    python bench/bench_sql.py              # full run, a few minutes
    python bench/bench_sql.py --quick      # smoke run, under a minute
    python bench/bench_sql.py --render-only bench/results/latest.json --update-docs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from presence_sdk.testing import PostgresCluster, PresenceTestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_report as report  # sibling module of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"

# User k (1..N) has the uuid 00000000-0000-4000-8000-<100000000000 + k>: 12 decimal
# digits fill the uuid's last group, so pgbench (integers only) can address users and
# the server builds the same uuid the loader stored.
UUID_PREFIX = "00000000-0000-4000-8000-"
UUID_BASE = 100_000_000_000

# Settings for the one cluster. fsync and synchronous_commit stay at their defaults
# (durable=True). shared_buffers holds every benchmark table, as on a tuned server.
CLUSTER_SETTINGS = {
    "shared_buffers": "'2GB'",
}

SESSION_OPTIONS = "-c statement_timeout=600s -c lock_timeout=30s"


def uuid_sql(k: str) -> str:
    """SQL expression for the uuid of user number ``k`` (an SQL integer expression)."""
    return f"('{UUID_PREFIX}' || ({UUID_BASE} + ({k})))::uuid"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Sizes and durations of one run (``full`` or ``quick``)."""

    mode: str
    small_users: int
    large_users: int
    online_users: int
    hot_users: int
    hot_beats_per_user: int
    tput_users: int
    clients: tuple[int, ...]
    seconds: int
    rounds: int
    warmup_seconds: int
    repeat_runs: int
    counts_runs: int

    @property
    def primary_clients(self) -> int:
        """The client count the throughput targets are judged at."""
        return max(self.clients)


FULL = BenchConfig(
    mode="full",
    small_users=100_000,
    large_users=1_000_000,
    online_users=1_000,
    hot_users=16_000,
    hot_beats_per_user=10,
    tput_users=200_000,
    clients=(2, 8),
    seconds=6,
    rounds=3,
    warmup_seconds=2,
    repeat_runs=300,
    counts_runs=10,
)

QUICK = BenchConfig(
    mode="quick",
    small_users=10_000,
    large_users=100_000,
    online_users=100,
    hot_users=2_000,
    hot_beats_per_user=10,
    tput_users=20_000,
    clients=(8,),
    seconds=2,
    rounds=1,
    warmup_seconds=1,
    repeat_runs=50,
    counts_runs=5,
)


# ------------------------------------------------------------------------- workloads

CLAIMS_SQL = (
    "SELECT set_config('request.jwt.claims', "
    f'\'{{"sub":"{UUID_PREFIX}\' || :uid || \'","role":"authenticated"}}\', true);'
)
RANDOM_USER = f"\\set uid {UUID_BASE} + random(1, :nusers)\n"
# Round-robin: client c beats users c+1, c+1+C, c+1+2C, ... so every user gets the same
# number of beats and no two clients touch the same row.
SEQUENTIAL_USER = (
    f"\\set uid {UUID_BASE + 1} + ((:client_id + :nclients * :seq) % :nusers)\n\\set seq :seq + 1\n"
)
HEARTBEAT_CALL = "SELECT public.presence_heartbeat('online');"
NAIVE_BY_ID = (
    "UPDATE public.naive_users SET status = 'online', last_heartbeat = now() "
    f"WHERE id = ('{UUID_PREFIX}' || :uid)::uuid;"
)
FLOOR_UPDATE = (
    f"UPDATE public.users SET last_heartbeat = now() WHERE id = ('{UUID_PREFIX}' || :uid)::uuid;"
)
FLOOR_BY_AUTH_UID = (
    "UPDATE public.users SET status = 'online', last_heartbeat = now() WHERE id = auth.uid();"
)
NAIVE_BY_AUTH_UID = (
    "UPDATE public.naive_users SET status = 'online', last_heartbeat = now() WHERE id = auth.uid();"
)


def postgrest_envelope(call: str, *, pipelined: bool = False) -> str:
    """One request as PostgREST runs it: role, JWT claims and the call in one transaction."""
    body = f"BEGIN;\nSET LOCAL ROLE authenticated;\n{CLAIMS_SQL}\n{call}\nCOMMIT;\n"
    if pipelined:
        body = f"\\startpipeline\n{body}\\endpipeline\n"
    return body


@dataclass(frozen=True)
class Workload:
    """A pgbench custom script and how to describe it."""

    key: str
    label: str
    description: str
    script: str
    options: str = ""
    table: str | None = None  # the table it updates


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "select_1",
        "SELECT 1",
        "`SELECT 1;` - one round trip, the ceiling for any request",
        "SELECT 1;\n",
    ),
    Workload(
        "heartbeat_rpc",
        "heartbeat RPC via PostgREST envelope",
        "BEGIN; SET LOCAL ROLE authenticated; set_config(request.jwt.claims); "
        "SELECT public.presence_heartbeat('online'); COMMIT;",
        RANDOM_USER + postgrest_envelope(HEARTBEAT_CALL),
        table="public.presence_sessions",
    ),
    Workload(
        "naive_update",
        "naive: plain UPDATE (note's design)",
        "UPDATE naive_users SET status='online', last_heartbeat=now() WHERE id=...; "
        "(btree on last_heartbeat, fillfactor 100, synchronous commit)",
        RANDOM_USER + NAIVE_BY_ID + "\n",
        table="public.naive_users",
    ),
    Workload(
        "naive_rpc",
        "naive UPDATE via PostgREST envelope",
        "the naive UPDATE ... WHERE id = auth.uid() in the same PostgREST envelope "
        "(RLS policy on own row) - like-for-like with the heartbeat RPC",
        RANDOM_USER + postgrest_envelope(NAIVE_BY_AUTH_UID),
        table="public.naive_users",
    ),
    Workload(
        "update_floor_rpc",
        "floor via envelope: bare UPDATE, async",
        "the same PostgREST envelope around a bare UPDATE users SET status, last_heartbeat "
        "WHERE id = auth.uid() (RLS, synchronous_commit=off, no function): the envelope's "
        "cost plus the cheapest write; the gap to the heartbeat RPC is the function's cost",
        RANDOM_USER + postgrest_envelope(FLOOR_BY_AUTH_UID),
        options="-c synchronous_commit=off",
        table="public.users",
    ),
    Workload(
        "update_floor",
        "floor: bare UPDATE, async commit",
        "UPDATE users SET last_heartbeat=now() WHERE id=...; alone, synchronous_commit=off "
        "(no envelope, no function, no auth): the cheapest heartbeat write possible",
        RANDOM_USER + FLOOR_UPDATE + "\n",
        options="-c synchronous_commit=off",
        table="public.users",
    ),
    Workload(
        "heartbeat_rpc_pipelined",
        "heartbeat RPC envelope, pipelined",
        "the heartbeat RPC envelope sent as one pgbench pipeline (one network round "
        "trip): the server's own cost per request",
        RANDOM_USER + postgrest_envelope(HEARTBEAT_CALL, pipelined=True),
        table="public.presence_sessions",
    ),
)


# --------------------------------------------------------------------------- pgbench


@dataclass
class PgbenchResult:
    """Parsed pgbench summary of one run."""

    tps: float
    latency_ms: float
    transactions: int
    failed: int
    seconds: float
    ok: bool
    error: str = ""
    statements: list[dict[str, Any]] = field(default_factory=list)


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_TX = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_STATEMENT = re.compile(r"^\s+([0-9.]+)\s+(\d+)\s+(.+)$")


def _statement_latencies(out: str) -> list[dict[str, Any]]:
    """Per-statement latencies from ``pgbench -r`` output."""
    _, found, tail = out.partition("statement latencies in milliseconds")
    if not found:
        return []
    rows = []
    for line in tail.splitlines()[1:]:
        m = _STATEMENT.match(line)
        if m and not m.group(3).startswith("\\"):
            rows.append({"latency_ms": float(m.group(1)), "statement": m.group(3).strip()})
    return rows


class Pgbench:
    """Runs pgbench custom scripts (written to a temp dir) against the cluster over TCP."""

    def __init__(self, cluster: PostgresCluster, scripts_dir: Path) -> None:
        assert cluster.bindir is not None
        self.binary = str(cluster.bindir / "pgbench")
        self.cluster = cluster
        self.scripts_dir = scripts_dir

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False, timeout=30
        )
        return out.stdout.strip()

    def run(
        self,
        name: str,
        script: str,
        dbname: str,
        *,
        clients: int,
        seconds: int | None = None,
        transactions: int | None = None,
        defines: dict[str, int] | None = None,
        options: str = "",
        report_statements: bool = False,
        timeout: float = 900,
    ) -> PgbenchResult:
        path = self.scripts_dir / f"{name}.sql"
        path.write_text(script)
        path.chmod(0o644)
        cmd = [
            self.binary,
            "-h",
            self.cluster.host,
            "-p",
            str(self.cluster.port),
            "-U",
            self.cluster.superuser,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(2, clients)),
            "-f",
            str(path),
        ]
        if seconds is not None:
            cmd += ["-T", str(seconds)]
        if transactions is not None:
            cmd += ["-t", str(transactions)]
        for key, value in (defines or {}).items():
            cmd += ["-D", f"{key}={value}"]
        if report_statements:
            cmd.append("-r")
        cmd.append(dbname)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if options:
            env["PGOPTIONS"] = options
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired:
            return PgbenchResult(0.0, 0.0, 0, 0, timeout, ok=False, error="timed out")
        elapsed = time.perf_counter() - started
        out = proc.stdout
        tps, lat, tx, failed = (
            _TPS.search(out),
            _LAT.search(out),
            _TX.search(out),
            _FAILED.search(out),
        )
        n_failed = int(failed.group(1)) if failed else 0
        ok = proc.returncode == 0 and tps is not None and n_failed == 0
        return PgbenchResult(
            tps=float(tps.group(1)) if tps else 0.0,
            latency_ms=float(lat.group(1)) if lat else 0.0,
            transactions=int(tx.group(1)) if tx else 0,
            failed=n_failed,
            seconds=elapsed,
            ok=ok,
            error="" if ok else (proc.stderr.strip()[-600:] or "pgbench failed"),
            statements=_statement_latencies(out) if report_statements else [],
        )


# -------------------------------------------------------------------------- database


def connect(cluster: PostgresCluster, dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.dsn(dbname), autocommit=True, options=SESSION_OPTIONS)


def load_users(
    conn: psycopg.Connection[Any], n: int, *, online: int, all_online: bool = False
) -> None:
    """Insert ``n`` auth + public users in random heap order.

    ``online`` users (spread evenly over the id space) are online with a fresh
    heartbeat; the rest are offline with a heartbeat from the last 30 days, as in an
    app that has been running for a while. ``all_online`` makes everyone online.
    Triggers and FK checks are skipped for the bulk load (session_replication_role).
    """
    step = max(1, n // online) if online else n + 1
    is_online = "true" if all_online else f"g % {step} = 0"
    conn.execute("SET session_replication_role = replica")
    conn.execute("SET work_mem = '256MB'")
    conn.execute(
        f"INSERT INTO auth.users (id) SELECT {uuid_sql('g')} FROM generate_series(1, {n}) g"
    )
    conn.execute(
        f"""
        INSERT INTO public.users
            (id, status, display_name, created_at, last_heartbeat, online_since)
        SELECT {uuid_sql("g")},
               CASE WHEN {is_online} THEN 'online' ELSE 'offline' END,
               'User ' || g,
               now() - interval '90 days' + g * interval '1 millisecond',
               CASE WHEN {is_online} THEN now()
                    ELSE now() - (g % 2592000) * interval '1 second' - interval '1 hour' END,
               CASE WHEN {is_online} THEN now() END
        FROM generate_series(1, {n}) g
        ORDER BY random()
        """
    )
    conn.execute("RESET session_replication_role")
    conn.execute("RESET work_mem")
    # Since migration 5 presence is per session: online users get the implicit session
    # the upgrade would give them (a database at 0.1.0 has no presence_private).
    row = conn.execute(
        "SELECT to_regprocedure('presence_private.adopt_legacy(uuid[])') IS NOT NULL"
    ).fetchone()
    if row is not None and row[0]:
        conn.execute("SELECT presence_private.adopt_legacy(NULL)")


def keep_live(conn: psycopg.Connection[Any]) -> None:
    """Make every online user's session (and stored beat) fresh: steady state again."""
    row = conn.execute("SELECT to_regclass('public.presence_sessions') IS NOT NULL").fetchone()
    if row is not None and row[0]:
        conn.execute("UPDATE public.presence_sessions SET last_beat = now()")
    conn.execute("UPDATE public.users SET last_heartbeat = now() WHERE status <> 'offline'")


def create_naive_copy(conn: psycopg.Connection[Any]) -> None:
    """The note's design: same rows, btree on last_heartbeat, default fillfactor.

    Also gets an "update own row" RLS policy so it can be driven through the same
    PostgREST envelope as the RPC (workload ``naive_rpc``).
    """
    conn.execute(
        """
        CREATE TABLE public.naive_users (
            id uuid PRIMARY KEY,
            status text NOT NULL DEFAULT 'offline',
            display_name text,
            avatar_url text,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_heartbeat timestamptz,
            online_since timestamptz
        )
        """
    )
    conn.execute(
        "INSERT INTO public.naive_users "
        "SELECT id, status, display_name, avatar_url, created_at, last_heartbeat, online_since "
        "FROM public.users"
    )
    conn.execute(
        "CREATE INDEX naive_users_last_heartbeat_idx ON public.naive_users (last_heartbeat)"
    )
    conn.execute("ALTER TABLE public.naive_users ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY naive_users_own ON public.naive_users FOR ALL TO authenticated "
        "USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()))"
    )
    conn.execute("GRANT SELECT, UPDATE ON public.naive_users TO authenticated")


def lsn_to_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass
class TableStats:
    """Counters and sizes of one table (heap, indexes) at one moment."""

    n_tup_upd: int
    n_tup_hot_upd: int
    heap_bytes: int
    index_bytes: int
    total_bytes: int


@dataclass
class WalStats:
    lsn: int
    records: int
    fpi: int
    bytes: int


def table_stats(conn: psycopg.Connection[Any], table: str) -> TableStats:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        """
        SELECT coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0),
               pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid)
        FROM pg_class AS c LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
        WHERE c.oid = %s::regclass
        """,
        (table,),
    ).fetchone()
    assert row is not None
    return TableStats(*(int(v) for v in row))


def wait_for_updates(
    conn: psycopg.Connection[Any], table: str, at_least: int, timeout: float = 15
) -> TableStats:
    """Stats of finished pgbench sessions are flushed when their backends exit: poll."""
    deadline = time.monotonic() + timeout
    stats = table_stats(conn, table)
    while stats.n_tup_upd < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = table_stats(conn, table)
    return stats


def wal_stats(conn: psycopg.Connection[Any]) -> WalStats:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT pg_current_wal_lsn()::text, wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
    ).fetchone()
    assert row is not None
    return WalStats(lsn_to_int(row[0]), int(row[1]), int(row[2]), int(row[3]))


class CpuMeter:
    """CPU seconds used by the server (postmaster and all its processes) and by pgbench.

    Server: the postmaster's own and reaped children's time (``/proc/PID/stat``
    utime, stime, cutime, cstime) plus its live children's. Backends of a finished
    pgbench run are reaped into the postmaster's counters once they exit, so read
    after :func:`wait_idle`. Client: this process's reaped children (pgbench).
    """

    def __init__(self, datadir: Path) -> None:
        self.postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    def server_seconds(self) -> float:
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
            if int(entry.name) == self.postmaster:
                ticks += utime + stime + int(fields[13]) + int(fields[14])
            elif ppid == self.postmaster:
                ticks += utime + stime
        return ticks / self.tick

    @staticmethod
    def client_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def wait_idle(conn: psycopg.Connection[Any], timeout: float = 10) -> None:
    """Wait until no other client backend is connected (pgbench's have exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None and row[0] == 0:
            time.sleep(0.05)  # let the postmaster reap them
            return
        time.sleep(0.05)


# ------------------------------------------------------------------------ phase: HOT


def hot_phase(
    cfg: BenchConfig, cluster: PostgresCluster, bench: Pgbench, dbname: str
) -> dict[str, Any]:
    """10 beats per user (1 session start + 9 steady beats) on both designs.

    Autovacuum is off for the two tables so the growth shows what HOT updates and
    page pruning do on their own.
    """
    n = cfg.hot_users
    clients = cfg.primary_clients
    assert n % clients == 0, "hot_users must be a multiple of the client count"
    per_client = n // clients
    steady_beats = cfg.hot_beats_per_user - 1
    out: dict[str, Any] = {"users": n, "beats_per_user": cfg.hot_beats_per_user}
    # Since migration 5 a heartbeat writes the user's session row (the users row only at
    # transitions and for the throttled last_heartbeat refresh, which beats seconds
    # apart never need): that is the table whose updates are measured. Beat 1 inserts
    # the session rows, so its sizes are the baseline of the presence design.
    designs = {
        "presence": (
            "public.presence_sessions",
            SEQUENTIAL_USER + postgrest_envelope(HEARTBEAT_CALL),
        ),
        "naive": ("public.naive_users", SEQUENTIAL_USER + NAIVE_BY_ID + "\n"),
    }
    start_updates = {"presence": 0, "naive": n}
    with connect(cluster, dbname) as conn:
        for table, _ in designs.values():
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.execute("VACUUM (ANALYZE) public.users, public.naive_users")
        conn.execute("CHECKPOINT")
        for key, (table, script) in designs.items():
            fresh = table_stats(conn, table)
            defines = {"nusers": n, "nclients": clients, "seq": 0}
            # Beat 1: the session start (offline -> online).
            wal0 = wal_stats(conn)
            start = bench.run(
                f"hot_start_{key}",
                script,
                dbname,
                clients=clients,
                transactions=per_client,
                defines=defines,
            )
            wait_idle(conn)
            after_start = wait_for_updates(conn, table, fresh.n_tup_upd + start_updates[key])
            wal1 = wal_stats(conn)
            # Beats 2..10: steady state (online -> online), after a checkpoint so the
            # first change of each page writes its full-page image, as in production.
            conn.execute("CHECKPOINT")
            wal2 = wal_stats(conn)
            steady = bench.run(
                f"hot_steady_{key}",
                script,
                dbname,
                clients=clients,
                transactions=per_client * steady_beats,
                defines=defines,
            )
            after = wait_for_updates(conn, table, after_start.n_tup_upd + n * steady_beats)
            wal3 = wal_stats(conn)
            # The session table is empty before beat 1: its sizes count from there.
            baseline = after_start if key == "presence" else fresh
            start_upd = after_start.n_tup_upd - fresh.n_tup_upd
            steady_upd = after.n_tup_upd - after_start.n_tup_upd
            start_hot = after_start.n_tup_hot_upd - fresh.n_tup_hot_upd
            steady_hot = after.n_tup_hot_upd - after_start.n_tup_hot_upd
            out[key] = {
                "table": table,
                "ok": start.ok and steady.ok,
                "error": start.error or steady.error,
                "session_start": {
                    "beats": start.transactions,
                    "updates": start_upd,
                    "hot_updates": start_hot,
                    "hot_pct": pct(start_hot, start_upd),
                    "tps": start.tps,
                    "wal_bytes_per_beat": ratio(wal1.lsn - wal0.lsn, start.transactions),
                },
                "steady": {
                    "beats": steady.transactions,
                    "updates": steady_upd,
                    "hot_updates": steady_hot,
                    "hot_pct": pct(steady_hot, steady_upd),
                    "tps": steady.tps,
                    "wal_bytes": wal3.lsn - wal2.lsn,
                    "wal_bytes_per_beat": ratio(wal3.lsn - wal2.lsn, steady.transactions),
                    "wal_records_per_beat": ratio(wal3.records - wal2.records, steady.transactions),
                    "wal_fpi": wal3.fpi - wal2.fpi,
                },
                "all_beats_hot_pct": pct(start_hot + steady_hot, start_upd + steady_upd),
                "sizes": {
                    "fresh": asdict(baseline),
                    "after_session_start": asdict(after_start),
                    "after_all_beats": asdict(after),
                },
                "heap_growth_pct": growth_pct(baseline.heap_bytes, after.heap_bytes),
                "total_growth_pct": growth_pct(baseline.total_bytes, after.total_bytes),
                "steady_total_growth_pct": growth_pct(after_start.total_bytes, after.total_bytes),
            }
            for name, value in (("beat 1", start), ("beats 2-10", steady)):
                status = "ok" if value.ok else f"FAILED: {value.error}"
                print(
                    f"  {key:<8} {name:<10} {value.transactions:>9} beats "
                    f"{value.tps:>9.0f}/s  {status}",
                    flush=True,
                )
    return out


# ------------------------------------------------------------------ phase: scaling


def _plan_summary(plan: dict[str, Any]) -> list[str]:
    """Flatten a JSON plan tree into 'Node Type on relation using index' strings."""
    parts = [plan.get("Node Type", "?")]
    if "Index Name" in plan:
        parts.append(f"using {plan['Index Name']}")
    if "Relation Name" in plan:
        parts.append(f"on {plan['Relation Name']}")
    nodes = [" ".join(parts)]
    for child in plan.get("Plans", []):
        nodes += _plan_summary(child)
    return nodes


@contextmanager
def nested_plans(conn: psycopg.Connection[Any]) -> Iterator[list[dict[str, Any]]]:
    """Capture the plans of statements run inside functions (auto_explain as NOTICEs)."""
    plans: list[dict[str, Any]] = []

    def handler(diag: psycopg.errors.Diagnostic) -> None:
        msg = diag.message_primary or ""
        if "plan:" in msg:
            with contextlib.suppress(ValueError):
                plans.append(json.loads(msg.split("plan:", 1)[1]))

    conn.execute("LOAD 'auto_explain'")
    for name, value in (
        ("log_min_duration", "0"),
        ("log_nested_statements", "on"),
        ("log_analyze", "on"),
        ("log_buffers", "on"),
        ("log_timing", "off"),
        ("log_format", "json"),
        ("log_level", "notice"),
    ):
        conn.execute(f"SET auto_explain.{name} = {value}")
    conn.add_notice_handler(handler)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(handler)
        conn.execute("SET auto_explain.log_min_duration = -1")


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


def _timing(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_ms": statistics.fmean(samples),
        "median_ms": statistics.median(samples),
        "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "runs": len(samples),
    }


def _as_user(conn: psycopg.Connection[Any], user_uuid: str) -> None:
    conn.execute("SET LOCAL ROLE authenticated")
    claims = json.dumps({"sub": user_uuid, "role": "authenticated"})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))


@dataclass
class Target:
    """One database of the scaling comparison: a connection and who calls as whom."""

    key: str
    dbname: str
    users: int
    conn: psycopg.Connection[Any]
    viewer_uuid: str

    def call(self, call: str, *, as_user: bool) -> tuple[float, list[tuple[Any, ...]]]:
        """Run ``call`` once (in the PostgREST envelope if ``as_user``); return ms, rows."""
        with self.conn.transaction():
            if as_user:
                _as_user(self.conn, self.viewer_uuid)
            t0 = time.perf_counter()
            rows = self.conn.execute(call).fetchall()
            return (time.perf_counter() - t0) * 1000, rows

    def refresh(self) -> None:
        # Keep the online users fresh (< 45 s) so the sweep finds them alive and
        # list-online returns full pages: the steady state being measured.
        keep_live(self.conn)


def measure_call(
    targets: Sequence[Target], call: str, *, runs: int, as_user: bool
) -> dict[str, dict[str, Any]]:
    """Time ``call`` on every target, run by run in turn, and count its buffers.

    Alternating the databases run by run exposes them to the same machine load, so
    their ratio is not skewed by what else runs meanwhile. Times are the client's
    (one local round trip included), after 5 warm-up runs. Buffers come from
    EXPLAIN (ANALYZE, BUFFERS) of the call (they include the statements run inside
    the function); the inner plan comes from auto_explain.
    """
    samples: dict[str, list[float]] = {t.key: [] for t in targets}
    rows: dict[str, int] = {}
    for t in targets:
        t.refresh()
        for _ in range(5):
            t.call(call, as_user=as_user)
    for _ in range(runs):
        for t in targets:
            elapsed, result = t.call(call, as_user=as_user)
            samples[t.key].append(elapsed)
            rows[t.key] = len(result)
    out: dict[str, dict[str, Any]] = {}
    for t in targets:
        buffers: list[int] = []
        for _ in range(3):
            with t.conn.transaction():
                if as_user:
                    _as_user(t.conn, t.viewer_uuid)
                explain = t.conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}")
                row = explain.fetchone()
            assert row is not None
            buffers.append(_buffers(row[0][0]["Plan"]))
        with nested_plans(t.conn) as plans:
            _, first = t.call(call, as_user=as_user)
        # Keep the statements run inside the function: drop the call and the envelope.
        inner = [
            p
            for p in plans
            if " ".join(p.get("Query Text", "").split()) != call
            and not p.get("Query Text", "").lstrip().startswith("SELECT set_config")
        ]
        out[t.key] = {
            **_timing(samples[t.key]),
            "buffers": statistics.median(buffers),
            "rows": rows[t.key],
            "first_value": first[0][0] if first and len(first[0]) == 1 else None,
            "inner_plans": [
                {
                    "query": " ".join(p.get("Query Text", "").split())[:160],
                    "buffers": _buffers(p["Plan"]),
                    "nodes": _plan_summary(p["Plan"]),
                }
                for p in inner
            ],
        }
    return out


def scaling_phase(
    cfg: BenchConfig, cluster: PostgresCluster, databases: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"online_users": cfg.online_users}
    targets: list[Target] = []
    try:
        for key, (dbname, n) in databases.items():
            conn = connect(cluster, dbname)
            step = max(1, n // cfg.online_users)  # user `step` is the first online one
            viewer = conn.execute(f"SELECT {uuid_sql(str(step))}::text").fetchone()
            assert viewer is not None
            targets.append(Target(key, dbname, n, conn, str(viewer[0])))
        sweep = measure_call(
            targets,
            "SELECT public.mark_inactive_users_offline()",
            runs=cfg.repeat_runs,
            as_user=False,
        )
        listing = measure_call(
            targets,
            "SELECT * FROM public.presence_list_online(100, NULL)",
            runs=cfg.repeat_runs,
            as_user=True,
        )
        counts = measure_call(
            targets, "SELECT public.presence_counts()", runs=cfg.counts_runs, as_user=True
        )
        for t in targets:
            sizes = t.conn.execute(
                "SELECT pg_relation_size('public.users'), pg_total_relation_size('public.users'),"
                " pg_relation_size('public.users_presence_active_idx'),"
                " (SELECT count(*) FROM public.users WHERE status <> 'offline')"
            ).fetchone()
            assert sizes is not None
            out[t.key] = {
                "database": t.dbname,
                "users": t.users,
                "online": int(sizes[3]),
                "heap_bytes": int(sizes[0]),
                "total_bytes": int(sizes[1]),
                "active_index_bytes": int(sizes[2]),
                "sweep": sweep[t.key],
                "list_online": listing[t.key],
                "counts": counts[t.key],
            }
            print(
                f"  {t.users:>9} users: sweep {sweep[t.key]['mean_ms']:.3f} ms / "
                f"{sweep[t.key]['buffers']:.0f} buf, list {listing[t.key]['mean_ms']:.3f} ms / "
                f"{listing[t.key]['buffers']:.0f} buf, counts {counts[t.key]['mean_ms']:.1f} ms",
                flush=True,
            )
    finally:
        for t in targets:
            t.conn.close()
    return out


# --------------------------------------------------------------- phase: throughput


def throughput_phase(
    cfg: BenchConfig, cluster: PostgresCluster, bench: Pgbench, dbname: str
) -> dict[str, Any]:
    """Interleaved rounds of every workload at every client count; medians per cell."""
    assert cluster.datadir is not None
    cpu = CpuMeter(cluster.datadir)
    defines = {"nusers": cfg.tput_users}
    runs: list[dict[str, Any]] = []
    tables = ("public.users", "public.naive_users", "public.presence_sessions")
    expected = dict.fromkeys(tables, 0)  # updates sent, to wait for their statistics

    def run(w: Workload, name: str, clients: int, seconds: int, **kw: Any) -> PgbenchResult:
        res = bench.run(
            name,
            w.script,
            dbname,
            clients=clients,
            seconds=seconds,
            defines=defines,
            options=w.options,
            **kw,
        )
        if w.table:
            expected[w.table] += res.transactions
        return res

    with connect(cluster, dbname) as conn:
        # Random beats over this many users come ~40 s apart per user: with the shipped
        # 45 s timeout many would find their session timed out and start it again (a
        # transition). A long timeout here keeps every beat a steady one, the state
        # this table compares; the throttled refresh of users.last_heartbeat that a
        # real 15 s cadence adds is measured by bench_sessions.py.
        conn.execute("UPDATE public.presence_config SET timeout_seconds = 3600")
        keep_live(conn)
        conn.execute("VACUUM (ANALYZE) public.users, public.naive_users, public.presence_sessions")
        conn.execute("CHECKPOINT")
        before = {t: table_stats(conn, t) for t in tables}
        for w in WORKLOADS:  # warm caches and plan caches once per workload
            run(w, f"warm_{w.key}", cfg.primary_clients, cfg.warmup_seconds)
        for rnd in range(cfg.rounds):
            for clients in cfg.clients:
                for w in WORKLOADS:
                    wait_idle(conn)
                    wal0, server0, client0 = (
                        wal_stats(conn),
                        cpu.server_seconds(),
                        cpu.client_seconds(),
                    )
                    res = run(w, f"tput_{w.key}", clients, cfg.seconds)
                    wait_idle(conn)
                    wal1, server1, client1 = (
                        wal_stats(conn),
                        cpu.server_seconds(),
                        cpu.client_seconds(),
                    )
                    runs.append(
                        {
                            "workload": w.key,
                            "clients": clients,
                            "round": rnd + 1,
                            **asdict(res),
                            "wal_bytes_per_tx": ratio(wal1.lsn - wal0.lsn, res.transactions),
                            "server_cpu_us_per_tx": ratio(
                                (server1 - server0) * 1e6, res.transactions
                            ),
                            "client_cpu_us_per_tx": ratio(
                                (client1 - client0) * 1e6, res.transactions
                            ),
                            "loadavg_1m": os.getloadavg()[0],
                        }
                    )
                    status = "ok" if res.ok else f"FAILED: {res.error}"
                    print(
                        f"  round {rnd + 1} c={clients:<2} {w.key:<24} {res.tps:>9.0f} tps "
                        f"{res.latency_ms:>7.3f} ms  {status}",
                        flush=True,
                    )
        # One client, pgbench -r: where a request's time goes, statement by statement.
        breakdown = {}
        for w in WORKLOADS:
            if w.key in ("select_1", "heartbeat_rpc"):
                res = run(w, f"latency_{w.key}", 1, cfg.seconds, report_statements=True)
                breakdown[w.key] = {
                    "tps": res.tps,
                    "latency_ms": res.latency_ms,
                    "statements": res.statements,
                }
        after = {t: wait_for_updates(conn, t, before[t].n_tup_upd + expected[t]) for t in tables}
    summary: dict[str, dict[str, Any]] = {}
    for w in WORKLOADS:
        summary[w.key] = {}
        for clients in cfg.clients:
            cell = [r for r in runs if r["workload"] == w.key and r["clients"] == clients]
            good = [r for r in cell if r["ok"]]
            summary[w.key][str(clients)] = {
                "tps_median": statistics.median(r["tps"] for r in good) if good else None,
                "tps_runs": [r["tps"] for r in cell],
                "latency_ms_median": statistics.median(r["latency_ms"] for r in good)
                if good
                else None,
                "server_cpu_us_per_tx": statistics.median(
                    r["server_cpu_us_per_tx"] or 0 for r in good
                )
                if good
                else None,
                "client_cpu_us_per_tx": statistics.median(
                    r["client_cpu_us_per_tx"] or 0 for r in good
                )
                if good
                else None,
                "wal_bytes_per_tx": statistics.median(r["wal_bytes_per_tx"] or 0 for r in good)
                if good
                else None,
                "ok": len(good) == len(cell),
            }
    hot = {
        t: {
            "updates": after[t].n_tup_upd - before[t].n_tup_upd,
            "hot_pct": pct(
                after[t].n_tup_hot_upd - before[t].n_tup_hot_upd,
                after[t].n_tup_upd - before[t].n_tup_upd,
            ),
        }
        for t in after
    }
    return {
        "users": cfg.tput_users,
        "clients": list(cfg.clients),
        "primary_clients": cfg.primary_clients,
        "seconds": cfg.seconds,
        "rounds": cfg.rounds,
        "workloads": [asdict(w) | {"script": w.script} for w in WORKLOADS],
        "runs": runs,
        "summary": summary,
        "hot_during_throughput": hot,
        "single_client_breakdown": breakdown,
    }


# --------------------------------------------------------------------------- helpers


def pct(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def growth_pct(before: int, after: int) -> float | None:
    return 100.0 * (after - before) / before if before else None


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def server_info(cluster: PostgresCluster) -> dict[str, Any]:
    with connect(cluster, "postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings "
            "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', "
            "'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'autovacuum', "
            "'wal_compression', 'max_connections') ORDER BY name"
        ).fetchall()
    assert version is not None
    return {"server_version": str(version[0]), "settings": {str(k): str(v) for k, v in settings}}


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the measured numbers."""
    tput = res["throughput"]["summary"]
    c = str(res["throughput"]["primary_clients"])

    def tps(key: str) -> float | None:
        value = tput[key][c]["tps_median"]
        return float(value) if value is not None else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    hot = res["hot"]["presence"]
    small, large = res["scaling"]["small"], res["scaling"]["large"]
    size_note = f"{large['users']:,} vs {small['users']:,} users, {small['online']:,} online"
    targets = [
        (
            "heartbeat_vs_select1",
            f"heartbeat RPC / SELECT 1 throughput (c={c})",
            div(tps("heartbeat_rpc"), tps("select_1")),
            "x",
            ">=",
            0.45,
        ),
        (
            "heartbeat_vs_naive",
            f"heartbeat RPC / naive plain UPDATE throughput (c={c})",
            div(tps("heartbeat_rpc"), tps("naive_update")),
            "x",
            ">=",
            2.0,
        ),
        (
            "hot_pct",
            "HOT share of steady-state heartbeats",
            hot["steady"]["hot_pct"],
            "%",
            ">=",
            95.0,
        ),
        (
            "heap_growth",
            f"heap growth after {res['hot']['beats_per_user']} beats per user",
            hot["heap_growth_pct"],
            "%",
            "<=",
            10.0,
        ),
        (
            "sweep_time_growth",
            f"sweep mean time growth ({size_note})",
            div(large["sweep"]["mean_ms"], small["sweep"]["mean_ms"]),
            "x",
            "<=",
            1.5,
        ),
        (
            "sweep_buffers_growth",
            "sweep buffers growth (same sizes)",
            div(large["sweep"]["buffers"], small["sweep"]["buffers"]),
            "x",
            "<=",
            1.5,
        ),
        (
            "list_time_growth",
            "list-online mean time growth (same sizes)",
            div(large["list_online"]["mean_ms"], small["list_online"]["mean_ms"]),
            "x",
            "<=",
            1.5,
        ),
        (
            "list_buffers_growth",
            "list-online buffers growth (same sizes)",
            div(large["list_online"]["buffers"], small["list_online"]["buffers"]),
            "x",
            "<=",
            1.5,
        ),
    ]
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


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - t0, 1)


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    timer = Timer()
    machine = machine_info()
    if machine["loadavg_at_start"][0] > 0.5:
        print(
            f"WARNING: 1-minute load average is {machine['loadavg_at_start'][0]:.2f} before "
            "the run: other processes share the CPUs and will lower and scatter the numbers.",
            flush=True,
        )
    cluster = PostgresCluster(durable=True, pg_cron=False, settings=CLUSTER_SETTINGS)
    server = PresenceTestServer(cluster=cluster)
    result: dict[str, Any] = {"format": 1, "mode": cfg.mode, "config": asdict(cfg)}
    with timer.phase("start cluster, apply the shipped SQL"):
        server.start()
    try:
        result["machine"] = machine
        result["postgres"] = server_info(cluster)
        with tempfile.TemporaryDirectory(prefix="presence-bench-") as tmp:
            bench = Pgbench(cluster, Path(tmp))
            result["postgres"]["pgbench"] = bench.version()
            dbs = {
                "small": ("bench_small", cfg.small_users),
                "large": ("bench_large", cfg.large_users),
            }
            with timer.phase("load users"):
                for dbname, n in dbs.values():
                    cluster.create_database(dbname, template=server.template_name)
                    with connect(cluster, dbname) as conn:
                        load_users(conn, n, online=cfg.online_users)
                        conn.execute("VACUUM (ANALYZE)")
                    print(f"  {dbname}: {n:,} users, {cfg.online_users:,} online", flush=True)
                cluster.create_database("bench_hot", template=server.template_name)
                with connect(cluster, "bench_hot") as conn:
                    load_users(conn, cfg.hot_users, online=0)
                    create_naive_copy(conn)
                print(f"  bench_hot: {cfg.hot_users:,} users, all offline", flush=True)
                cluster.create_database("bench_tput", template=server.template_name)
                with connect(cluster, "bench_tput") as conn:
                    load_users(conn, cfg.tput_users, online=0, all_online=True)
                    create_naive_copy(conn)
                    # Only for the update_floor_rpc workload, in this throwaway database.
                    conn.execute(
                        "GRANT UPDATE (status, last_heartbeat) ON public.users TO authenticated"
                    )
                print(f"  bench_tput: {cfg.tput_users:,} users, all online", flush=True)
                with connect(cluster, "postgres") as conn:
                    conn.execute("CHECKPOINT")
            with timer.phase(
                f"sweep and list-online at {cfg.small_users:,} vs {cfg.large_users:,} users"
            ):
                result["scaling"] = scaling_phase(cfg, cluster, dbs)
            with timer.phase(f"HOT updates and growth: {cfg.hot_beats_per_user} beats per user"):
                result["hot"] = hot_phase(cfg, cluster, bench, "bench_hot")
            with timer.phase(
                f"throughput: pgbench -M prepared -j 2, {cfg.seconds} s x {cfg.rounds} round(s)"
            ):
                result["throughput"] = throughput_phase(cfg, cluster, bench, "bench_tput")
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
    parser.add_argument(
        "--render-only",
        type=Path,
        metavar="JSON",
        help="do not measure: print the report of an earlier run",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the generated parts of docs/performance.md, docs/scaling.md and the charts",
    )
    args = parser.parse_args(argv)

    if args.render_only:
        result = json.loads(args.render_only.read_text())
    else:
        cfg = QUICK if args.quick else FULL
        result = run_benchmark(cfg)
        output = args.output or RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
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
