"""Render bench_sql.py results: terminal table, Markdown blocks for the docs, SVG charts.

Everything here is computed from the results JSON; no figure is written by hand.
The docs carry generated blocks between ``<!-- bench:begin NAME -->`` and
``<!-- bench:end NAME -->`` markers that :func:`update_docs` rewrites.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["capacity", "render_markdown", "render_text", "scaleout_section", "update_docs"]

WORKLOAD_ORDER = (
    "select_1",
    "heartbeat_rpc",
    "naive_update",
    "naive_rpc",
    "update_floor_rpc",
    "update_floor",
    "heartbeat_rpc_pipelined",
)
HEARTBEAT_INTERVAL_S = 15  # presence_config.heartbeat_interval_seconds default
CPU_BUDGET = 0.5  # share of the machine a capacity estimate may spend on heartbeats


# ----------------------------------------------------------------------- formatting


def _num(value: float | None, fmt: str = ",.0f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


def _signed_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _target_text(t: dict[str, Any]) -> str:
    unit = " %" if t["unit"] == "%" else "x"
    measured = "n/a" if t["measured"] is None else f"{t['measured']:.2f}{unit}"
    return f"{measured} (target {t['op']} {t['target']:g}{unit})"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------- sections


def _labels(res: dict[str, Any]) -> dict[str, str]:
    return {w["key"]: w["label"] for w in res["throughput"]["workloads"]}


def _tps(res: dict[str, Any], key: str, clients: int | str) -> float | None:
    value = res["throughput"]["summary"][key][str(clients)]["tps_median"]
    return None if value is None else float(value)


def header_lines(res: dict[str, Any]) -> list[str]:
    m, pg = res["machine"], res["postgres"]
    s = pg["settings"]
    return [
        f"date:     {res['started_at']} (UTC), {res['mode']} run, {res['duration_s']:.0f} s",
        f"machine:  {m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"{m['ram_gib']} GiB RAM, Linux {m['kernel']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}, at end {m['loadavg_at_end'][0]:.2f}",
        f"postgres: {pg['server_version']}, {pg['pgbench']}",
        "settings: "
        + ", ".join(
            f"{k}={s[k]}"
            for k in (
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "max_wal_size",
                "autovacuum",
            )
            if k in s
        ),
    ]


def throughput_section(res: dict[str, Any], *, markdown: bool) -> str:
    t = res["throughput"]
    labels = _labels(res)
    pc = t["primary_clients"]
    headers = [
        "workload",
        *(f"c={c} tps" for c in t["clients"]),
        f"vs SELECT 1 (c={pc})",
        f"server CPU µs/tx (c={pc})",
        f"pgbench CPU µs/tx (c={pc})",
        f"WAL B/tx (c={pc})",
    ]
    rows = []
    base = _tps(res, "select_1", pc)
    for key in WORKLOAD_ORDER:
        cell = t["summary"][key][str(pc)]
        cells = [labels[key]]
        cells += [_num(_tps(res, key, c)) for c in t["clients"]]
        cells.append(_num(_div(_tps(res, key, pc), base), ".2f", "x"))
        cells.append(_num(cell.get("server_cpu_us_per_tx"), ",.0f"))
        cells.append(_num(cell.get("client_cpu_us_per_tx"), ",.0f"))
        cells.append(_num(cell["wal_bytes_per_tx"], ",.0f"))
        rows.append(cells)
    hb, nv, nr = (_tps(res, k, pc) for k in ("heartbeat_rpc", "naive_update", "naive_rpc"))

    def cpu(key: str) -> float | None:
        value = t["summary"][key][str(pc)].get("server_cpu_us_per_tx")
        return None if value is None else float(value)

    hot = t["hot_during_throughput"]
    notes = [
        f"Median of {t['rounds']} interleaved round(s) of {t['seconds']} s per cell; "
        f"random users among {t['users']:,} (all online: steady-state beats).",
        f"heartbeat RPC vs naive plain UPDATE (c={pc}): {_num(_div(hb, nv), '.2f', 'x')}; "
        f"vs naive UPDATE in the same PostgREST envelope: {_num(_div(hb, nr), '.2f', 'x')}.",
        "Server CPU per request: the PostgREST envelope around the cheapest possible "
        f"write costs {_num(cpu('update_floor_rpc'), ',.0f', ' µs')}, the heartbeat RPC "
        f"{_num(cpu('heartbeat_rpc'), ',.0f', ' µs')}, so the function itself adds "
        f"{_num(_sub(cpu('heartbeat_rpc'), cpu('update_floor_rpc')), ',.0f', ' µs')}; "
        f"one SELECT 1 round trip costs {_num(cpu('select_1'), ',.0f', ' µs')}.",
        "HOT share during these runs: presence "
        f"{_num(hot['public.presence_sessions']['hot_pct'], '.1f', ' %')} (presence_sessions), "
        "naive "
        f"{_num(hot['public.naive_users']['hot_pct'], '.1f', ' %')}.",
    ]
    body = _table(headers, rows, markdown=markdown)
    sep = "\n\n" if markdown else "\n"
    return body + sep + sep.join(notes)


def _readable(statement: str) -> str:
    """Show the pgbench uuid expression as the literal a real request carries."""
    return re.sub(r"00000000-0000-4000-8000-' \|\| :uid \|\| '", "<uuid>", statement)


def breakdown_section(res: dict[str, Any], *, markdown: bool) -> str:
    """Where one heartbeat request's time goes (one client, pgbench -r)."""
    b = res["throughput"]["single_client_breakdown"]
    rows = [
        [
            f"`{_readable(x['statement'])}`" if markdown else _readable(x["statement"]),
            f"{x['latency_ms']:.3f}",
        ]
        for x in b["heartbeat_rpc"]["statements"]
    ]
    total = sum(x["latency_ms"] for x in b["heartbeat_rpc"]["statements"])
    rows.append(["whole heartbeat request (sum)", f"{total:.3f}"])
    select1 = b["select_1"]["statements"]
    if select1:
        rows.append(
            [
                "for comparison: `SELECT 1;` alone"
                if markdown
                else "for comparison: SELECT 1; alone",
                f"{select1[0]['latency_ms']:.3f}",
            ]
        )
    return _table(["statement (1 client)", "latency ms"], rows, markdown=markdown)


def hot_section(res: dict[str, Any], *, markdown: bool) -> str:
    h = res["hot"]
    p, n = h["presence"], h["naive"]

    def sizes(d: dict[str, Any], key: str) -> str:
        s = d["sizes"]
        return f"{_mib(s['fresh'][key])} -> {_mib(s['after_all_beats'][key])}"

    rows = [
        [
            "HOT share, steady beats (2-10)",
            _num(p["steady"]["hot_pct"], ".1f", " %"),
            _num(n["steady"]["hot_pct"], ".1f", " %"),
        ],
        [
            "HOT share, session-start beat (1)",
            _num(p["session_start"]["hot_pct"], ".1f", " %"),
            _num(n["session_start"]["hot_pct"], ".1f", " %"),
        ],
        [
            "HOT share, all beats",
            _num(p["all_beats_hot_pct"], ".1f", " %"),
            _num(n["all_beats_hot_pct"], ".1f", " %"),
        ],
        ["heap size (fresh -> after)", sizes(p, "heap_bytes"), sizes(n, "heap_bytes")],
        ["heap growth", _signed_pct(p["heap_growth_pct"]), _signed_pct(n["heap_growth_pct"])],
        ["heap + indexes (fresh -> after)", sizes(p, "total_bytes"), sizes(n, "total_bytes")],
        [
            "heap + indexes growth",
            _signed_pct(p["total_growth_pct"]),
            _signed_pct(n["total_growth_pct"]),
        ],
        [
            "heap + indexes growth, steady beats only",
            _signed_pct(p["steady_total_growth_pct"]),
            _signed_pct(n["steady_total_growth_pct"]),
        ],
        [
            "WAL bytes per steady beat",
            _num(p["steady"]["wal_bytes_per_beat"], ",.0f"),
            _num(n["steady"]["wal_bytes_per_beat"], ",.0f"),
        ],
        [
            "WAL records per steady beat",
            _num(p["steady"]["wal_records_per_beat"], ".2f"),
            _num(n["steady"]["wal_records_per_beat"], ".2f"),
        ],
        [
            "full-page images in steady phase",
            _num(p["steady"]["wal_fpi"], ",.0f"),
            _num(n["steady"]["wal_fpi"], ",.0f"),
        ],
        [
            "WAL bytes per session-start beat",
            _num(p["session_start"]["wal_bytes_per_beat"], ",.0f"),
            _num(n["session_start"]["wal_bytes_per_beat"], ",.0f"),
        ],
    ]
    body = _table(["metric", "presence (shipped SQL)", "naive design"], rows, markdown=markdown)
    note = (
        f"{h['users']:,} users, {h['beats_per_user']} beats each, round-robin so every user "
        "gets exactly that many; beat 1 starts the session (offline -> online), beats 2-10 "
        "are steady state; a CHECKPOINT precedes the steady beats (their WAL includes one "
        "full-page image per page); autovacuum off for these two tables. Presence: the "
        "table a beat writes is public.presence_sessions (migration 5), whose rows beat 1 "
        "inserts, so its sizes count from after beat 1."
    )
    return body + ("\n\n" if markdown else "\n") + note


def scaling_section(res: dict[str, Any], *, markdown: bool) -> str:
    sc = res["scaling"]
    small, large = sc["small"], sc["large"]

    def row(label: str, metric: str, key: str, fmt: str) -> list[str]:
        a, b = small[metric][key], large[metric][key]
        return [label, _num(a, fmt), _num(b, fmt), _num(_div(b, a), ".2f", "x")]

    rows = [
        row("sweep: mean ms", "sweep", "mean_ms", ".3f"),
        row("sweep: p95 ms", "sweep", "p95_ms", ".3f"),
        row("sweep: buffers", "sweep", "buffers", ",.0f"),
        row("list-online(100): mean ms", "list_online", "mean_ms", ".3f"),
        row("list-online(100): p95 ms", "list_online", "p95_ms", ".3f"),
        row("list-online(100): buffers", "list_online", "buffers", ",.0f"),
        row("presence_counts(): mean ms (no target)", "counts", "mean_ms", ".2f"),
        row("presence_counts(): buffers (no target)", "counts", "buffers", ",.0f"),
        [
            "users table, heap + indexes",
            _mib(small["total_bytes"]),
            _mib(large["total_bytes"]),
            _num(_div(large["total_bytes"], small["total_bytes"]), ".1f", "x"),
        ],
    ]
    headers = ["metric", f"{small['users']:,} users", f"{large['users']:,} users", "growth"]
    body = _table(headers, rows, markdown=markdown)
    plans = []
    for metric, name in (("sweep", "sweep"), ("list_online", "list-online")):
        for plan in large[metric]["inner_plans"][:1]:
            plans.append(f"{name} plan at {large['users']:,} users: " + " > ".join(plan["nodes"]))
    note = (
        f"{small['online']:,} users online in both databases; mean of "
        f"{small['sweep']['runs']} runs after 5 warm-up runs, the two databases alternating "
        "run by run so both see the same machine load, timed by the client "
        "(includes one local round trip); buffers = shared hit + read of EXPLAIN (ANALYZE, "
        "BUFFERS), which include the statements run inside the function. list-online runs "
        "as an authenticated user in the PostgREST envelope."
    )
    sep = "\n\n" if markdown else "\n"
    if markdown:
        plans = [f"- {p}" for p in plans]
        return body + sep + note + sep + "\n".join(plans)
    return body + sep + note + sep + "\n".join(plans)


def targets_section(res: dict[str, Any], *, markdown: bool) -> str:
    rows = []
    for t in res["targets"]:
        verdict = "PASS" if t["passed"] else "FAIL"
        if markdown:
            verdict = "✅ PASS" if t["passed"] else "❌ FAIL"
        unit = " %" if t["unit"] == "%" else "x"
        rows.append(
            [
                t["label"],
                "n/a" if t["measured"] is None else f"{t['measured']:.2f}{unit}",
                f"{t['op']} {t['target']:g}{unit}",
                verdict,
            ]
        )
    return _table(["metric", "measured", "target", "result"], rows, markdown=markdown)


def capacity(res: dict[str, Any]) -> dict[str, float | None]:
    """Users one server sustains at a 15 s heartbeat, derived from the measurements.

    * ``users_at_budget``: measured heartbeat RPCs/s on this machine (pgbench shares
      the CPUs with Postgres) x 15 s x the CPU budget;
    * ``users_dedicated_at_budget``: the same from the measured server CPU time per
      heartbeat, as if Postgres had every CPU and the clients ran elsewhere.
    """
    pc = res["throughput"]["primary_clients"]
    rpc = _tps(res, "heartbeat_rpc", pc)
    wal = res["hot"]["presence"]["steady"]["wal_bytes_per_beat"]
    cpu_us = res["throughput"]["summary"]["heartbeat_rpc"][str(pc)].get("server_cpu_us_per_tx")
    dedicated = res["machine"]["nproc"] * 1e6 / cpu_us if cpu_us else None

    def users(beats: float | None, budget: float = CPU_BUDGET) -> float | None:
        return None if beats is None else beats * HEARTBEAT_INTERVAL_S * budget

    out: dict[str, float | None] = {
        "beats_per_s": rpc,
        "beats_per_s_pipelined": _tps(res, "heartbeat_rpc_pipelined", pc),
        "users_at_full_cpu": users(rpc, 1.0),
        "users_at_budget": users(rpc),
        "server_cpu_us_per_beat": cpu_us,
        "beats_per_s_dedicated": dedicated,
        "users_dedicated_at_budget": users(dedicated),
        "wal_bytes_per_beat": wal,
    }
    n = out["users_dedicated_at_budget"]
    out["wal_mib_per_s_dedicated_at_budget"] = (
        None if n is None or wal is None else n / HEARTBEAT_INTERVAL_S * wal / 1024**2
    )
    large = res["scaling"]["large"]
    out["bytes_per_user"] = large["total_bytes"] / large["users"]
    per_online = large["sweep"]["mean_ms"] / max(1, large["online"])
    out["sweep_ms_per_online_user"] = per_online
    out["sweep_ms_if_all_online_at_budget"] = None if n is None else per_online * n
    return out


def scaleout_section(res: dict[str, Any], *, markdown: bool) -> str:
    """Paper estimates for more than one machine, from the measured per-node figures."""
    cap = capacity(res)
    node = cap["beats_per_s_dedicated"]
    nproc = res["machine"]["nproc"]

    def users(beats: float | None, budget: float) -> str:
        return _num(None if beats is None else beats * HEARTBEAT_INTERVAL_S * budget)

    rows = [
        [
            f"1 node like this one ({nproc} CPUs), clients elsewhere",
            f"{CPU_BUDGET:.0%} of the node's CPU for heartbeats",
            users(node, CPU_BUDGET),
        ],
        [
            "same node + read replicas taking every read RPC",
            "80% of the primary's CPU for heartbeats",
            users(node, 0.8),
        ],
        [
            f"same node scaled up to {4 * nproc} CPUs",
            f"linear in CPUs (optimistic), {CPU_BUDGET:.0%} budget",
            users(None if node is None else node * 4, CPU_BUDGET),
        ],
    ]
    for workers in (4, 16):
        rows.append(
            [
                f"Citus, {workers} workers like this node, distributed by user id",
                f"{CPU_BUDGET:.0%} budget, x0.7 for the routing hop (assumed)",
                users(None if node is None else node * workers * 0.7, CPU_BUDGET),
            ]
        )
    return _table(["setup", "assumption", "users at one beat / 15 s"], rows, markdown=markdown)


def capacity_section(res: dict[str, Any], *, markdown: bool) -> str:
    cap = capacity(res)
    pc = res["throughput"]["primary_clients"]
    every = f"one beat / {HEARTBEAT_INTERVAL_S} s"
    budget = f"{CPU_BUDGET:.0%} CPU budget"
    rows = [
        [f"heartbeat RPCs/s, PostgREST envelope, c={pc}", "measured", _num(cap["beats_per_s"])],
        [
            "same, pipelined (one network round trip per request)",
            "measured",
            _num(cap["beats_per_s_pipelined"]),
        ],
        [f"users at {every}, whole machine", "derived", _num(cap["users_at_full_cpu"])],
        [f"users at {every}, {budget}", "derived", _num(cap["users_at_budget"])],
        [
            "server CPU per heartbeat request (all Postgres processes)",
            "measured",
            _num(cap["server_cpu_us_per_beat"], ",.0f", " µs"),
        ],
        [
            f"heartbeats/s if Postgres had all {res['machine']['nproc']} CPUs (clients elsewhere)",
            "derived",
            _num(cap["beats_per_s_dedicated"]),
        ],
        [
            f"users at {every} on that dedicated server, {budget}",
            "derived",
            _num(cap["users_dedicated_at_budget"]),
        ],
        ["WAL bytes per steady heartbeat", "measured", _num(cap["wal_bytes_per_beat"])],
        [
            "WAL rate at that user count",
            "derived",
            _num(cap["wal_mib_per_s_dedicated_at_budget"], ",.2f", " MiB/s"),
        ],
        [
            f"disk per user (heap + indexes, {res['scaling']['large']['users']:,} users)",
            "measured",
            _num(cap["bytes_per_user"], ",.0f", " B"),
        ],
        [
            "sweep time per online user",
            "measured",
            _num(cap["sweep_ms_per_online_user"], ",.4f", " ms"),
        ],
        [
            "sweep time if all users of that count were online (linear)",
            "derived",
            _num(cap["sweep_ms_if_all_online_at_budget"], ",.0f", " ms"),
        ],
    ]
    return _table(["quantity", "kind", "value"], rows, markdown=markdown)


# --------------------------------------------------------------------------- output


def render_text(res: dict[str, Any]) -> str:
    t, h, sc = res["throughput"], res["hot"], res["scaling"]
    parts = [
        "=" * 78,
        f"presence_sdk database benchmark ({res['mode']} run)",
        *header_lines(res),
        "=" * 78,
        "",
        f"1. Heartbeat throughput: pgbench -M prepared -j 2 over TCP, {t['users']:,} users",
        throughput_section(res, markdown=False),
        "",
        "1b. One heartbeat request, statement by statement (1 client, pgbench -r)",
        breakdown_section(res, markdown=False),
        "",
        f"2. HOT updates, table size and WAL: {h['users']:,} users x {h['beats_per_user']} beats",
        hot_section(res, markdown=False),
        "",
        f"3. Sweep and list-online cost: {sc['small']['users']:,} vs {sc['large']['users']:,} "
        f"users, {sc['online_users']:,} online",
        scaling_section(res, markdown=False),
        "",
        "4. One server's capacity (derived from the measurements above)",
        capacity_section(res, markdown=False),
        "",
        "5. Targets",
        targets_section(res, markdown=False),
        "",
    ]
    failed = [x for x in res["targets"] if not x["passed"]]
    if failed:
        parts += [
            "!" * 78,
            f"!!! FAIL: {len(failed)} of {len(res['targets'])} targets missed:",
            *(f"!!!   {x['label']}: {_target_text(x)}" for x in failed),
            "!" * 78,
        ]
    else:
        parts.append(f"All {len(res['targets'])} targets PASS.")
    return "\n".join(parts)


def render_markdown(res: dict[str, Any]) -> dict[str, str]:
    """The generated Markdown blocks, by marker name."""
    header = "\n".join(
        "- **{}**: {}".format(*(part.strip() for part in line.split(":", 1)))
        for line in header_lines(res)
    )
    return {
        "run": header,
        "targets": targets_section(res, markdown=True),
        "throughput": throughput_section(res, markdown=True),
        "breakdown": breakdown_section(res, markdown=True),
        "hot": hot_section(res, markdown=True),
        "scaling": scaling_section(res, markdown=True),
        "capacity": capacity_section(res, markdown=True),
        "scaleout": scaleout_section(res, markdown=True),
    }


# ------------------------------------------------------------------------------ SVG

_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d")


def svg_bar_chart(
    title: str,
    subtitle: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    value_format: Callable[[float], str],
    marker: tuple[float, str] | None = None,
) -> str:
    """A small horizontal grouped bar chart as standalone SVG (no dependencies).

    ``marker`` draws a dashed vertical line at that value with a label (a target).
    """
    label_w, bar_w, right = 300, 380, 90
    bar_h, gap, group_gap = 16, 3, 14
    top = 70
    group_h = len(series) * (bar_h + gap) + group_gap
    height = top + len(categories) * group_h + 20
    width = label_w + bar_w + right
    vmax = max((v for _, vals in series for v in vals if v is not None), default=1.0) or 1.0
    if marker is not None:
        vmax = max(vmax, marker[0])
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{e(title)}</text>',
        f'<text x="10" y="40" fill="#555555">{e(subtitle)}</text>',
    ]
    lx = label_w
    for i, (name, _) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        out.append(f'<rect x="{lx}" y="48" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 16}" y="58">{e(name)}</text>')
        lx += 24 + 7 * len(name)
    for ci, cat in enumerate(categories):
        y0 = top + ci * group_h
        mid = y0 + (len(series) * (bar_h + gap)) / 2
        out.append(f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end">{e(cat)}</text>')
        for si, (_, values) in enumerate(series):
            value = values[ci]
            y = y0 + si * (bar_h + gap)
            if value is None:
                out.append(f'<text x="{label_w + 4}" y="{y + 12}" fill="#999999">n/a</text>')
                continue
            w = max(1.0, bar_w * value / vmax)
            color = _COLORS[si % len(_COLORS)]
            out.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            )
            out.append(
                f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{e(value_format(value))}</text>'
            )
    out.append(
        f'<line x1="{label_w}" y1="{top - 4}" x2="{label_w}" y2="{height - 16}" stroke="#333333"/>'
    )
    if marker is not None:
        mx = label_w + bar_w * marker[0] / vmax
        out.append(
            f'<line x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{height - 16}" '
            'stroke="#d62728" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{mx:.1f}" y="{height - 4}" fill="#d62728" text-anchor="middle">'
            f"{e(marker[1])}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def throughput_svg(res: dict[str, Any]) -> str:
    t = res["throughput"]
    labels = _labels(res)
    series = [(f"{c} clients", [_tps(res, k, c) for k in WORKLOAD_ORDER]) for c in t["clients"]]
    return svg_bar_chart(
        "Heartbeat throughput (transactions/s, higher is better)",
        f"pgbench -M prepared -j 2, {t['users']:,} users, median of {t['rounds']} x "
        f"{t['seconds']} s; {res['machine']['nproc']} CPUs; {res['started_at'][:10]}",
        [labels[k] for k in WORKLOAD_ORDER],
        series,
        value_format=lambda v: f"{v:,.0f}",
    )


def scaling_svg(res: dict[str, Any]) -> str:
    sc = res["scaling"]
    small, large = sc["small"], sc["large"]
    rows = [
        ("sweep: mean time", "sweep", "mean_ms"),
        ("sweep: buffers", "sweep", "buffers"),
        ("list-online(100): mean time", "list_online", "mean_ms"),
        ("list-online(100): buffers", "list_online", "buffers"),
        ("presence_counts(): mean time", "counts", "mean_ms"),
    ]
    growth = [_div(large[m][k], small[m][k]) for _, m, k in rows]
    return svg_bar_chart(
        f"Cost at {large['users']:,} users / cost at {small['users']:,} users (lower is better)",
        f"same {sc['online_users']:,} users online in both; the table is "
        f"{large['users'] / small['users']:.0f}x larger; presence_counts() has no target; "
        f"{res['started_at'][:10]}",
        [label for label, _, _ in rows],
        [("growth", growth)],
        value_format=lambda v: f"{v:.2f}x",
        marker=(1.5, "target <= 1.5x"),
    )


# ----------------------------------------------------------------------------- docs

# A block may be empty (begin marker right before its end marker), as a new one is.
_BLOCK = re.compile(
    r"(<!-- bench:begin (?P<name>[a-z_]+) -->\n)(?:.*?\n)?(<!-- bench:end (?P=name) -->)", re.S
)


def _replace_blocks(text: str, blocks: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in blocks:
            return m.group(0)
        return m.group(1) + blocks[name] + "\n" + m.group(3)

    return _BLOCK.sub(sub, text)


def update_docs(res: dict[str, Any], docs_dir: Path) -> list[Path]:
    """Rewrite the generated blocks of the docs and the two charts; return changed files."""
    changed: list[Path] = []
    assets = docs_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name, svg in (
        ("bench-throughput.svg", throughput_svg(res)),
        ("bench-scaling.svg", scaling_svg(res)),
    ):
        path = assets / name
        path.write_text(svg)
        changed.append(path)
    blocks = render_markdown(res)
    for page in ("performance.md", "scaling.md"):
        path = docs_dir / page
        if not path.exists():
            continue
        text = path.read_text()
        new = _replace_blocks(text, blocks)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed
