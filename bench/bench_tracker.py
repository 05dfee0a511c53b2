"""The tracker's client-side cost: CPU per 10,000 sessions per interval, and requests.

Side by side in one run, against the *same* in-process ``httpx.MockTransport`` (so
the figures are the SDK's own work: building the batches, JSON, supabase-py's request
path, the core's bookkeeping; the server's work is not in them):

1. ``PresenceTracker``: 10,000 tracked sessions, rounds at a tiny interval; the
   process's CPU time (tracker thread + sender thread; the main thread sleeps) per
   round, and the calls per round (``ceil(10,000 / batch_size)``), for batch sizes
   1,000 and 10,000.
2. The per-user alternative: 10,000 ``PresenceClient.beat()`` calls (one request per
   user and interval, each with the user's token), CPU for all of them.
3. ``track()`` itself: the cost of tracking 10,000 sessions (validation included).

Prints measured numbers only. Run: ``python bench/bench_tracker.py``.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

import httpx
from supabase import Client, ClientOptions

from presence_sdk import PresenceClient, PresenceConfig, PresenceTracker, TrackerConfig
from presence_sdk.testing import make_token

URL = "http://presence.bench"
SERVICE_KEY = make_token("service_role", expires_in=86400)
SESSIONS = 10_000
ROUNDS = 8
BEAT = json.dumps({"beat_at": "2025-01-02T03:04:05.123456+00:00", "count": 0}).encode()
ENDED = json.dumps({"ended_at": "2025-01-02T03:04:05.123456+00:00", "count": 0}).encode()
USER_BEAT = b'"2025-01-02T03:04:05.123456+00:00"'


def handler(request: httpx.Request) -> httpx.Response:
    """The in-process server: a canned answer per RPC (no parsing: not our cost)."""
    path = request.url.path
    if path.endswith("/presence_track_beat"):
        body = BEAT
    elif path.endswith("/presence_track_end"):
        body = ENDED
    else:
        body = USER_BEAT
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


TRANSPORT = httpx.MockTransport(handler)


def admin() -> Client:
    return Client(URL, SERVICE_KEY, ClientOptions(httpx_client=httpx.Client(transport=TRANSPORT)))


def bench_tracker(batch_size: int) -> None:
    config = TrackerConfig(
        interval=0.02, timeout=30.0, jitter=0.0, batch_size=batch_size, end_on_stop=False
    )
    tracker = PresenceTracker(admin(), config=config)
    users = [uuid.uuid4() for _ in range(SESSIONS)]
    started = time.process_time()
    for user in users:
        tracker.track(user)
    track_us = (time.process_time() - started) / SESSIONS * 1e6
    tracker.start()
    while tracker.stats.rounds < 2:  # warm up
        time.sleep(0.01)
    per_round: list[float] = []
    calls_before = tracker.stats.batches_sent
    rounds_before = tracker.stats.rounds
    for _ in range(ROUNDS):
        cpu0, rounds0 = time.process_time(), tracker.stats.rounds
        while tracker.stats.rounds < rounds0 + 1:
            time.sleep(0.005)
        per_round.append(time.process_time() - cpu0)
    stats = tracker.stats
    tracker.stop()
    tracker.supabase.postgrest.session.close()
    calls = (stats.batches_sent - calls_before) / (stats.rounds - rounds_before)
    cpu_ms = statistics.median(per_round) * 1000
    print(
        f"tracker, batch_size {batch_size:>6,}: {cpu_ms:.1f} ms CPU per round of "
        f"{SESSIONS:,} sessions ({cpu_ms * 1000 / SESSIONS:.2f} us/session), "
        f"{calls:.0f} requests per round; track(): {track_us:.2f} us per session "
        f"(median of {ROUNDS} rounds)"
    )


def bench_per_user_clients() -> None:
    anon = make_token("anon", expires_in=86400)
    clients = []
    for _ in range(200):  # 200 clients, each beating 50 times: 10,000 beats
        options = ClientOptions(httpx_client=httpx.Client(transport=TRANSPORT))
        user = str(uuid.uuid4())
        token = make_token("authenticated", user_id=user, expires_in=86400)
        options.headers["Authorization"] = f"Bearer {token}"
        clients.append(
            PresenceClient(
                Client(URL, anon, options), config=PresenceConfig(interval=15, timeout=45)
            )
        )
    for presence in clients[:20]:  # warm up
        presence.beat()
    cpu0 = time.process_time()
    for _ in range(SESSIONS // len(clients)):
        for presence in clients:
            presence.beat()
    cpu_ms = (time.process_time() - cpu0) * 1000
    print(
        f"per-user clients: {cpu_ms:.1f} ms CPU for {SESSIONS:,} beats "
        f"({cpu_ms * 1000 / SESSIONS:.1f} us/beat), {SESSIONS:,} requests per interval"
    )
    for presence in clients:
        presence.supabase.postgrest.session.close()


def main() -> None:
    """Run the measurements and print their figures."""
    for batch_size in (1_000, 10_000):
        bench_tracker(batch_size)
    bench_per_user_clients()


if __name__ == "__main__":
    main()
