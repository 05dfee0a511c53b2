#!/usr/bin/env python3
"""Privacy benchmark (``make bench``): what the visibility rules cost, and
``presence_counts()`` at 100k and 1M users with 1,000 online.

One throwaway, durable PostgreSQL 15 cluster; for each size two databases with the same
rows: ``on`` has every shipped migration, ``off`` has migration 20240000000007_privacy
rolled back (the reads as they were before it). Every read runs the way PostgREST runs a
request (one transaction: ``SET LOCAL ROLE authenticated``, the JWT claims, the call),
with pgbench (``-M prepared``), the two databases alternating round by round so both see
the same machine load. Default settings everywhere (nobody changed a setting, the
default hook): the cost every app pays. A second variant gives 10 % of the online users
'contacts' (the example friendships hook) and makes 5 % invisible.

``presence_counts()`` is also checked against a brute-force count through the view.

Usage::

    python bench/bench_privacy.py                # full run (a few minutes)
    python bench/bench_privacy.py --quick        # smoke run (10k / 100k users)
    python bench/bench_privacy.py --update-docs  # also rewrite docs/performance.md's block
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

from presence_sdk import migrations
from presence_sdk.testing import PostgresCluster, PresenceTestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sql as base  # sibling module: loader, pgbench runner, PostgREST envelope

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
START, END = "<!-- privacy-bench:start -->", "<!-- privacy-bench:end -->"

PRIVACY = next(m for m in migrations() if m.name == "privacy")
FRIENDSHIPS_SQL = REPO / "examples" / "privacy_friendships.sql"


@dataclass(frozen=True, kw_only=True)
class Config:
    mode: str
    sizes: tuple[int, ...]
    online: int
    seconds: int
    rounds: int
    clients: int
    counts_runs: int


FULL = Config(
    mode="full",
    sizes=(100_000, 1_000_000),
    online=1_000,
    seconds=5,
    rounds=3,
    clients=2,
    counts_runs=200,
)
QUICK = Config(
    mode="quick",
    sizes=(10_000, 100_000),
    online=1_000,
    seconds=2,
    rounds=1,
    clients=2,
    counts_runs=30,
)


def uid(k: str) -> str:
    return base.uuid_sql(k)


def reads(n: int, online: int) -> dict[str, str]:
    """pgbench scripts (the call inside the PostgREST envelope), viewer: a random user."""
    step = max(1, n // online)
    ids = uid(f":off + g * {step}")
    lookup = (
        f"SELECT count(*) FROM public.presence_get((SELECT array_agg({ids})"
        " FROM generate_series(0, 999) AS g));"
    )
    pick = "\\set k random(1, :nusers)\n"
    calls = {
        "get_1": f"{pick}SELECT * FROM public.presence_get(ARRAY[{uid(':k')}]);",
        "get_1000": f"\\set off random(1, {step})\n{lookup}",
        "is_online": f"{pick}SELECT public.presence_is_online({uid(':k')});",
        "list_online_100": "SELECT count(*) FROM public.presence_list_online(100, NULL);",
        "counts": "SELECT public.presence_counts();",
    }
    out = {}
    for key, call in calls.items():
        head, _, tail = call.rpartition("\n")
        out[key] = base.RANDOM_USER + (head + "\n" if head else "") + base.postgrest_envelope(tail)
    return out


def prepare(
    cluster: PostgresCluster,
    template: str,
    dbname: str,
    n: int,
    cfg: Config,
    *,
    privacy: bool,
    settings: bool,
) -> None:
    cluster.create_database(dbname, template=template)
    with base.connect(cluster, dbname) as conn:
        base.load_users(conn, n, online=cfg.online)
        # The online users as live sessions (as clients on migration 5 leave them).
        conn.execute("SELECT presence_private.adopt_legacy(NULL)")
        if settings:
            add_settings(conn)
        if not privacy:
            conn.execute(PRIVACY.down)
            # Like for like: the lookups keep one plan per session on both sides (the
            # privacy migration sets this; without it a custom plan is made per call).
            for fn in ("presence_get(uuid[])", "presence_list_online(integer, uuid)"):
                conn.execute(f"ALTER FUNCTION public.{fn} SET plan_cache_mode = force_generic_plan")
        conn.execute("VACUUM (ANALYZE)")


def add_settings(conn: psycopg.Connection[Any]) -> None:
    """10 % of the online users: presence for contacts only, each a friend of ten users;
    5 % invisible."""
    conn.execute(FRIENDSHIPS_SQL.read_text())
    conn.execute(
        "WITH online AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM public.users "
        "WHERE status <> 'offline') "
        "INSERT INTO public.presence_privacy (user_id, presence_visibility, last_seen_visibility) "
        "SELECT id, 'contacts', 'contacts' FROM online WHERE k % 10 = 0"
    )
    conn.execute(
        "INSERT INTO public.friendships (user_id, friend_id) "
        "SELECT p.user_id, f.id FROM public.presence_privacy AS p "
        "CROSS JOIN LATERAL (SELECT u.id FROM public.users AS u WHERE u.id <> p.user_id "
        "ORDER BY u.id LIMIT 10 OFFSET (abs(hashtext(p.user_id::text)) % 1000)) AS f "
        "ON CONFLICT DO NOTHING"
    )
    ids = conn.execute(
        "SELECT array_agg(id) FROM (SELECT id, row_number() OVER (ORDER BY id) AS k "
        "FROM public.users WHERE status <> 'offline') AS o WHERE k % 20 = 1"
    ).fetchone()
    assert ids is not None
    conn.execute("SELECT presence_private.set_invisible(%s, true)", (ids[0],))


KEEP_ALIVE = (
    "UPDATE public.presence_sessions SET last_beat = now()",
    "UPDATE public.users SET last_heartbeat = now() WHERE status <> 'offline'",
)


def keep_alive(cluster: PostgresCluster, dbnames: Sequence[str]) -> None:
    """The online users beat again, as live clients do (a session times out after 45 s,
    and the reads run for minutes): every measurement sees the 1,000 users online."""
    for dbname in dbnames:
        with base.connect(cluster, dbname) as conn:
            for statement in KEEP_ALIVE:
                conn.execute(statement)


def pgbench_reads(
    bench: base.Pgbench,
    cpu: base.CpuMeter,
    cluster: PostgresCluster,
    pairs: dict[str, str],
    *,
    n: int,
    cfg: Config,
) -> dict[str, Any]:
    """Each read on the ``on`` and ``off`` databases, alternating, ``rounds`` times.

    The cost of a call is the server's CPU time per transaction (postmaster and
    backends, from /proc): unlike throughput, it does not move with whatever else the
    machine runs meanwhile. Throughput is kept as a second, noisier view.
    """
    scripts = reads(n, cfg.online)
    out: dict[str, Any] = {}
    with base.connect(cluster, "postgres") as idle:
        for key, script in scripts.items():
            cpu_us: dict[str, list[float]] = {}
            tps: dict[str, list[float]] = {}
            for _ in range(cfg.rounds):
                keep_alive(cluster, list(pairs.values()))
                for side, dbname in pairs.items():
                    before = cpu.server_seconds()
                    result = bench.run(
                        f"{key}_{side}",
                        script,
                        dbname,
                        clients=cfg.clients,
                        seconds=cfg.seconds,
                        defines={"nusers": n},
                    )
                    if not result.ok:
                        raise RuntimeError(f"{key} on {dbname}: {result.error}")
                    base.wait_idle(idle)
                    used = cpu.server_seconds() - before
                    cpu_us.setdefault(side, []).append(1e6 * used / max(result.transactions, 1))
                    tps.setdefault(side, []).append(result.tps)
            cost = {side: statistics.median(v) for side, v in cpu_us.items()}
            out[key] = {
                "server_cpu_us_per_call": cost,
                "tps": {side: statistics.median(v) for side, v in tps.items()},
                "ratio_on_off": cost["on"] / cost["off"],
            }
            print(
                f"    {key:<16} on {cost['on']:8.1f} us  off {cost['off']:8.1f} us  "
                f"cost x{out[key]['ratio_on_off']:.2f}",
                flush=True,
            )
    return out


def as_viewer(conn: psycopg.Connection[Any], viewer: str) -> None:
    conn.execute("SET LOCAL ROLE authenticated")
    claims = json.dumps({"sub": viewer, "role": "authenticated"})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))


# presence_counts() timed by the client, on and off alternating in two schedules: call
# by call, and in blocks of BLOCK calls. Call by call, every `on` call follows an `off`
# call that counted the whole table (38 ms at 1M users), which leaves the CPU caches
# cold for it; in blocks, a call follows calls like it, as in a server that answers
# the same request over and over. Both are reported.
BLOCK = 20


def timed_counts(
    conns: dict[str, psycopg.Connection[Any]], viewer: str, runs: int, block: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    samples: dict[str, list[float]] = {side: [] for side in conns}
    answers: dict[str, Any] = {}
    for start in range(0, runs + 5, block):
        for side, conn in conns.items():
            for run in range(start, min(start + block, runs + 5)):
                with conn.transaction():
                    as_viewer(conn, viewer)
                    t0 = time.perf_counter()
                    row = conn.execute("SELECT public.presence_counts()").fetchone()
                    elapsed = (time.perf_counter() - t0) * 1000
                assert row is not None
                answers[side] = row[0]
                if run >= 5:
                    samples[side].append(elapsed)
    return samples, answers


def counts_direct(
    cluster: PostgresCluster, pairs: dict[str, str], cfg: Config, n: int
) -> dict[str, Any]:
    """presence_counts() timed by the client (alternating), buffers, and a brute force."""
    step = max(1, n // cfg.online)
    viewer = f"{base.UUID_PREFIX}{base.UUID_BASE + step}"
    conns = {side: base.connect(cluster, db) for side, db in pairs.items()}
    try:
        keep_alive(cluster, list(pairs.values()))
        per_call, _ = timed_counts(conns, viewer, cfg.counts_runs, 1)
        keep_alive(cluster, list(pairs.values()))
        samples, answers = timed_counts(conns, viewer, cfg.counts_runs, BLOCK)
        conn = conns["on"]
        with conn.transaction():
            as_viewer(conn, viewer)
            brute = dict(
                conn.execute(
                    "SELECT status, count(*) FROM public.user_presence GROUP BY status"
                ).fetchall()
            )
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT public.presence_counts()"
            ).fetchone()
        assert plan is not None
    finally:
        for c in conns.values():
            c.close()
    got = answers["on"]
    exact = all(got[s] == brute.get(s, 0) for s in ("online", "away", "busy"))
    offline_error = got["offline"] - brute.get("offline", 0)
    out: dict[str, Any] = {
        side: {
            "median_ms": statistics.median(v),
            "p95_ms": sorted(v)[int(len(v) * 0.95)],
            "median_ms_call_by_call": statistics.median(per_call[side]),
            "answer": answers[side],
        }
        for side, v in samples.items()
    }
    out["block"] = BLOCK
    out["brute_force"] = brute
    out["present_exact"] = exact
    out["offline_error"] = offline_error
    out["buffers"] = base._buffers(plan[0][0]["Plan"])
    print(
        f"    counts (client) on {out['on']['median_ms']:.3f} ms  off "
        f"{out['off']['median_ms']:.3f} ms (blocks of {BLOCK}), on "
        f"{out['on']['median_ms_call_by_call']:.3f} ms call by call  exact={exact}  "
        f"offline error {offline_error}",
        flush=True,
    )
    return out


def run(cfg: Config) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    machine = base.machine_info()
    cluster = PostgresCluster(durable=True, pg_cron=False, settings=base.CLUSTER_SETTINGS)
    server = PresenceTestServer(cluster=cluster)
    server.start()
    result: dict[str, Any] = {
        "format": 1,
        "mode": cfg.mode,
        "config": asdict(cfg),
        "machine": machine,
        "sizes": {},
    }
    try:
        result["postgres"] = base.server_info(cluster)
        with tempfile.TemporaryDirectory(prefix="presence-privacy-bench-") as tmp:
            bench = base.Pgbench(cluster, Path(tmp))
            assert cluster.datadir is not None
            cpu = base.CpuMeter(cluster.datadir)
            for n in cfg.sizes:
                print(f"\n== {n:,} users, {cfg.online:,} online", flush=True)
                pairs = {"on": f"priv_on_{n}", "off": f"priv_off_{n}"}
                for side, dbname in pairs.items():
                    prepare(
                        cluster,
                        server.template_name,
                        dbname,
                        n,
                        cfg,
                        privacy=side == "on",
                        settings=False,
                    )
                with base.connect(cluster, "postgres") as conn:
                    conn.execute("CHECKPOINT")
                entry = {
                    "reads": pgbench_reads(bench, cpu, cluster, pairs, n=n, cfg=cfg),
                    "counts": counts_direct(cluster, pairs, cfg, n),
                }
                if n == max(cfg.sizes):
                    print("  with settings (10 % contacts, 5 % invisible)", flush=True)
                    mixed = {"on": f"priv_mixed_{n}", "off": pairs["off"]}
                    prepare(
                        cluster,
                        server.template_name,
                        mixed["on"],
                        n,
                        cfg,
                        privacy=True,
                        settings=True,
                    )
                    entry["with_settings"] = {
                        "reads": pgbench_reads(bench, cpu, cluster, mixed, n=n, cfg=cfg),
                        "counts": counts_direct(cluster, mixed, cfg, n),
                    }
                    cluster.drop_database(mixed["on"])
                for dbname in pairs.values():
                    cluster.drop_database(dbname)
                result["sizes"][str(n)] = entry
    finally:
        server.stop()
    result["started_at"] = started.isoformat(timespec="seconds")
    result["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return result


# ---------------------------------------------------------------------------- report


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, why, met) rows."""
    rows = []
    big = res["sizes"][str(max(int(k) for k in res["sizes"]))]
    for key, label in (("get_1", "one user"), ("get_1000", "1,000-id lookup")):
        ratio = big["reads"][key]["ratio_on_off"]
        rows.append(
            (
                f"presence read, {label}: rules on <= 1.3x off",
                f"{ratio:.2f}x",
                "server CPU per call, PostgREST envelope",
                ratio <= 1.3,
            )
        )
    cpu_ms = big["reads"]["counts"]["server_cpu_us_per_call"]["on"] / 1000
    rows.append(
        (
            "presence_counts() at 1M users, 1,000 online <= 2 ms",
            f"{cpu_ms:.2f} ms",
            "server CPU per call, PostgREST envelope included",
            cpu_ms <= 2.0,
        )
    )
    on = big["counts"]["on"]
    ms = on["median_ms"]
    rows.append(
        (
            "presence_counts() at 1M users, 1,000 online <= 2 ms",
            f"{ms:.2f} ms",
            f"client-timed median, on/off alternating in blocks of {big['counts'].get('block', 1)}",
            ms <= 2.0,
        )
    )
    if "median_ms_call_by_call" in on:
        ms = on["median_ms_call_by_call"]
        rows.append(
            (
                "presence_counts() at 1M users, 1,000 online <= 2 ms",
                f"{ms:.2f} ms",
                "client-timed median, on/off alternating call by call (each after a "
                "whole-table count of off)",
                ms <= 2.0,
            )
        )
    return rows


def present(counts: dict[str, Any]) -> int:
    """Users counted online, away or busy."""
    return sum(int(counts[s]) for s in ("online", "away", "busy"))


def render(res: dict[str, Any]) -> str:
    sizes = sorted(int(k) for k in res["sizes"])
    load = res["machine"].get("loadavg_at_start", [None])[0]
    lines = [
        f"Measured by `make bench` ({res['mode']} run, {res['started_at']}, 1-minute load "
        f"average {load:.2f} at the start, {res['config']['clients']} pgbench clients, "
        f"{res['config']['rounds']} alternating rounds of {res['config']['seconds']} s). "
        "Cost = the server's CPU time per call (postmaster and backends, from /proc) for "
        "the same request in the PostgREST envelope, `on` / `off`: `on` is every "
        "migration, `off` the same rows with migration 7 rolled back. Throughput is shown "
        "too; it moves with the machine's load.",
        "",
        "| target | measured | how | met |",
        "|---|---|---|---|",
    ]
    for target, measured, how, met in targets(res):
        lines.append(f"| {target} | {measured} | {how} | {'yes' if met else 'NO'} |")
    lines += [
        "",
        "| users | read | server CPU on | off | cost on/off | TPS on | TPS off |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for key, r in res["sizes"][str(n)]["reads"].items():
            c = r["server_cpu_us_per_call"]
            lines.append(
                f"| {n:,} | `{key}` | {c['on']:.0f} us | {c['off']:.0f} us | "
                f"{r['ratio_on_off']:.2f}x | {r['tps']['on']:.0f} | "
                f"{r['tps']['off']:.0f} |"
            )
    lines += [
        "",
        "| users | present | `presence_counts()` on (median / p95) | off (median) | "
        "buffers (on) | online/away/busy = brute force | offline estimate error |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        c = res["sizes"][str(n)]["counts"]
        lines.append(
            f"| {n:,} | {present(c['on']['answer']):,} | "
            f"{c['on']['median_ms']:.2f} / {c['on']['p95_ms']:.2f} ms | "
            f"{c['off']['median_ms']:.2f} ms | {c['buffers']:.0f} | "
            f"{'yes' if c['present_exact'] else 'NO'} | {c['offline_error']:+d} |"
        )
    mixed = res["sizes"][str(sizes[-1])].get("with_settings")
    if mixed:
        lines += [
            "",
            f"With settings at {sizes[-1]:,} users (10 % of the online users 'contacts' "
            "through the example friendships hook, 5 % invisible), against the same `off` "
            "database:",
            "",
            "| read | cost on/off |",
            "|---|---|",
        ]
        for key, r in mixed["reads"].items():
            lines.append(f"| `{key}` | {r['ratio_on_off']:.2f}x |")
        c = mixed["counts"]
        lines.append(
            f"| `presence_counts()` (client median) | {c['on']['median_ms']:.2f} ms, "
            f"{present(c['on']['answer']):,} present, "
            f"exact: {'yes' if c['present_exact'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def update_doc(res: dict[str, Any]) -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise RuntimeError(f"{DOC} has no {START} ... {END} block")
    DOC.write_text(f"{head}{START}\n{render(res)}{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run (10k / 100k users)")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the docs block")
    parser.add_argument("--render-only", type=Path, metavar="JSON", help="report a saved run")
    args = parser.parse_args(argv)
    if args.render_only:
        res = json.loads(args.render_only.read_text())
    else:
        cfg = QUICK if args.quick else FULL
        res = run(cfg)
        out = RESULTS_DIR / ("privacy-quick.json" if args.quick else "privacy.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nresults written to {out.relative_to(REPO)}")
    print()
    print(render(res))
    if args.update_docs and res["mode"] == "full":
        update_doc(res)
        print(f"updated {DOC.relative_to(REPO)}")
    elif args.update_docs:
        print("quick run: docs not updated (they show full runs only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
