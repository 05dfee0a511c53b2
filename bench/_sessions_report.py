"""Render bench_sessions.py results: terminal report and the docs' ``sessions_*`` blocks.

Everything is computed from the results JSON; no figure is written by hand. The
blocks live in docs/performance.md between ``<!-- bench:begin sessions_NAME -->`` and
``<!-- bench:end sessions_NAME -->`` (the same markers bench_sql.py rewrites).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _bench_report as common

__all__ = ["render_markdown", "render_text", "update_docs"]

_num, _table, _div = common._num, common._table, common._div


def cadence_section(res: dict[str, Any], *, markdown: bool) -> str:
    c = res["cadence"]
    s = c["summary"]
    labels = {d["key"]: d["label"] for d in c["designs"]}
    base = s["heartbeat_010"]
    per_session = s["session_beat"]
    headers = [
        "design",
        "sessions per request",
        "sessions/s",
        "vs per-session RPC",
        "server CPU µs per beat",
        "vs 0.1.0 heartbeat",
        "WAL B per beat",
        "public.users writes per beat",
        "HOT: presence_sessions",
        "HOT: users",
    ]
    rows = []
    for d in c["designs"]:
        x = s[d["key"]]
        if not x.get("ok") and "sessions_per_s" not in x:
            rows.append([labels[d["key"]], "failed", *([""] * (len(headers) - 2))])
            continue
        tables = x["tables"]
        sess = tables.get("public.presence_sessions")
        users = tables["public.users"]
        rows.append(
            [
                labels[d["key"]],
                _num(d["batch"]),
                _num(x["sessions_per_s"]),
                _num(_div(x["sessions_per_s"], per_session["sessions_per_s"]), ".1f", "x"),
                _num(x["server_cpu_us_per_session"], ",.1f"),
                _num(
                    _div(x["server_cpu_us_per_session"], base["server_cpu_us_per_session"]),
                    ".2f",
                    "x",
                ),
                _num(x["wal_bytes_per_session"], ",.0f"),
                _num(users["updates_per_beat"], ".2f"),
                "-" if sess is None else _num(sess["hot_pct"], ".1f", " %"),
                _num(users["hot_pct"], ".1f", " %"),
            ]
        )
    body = _table(headers, rows, markdown=markdown)
    starts = [
        f"{labels[k]}: {_num(v['start']['server_cpu_us_per_session'], ',.0f')} µs, "
        f"{_num(v['start']['users_updates'])} users writes"
        for k, v in s.items()
        if "start" in v
    ]
    notes = [
        f"{c['users']:,} users (one session each) per design, each design in its own "
        f"database; every session beats once per round, rounds {c['interval_s']:.0f} s "
        f"+- {c['jitter']:.0%} apart (timeout {c.get('timeout_s', 45):.0f} s: the default "
        "timings scaled so that the seconds a round takes are small against the jitter), "
        "designs interleaved round by round; round 1 starts "
        "the sessions, round 2 warms up, the median of the "
        f"{c['rounds'] - 2} rounds after them is shown.",
        "First round (session start), server CPU per beat and writes to public.users: "
        + "; ".join(starts)
        + ".",
    ]
    sep = "\n\n" if markdown else "\n"
    return body + sep + sep.join(notes)


def sweep_section(res: dict[str, Any], *, markdown: bool) -> str:
    sw = sorted(res["sweep"].values(), key=lambda v: (v["live_sessions"], v["users"]))
    smallest = sw[0]
    per_session = smallest["sweep"]["mean_ms"] / smallest["live_sessions"]
    rows = []
    for v in sw:
        rows.append(
            [
                f"{v['users']:,}",
                f"{v['live_sessions']:,}",
                _num(v["sweep"]["mean_ms"], ".2f"),
                _num(v["sweep"]["p95_ms"], ".2f"),
                _num(v["sweep"]["buffers"], ",.0f"),
                _num(1000 * v["sweep"]["mean_ms"] / v["live_sessions"], ".2f"),
                _num(_div(v["sweep"]["mean_ms"] / v["live_sessions"], per_session), ".2f", "x"),
                _num(v["list_online"]["mean_ms"], ".3f"),
                common._mib(v["sessions_bytes"]),
            ]
        )
    headers = [
        "users",
        "live sessions",
        "sweep mean ms",
        "sweep p95 ms",
        "sweep buffers",
        "sweep µs per live session",
        f"per live session vs {smallest['users']:,} / {smallest['live_sessions']:,}",
        "list-online(100) mean ms",
        "presence_sessions size",
    ]
    body = _table(headers, rows, markdown=markdown)
    plans = []
    largest = sw[-1]
    for plan in largest["sweep"]["inner_plans"][:4]:
        plans.append(
            f"sweep at {largest['users']:,} users / {largest['live_sessions']:,} sessions: "
            + " > ".join(plan["nodes"])
            + f" ({plan['buffers']:,} buffers)"
        )
    note = (
        f"The sweep in steady state (every session live: nothing to end), mean of "
        f"{smallest['sweep']['runs']} runs after 5 warm-up runs, the databases alternating "
        "run by run; buffers from EXPLAIN (ANALYZE, BUFFERS) including the statements run "
        "inside the function."
    )
    sep = "\n\n" if markdown else "\n"
    if markdown:
        plans = [f"- {p}" for p in plans]
    return body + sep + note + sep + "\n".join(plans)


def render_text(res: dict[str, Any]) -> str:
    parts = [
        "=" * 78,
        f"presence_sdk sessions benchmark ({res['mode']} run)",
        *common.header_lines(res),
        "=" * 78,
        "",
        "1. Steady cadence: one beat per session per 15 s, in the PostgREST envelope",
        cadence_section(res, markdown=False),
        "",
        "2. Sweep and list-online by table size and live sessions",
        sweep_section(res, markdown=False),
        "",
        "3. Targets",
        common.targets_section(res, markdown=False),
        "",
    ]
    failed = [x for x in res["targets"] if not x["passed"]]
    if failed:
        parts += [
            "!" * 78,
            f"!!! FAIL: {len(failed)} of {len(res['targets'])} targets missed:",
            *(f"!!!   {x['label']}: {common._target_text(x)}" for x in failed),
            "!" * 78,
        ]
    else:
        parts.append(f"All {len(res['targets'])} targets PASS.")
    return "\n".join(parts)


def render_markdown(res: dict[str, Any]) -> dict[str, str]:
    header = "\n".join(
        "- **{}**: {}".format(*(part.strip() for part in line.split(":", 1)))
        for line in common.header_lines(res)
    )
    return {
        "sessions_run": header,
        "sessions_targets": common.targets_section(res, markdown=True),
        "sessions_cadence": cadence_section(res, markdown=True),
        "sessions_sweep": sweep_section(res, markdown=True),
    }


def update_docs(res: dict[str, Any], docs_dir: Path) -> list[Path]:
    """Rewrite the sessions_* blocks of docs/performance.md; return changed files."""
    path = docs_dir / "performance.md"
    text = path.read_text()
    new = common._replace_blocks(text, render_markdown(res))
    if new == text:
        return []
    path.write_text(new)
    return [path]
