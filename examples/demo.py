"""presence_sdk demo: real heartbeat clients against a throwaway PostgreSQL + pg_cron.

Run it with ``make demo`` (sets the machine up, then runs ``demo.py --fast``) or
``.venv/bin/python examples/demo.py [--fast]``.

What happens, on a throwaway PostgreSQL with pg_cron in a temporary directory (the
first one ``presence_sdk.testing.find_bindir`` finds: ``PRESENCE_PG_BINDIR``,
``pg_config`` on PATH, Debian's PostgreSQL, else PostgreSQL 18 from PyPI):

1. the shipped SQL is applied; the pg_cron job ``mark-inactive-users`` is scheduled;
2. five signed-in users start real ``PresenceClient`` heartbeat threads (dave's runs
   in a separate process), talking HTTP to a local PostgREST emulation;
3. bob goes ``away``, erin goes ``busy``;
4. carol stops cleanly: her client sends a leave, she is offline at once;
5. dave's process is killed with SIGKILL: no leave. Reads call him offline the
   moment his timeout passes; shortly after, the cron sweep writes it to the table
   (on pg_cron < 1.5, which has no interval schedules, within a minute);
6. ``verify_setup()`` checks the whole setup; everything is shut down and deleted.

``--fast`` shortens the timings (timeout 8 s, sweep every 2 s, heartbeat every 2 s)
so the demo takes about half a minute (up to a minute and a half on pg_cron < 1.5);
without it the shipped timings apply (45 s / 20 s / 15 s) and it takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from supabase import ClientOptions, create_client

from presence_sdk import PresenceClient, PresenceConfig, verify_setup
from presence_sdk.testing import LocalPostgREST, PresenceDatabase, PresenceTestServer

NAMES = ("alice", "bob", "carol", "dave", "erin")

# dave's client lives in its own process so that it can really be killed.
CHILD_CODE = """
import sys, time
from presence_sdk import PresenceClient, PresenceConfig
url, key, token = sys.argv[1:4]
client = PresenceClient.from_url(url, key, access_token=token, config=PresenceConfig(jitter=0.05))
client.start()
print("started", flush=True)
while True:
    time.sleep(60)
"""


@dataclass
class Row:
    status: str
    online: bool
    stored: str
    last_seen: datetime | None
    online_since: datetime | None


@dataclass
class Demo:
    db: PresenceDatabase
    api_url: str
    anon_key: str
    service_key: str
    timeout: int
    sweep: int
    interval: int
    sweep_period: int
    ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    clients: dict[str, PresenceClient] = field(default_factory=dict)
    child: subprocess.Popen[str] | None = None
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    last: dict[str, Row] = field(default_factory=dict)
    phase: str = ""
    left: set[str] = field(default_factory=set)
    live: bool = field(default_factory=sys.stdout.isatty)

    # -- output --------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, text: str) -> None:
        line = f"[{self.elapsed():5.1f}s] {text}"
        self.events.append(line)
        if not self.live:
            print(line, flush=True)

    def set_phase(self, text: str) -> None:
        self.phase = text
        if not self.live:
            print(f"\n== {text}", flush=True)

    def snapshot(self) -> dict[str, Row]:
        rows = self.db.query(
            "SELECT u.id::text AS id, p.status, p.online, u.status AS stored, p.last_seen, "
            "p.online_since FROM public.users u JOIN public.user_presence p ON p.user_id = u.id"
        )
        names = {v: k for k, v in self.ids.items()}
        return {
            names[r["id"]]: Row(
                r["status"], r["online"], r["stored"], r["last_seen"], r["online_since"]
            )
            for r in rows
            if r["id"] in names
        }

    def last_sweep_run(self) -> str:
        rows = self.db.query(
            "SELECT runid, status FROM cron.job_run_details d JOIN cron.job j USING (jobid) "
            "WHERE j.jobname = 'mark-inactive-users' ORDER BY runid DESC LIMIT 1"
        )
        return f"run #{rows[0]['runid']} {rows[0]['status']}" if rows else "no run yet"

    def table(self, rows: dict[str, Row]) -> str:
        now = datetime.now(UTC)

        def ago(ts: datetime | None) -> str:
            return "never" if ts is None else f"{(now - ts).total_seconds():5.1f}s ago"

        def since(ts: datetime | None) -> str:
            return "" if ts is None else f"{(now - ts).total_seconds():5.1f}s"

        lines = [
            f"{'user':<7} {'presence':<9} {'online':<7} {'stored status':<14} "
            f"{'last seen':<11} {'online for':<10}",
            "-" * 64,
        ]
        for name in NAMES:
            row = rows.get(name)
            if row is None:
                continue
            stale = "  <- sweep pending" if row.stored != "offline" and not row.online else ""
            lines.append(
                f"{name:<7} {row.status:<9} {'yes' if row.online else 'no':<7} "
                f"{row.stored:<14} {ago(row.last_seen):<11} {since(row.online_since):<10}{stale}"
            )
        return "\n".join(lines)

    def draw(self, rows: dict[str, Row]) -> None:
        if not self.live:
            return
        header = (
            f"presence_sdk demo  t={self.elapsed():5.1f}s   timeout {self.timeout}s · "
            f"sweep every {self.sweep_period}s · heartbeat every {self.interval}s"
        )
        body = "\n".join(self.events[-10:])
        sys.stdout.write(
            f"\x1b[H\x1b[2J{header}\n{self.phase}\n\n{self.table(rows)}\n\n"
            f"cron: {self.last_sweep_run()}\n\nevents:\n{body}\n"
        )
        sys.stdout.flush()

    def watch(self, seconds: float) -> None:
        """Poll presence for a while, reporting every transition."""
        deadline = time.monotonic() + seconds
        while True:
            rows = self.snapshot()
            for name, row in rows.items():
                before = self.last.get(name)
                if before is not None:
                    self._report(name, before, row)
            self.last = rows
            self.draw(rows)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.5)

    def _report(self, name: str, before: Row, row: Row) -> None:
        if before.status != row.status:
            self.event(
                f"{name}: presence {before.status} -> {row.status} ({self._why(name, before, row)})"
            )
        # The stored status moves with each heartbeat and leave; a user who went offline
        # without a leave is written offline by the pg_cron sweep.
        if before.stored != row.stored and row.stored == "offline" and name not in self.left:
            self.event(
                f"{name}: stored status {before.stored} -> offline "
                f"(cron sweep, {self.last_sweep_run()})"
            )

    def _why(self, name: str, before: Row, row: Row) -> str:
        # Say why from what the demo did, not from timing: the sweep may land in the
        # same poll as the timeout, so the stored status cannot tell the two apart.
        if row.status == "offline" and name in self.left:
            return "leave on stop()"
        if row.status == "offline":
            return f"timeout: no heartbeat for {self.timeout}s, exact at read time"
        if before.status == "offline":
            return "first heartbeat"
        return "set_status"

    def print_table(self) -> None:
        if not self.live:
            print(self.table(self.snapshot()), flush=True)

    # -- actors --------------------------------------------------------------------

    def client_for(self, name: str) -> PresenceClient:
        http = httpx.Client(timeout=5)
        supabase = create_client(
            self.api_url,
            self.anon_key,
            options=ClientOptions(
                httpx_client=http, headers={"Authorization": f"Bearer {self.tokens[name]}"}
            ),
        )
        return PresenceClient(supabase, config=PresenceConfig(jitter=0.05))

    def start_child(self) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE, self.api_url, self.anon_key, self.tokens["dave"]],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout is not None
        if self.child.stdout.readline().strip() != "started":
            raise RuntimeError("dave's client process did not start")

    def kill_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            os.kill(self.child.pid, signal.SIGKILL)
            self.child.wait()
            if self.child.stdout is not None:
                self.child.stdout.close()


def run(args: argparse.Namespace) -> int:
    timeout = args.timeout or (8 if args.fast else 45)
    sweep = max(1, min(59, timeout // 4 if args.fast or args.timeout else 20))
    interval = max(1, timeout // 4 if args.fast or args.timeout else 15)

    print("starting a throwaway PostgreSQL with pg_cron (temporary directory)...", flush=True)
    with PresenceTestServer() as server:
        db = server.cron_database
        settings = db.query(
            "SELECT public.presence_configure(timeout_seconds => %s, sweep_interval_seconds => %s, "
            "heartbeat_interval_seconds => %s) AS s",
            (timeout, sweep, interval),
        )[0]["s"]
        job = db.query(
            "SELECT schedule, command FROM cron.job WHERE jobname = 'mark-inactive-users'"
        )[0]
        version = db.query("SELECT current_setting('server_version') AS v")[0]["v"]
        # How often the sweep really runs: pg_cron < 1.5 has no interval schedules and
        # sweeps every minute whatever the setting says (verify_setup reports it).
        period = verify_setup(dsn=db.dsn, raise_on_error=False).sweep_period_seconds or sweep
        print(
            f"PostgreSQL {version} ({server.cluster.bindir}) on 127.0.0.1:{server.cluster.port}, "
            f"pg_cron {server.cluster.pg_cron_version}; job mark-inactive-users "
            f"every {job['schedule']!r} runs {job['command']!r}\n"
            f"timings: {settings}",
            flush=True,
        )
        with LocalPostgREST(db.emulator()) as api:
            demo = Demo(
                db=db,
                api_url=api.url,
                anon_key=api.emulator.anon_key,
                service_key=api.emulator.service_role_key,
                timeout=timeout,
                sweep=sweep,
                interval=interval,
                sweep_period=period,
            )
            for name in NAMES:
                demo.ids[name] = db.create_user(email=f"{name}@example.test")
                demo.tokens[name] = api.emulator.user_token(demo.ids[name], expires_in=3600)
            try:
                return script(demo, api.emulator.service_role_key)
            finally:
                for client in demo.clients.values():
                    client.stop()
                    client.close()
                demo.kill_child()


def script(demo: Demo, service_key: str) -> int:
    demo.last = demo.snapshot()
    demo.set_phase("phase 1/5: five users sign in and start heartbeat clients")
    for name in NAMES:
        if name == "dave":
            demo.start_child()
        else:
            demo.clients[name] = demo.client_for(name).start()
    demo.watch(demo.interval + 1)
    demo.print_table()

    demo.set_phase("phase 2/5: bob goes away, erin is busy")
    demo.clients["bob"].set_status("away")
    demo.clients["erin"].set_status("busy")
    demo.watch(2)
    demo.print_table()

    demo.set_phase("phase 3/5: carol stops her client cleanly (leave)")
    demo.left.add("carol")
    demo.clients.pop("carol").stop()
    demo.watch(2)
    demo.print_table()

    demo.set_phase(f"phase 4/5: dave's process is killed (no leave); timeout {demo.timeout}s")
    demo.kill_child()
    demo.event("dave: client process killed with SIGKILL")
    if demo.sweep_period > demo.sweep:
        demo.event(
            f"this pg_cron sweeps every {demo.sweep_period} s (no interval schedules before "
            "pg_cron 1.5): reads call dave offline as soon as his timeout passes, the "
            f"stored status catches up within {demo.sweep_period} s; waiting for it"
        )
    deadline = time.monotonic() + demo.timeout + 2 * demo.sweep_period + 10
    while time.monotonic() < deadline:
        demo.watch(1)
        dave = demo.last.get("dave")
        if dave is not None and dave.stored == "offline":
            break
    demo.watch(1)
    demo.print_table()
    dave = demo.last["dave"]
    if dave.online or dave.stored != "offline":
        print("demo: dave did not go offline as expected", file=sys.stderr)
        return 1

    demo.set_phase("phase 5/5: verify_setup() over HTTP with the service role key, then shut down")
    with httpx.Client(timeout=5) as http:
        admin = create_client(demo.api_url, service_key, options=ClientOptions(httpx_client=http))
        report = verify_setup(admin, raise_on_error=False)
    stats = {name: client.stats for name, client in demo.clients.items()}
    for name, client in demo.clients.items():
        demo.left.add(name)
        client.stop()
    demo.watch(1)
    if demo.live:
        print()
    print(report, flush=True)
    for name, s in stats.items():
        print(
            f"{name}: {s.beats_sent} heartbeats sent, {s.beats_failed} failed, state {s.state}",
            flush=True,
        )
    print("all clients stopped; shutting PostgreSQL down and deleting its directory.", flush=True)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="short timings: the demo takes ~30 s")
    parser.add_argument(
        "--timeout", type=int, default=None, help="presence timeout in seconds (>= 4)"
    )
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout < 4:
        parser.error("--timeout must be at least 4 seconds")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
