"""200 concurrent AsyncPresenceClients against the real PostgreSQL, for a few seconds.

Each client is a real supabase ``AsyncClient`` signed in as its own user; their RPCs go
through respx into the PostgREST emulation, served by a small thread pool (one
PostgreSQL connection per worker, like PostgREST's pool). No heartbeat may be lost or
fail; the figures are printed (visible with ``-s``) and asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import respx
from e2e_support import async_client, create_users

from presence_sdk import AsyncPresenceClient, PresenceConfig, PresenceState
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

CLIENTS = 200
DURATION = 4.0
WORKERS = 8
CONFIG = PresenceConfig(interval=1.0, jitter=0.1, request_timeout=5.0, stop_timeout=5.0)


@pytest.mark.asyncio
async def test_200_concurrent_clients_lose_no_beat(presence_db: PresenceDatabase) -> None:
    users = create_users(presence_db, CLIENTS)
    emulator = presence_db.emulator()
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="postgrest")
    latencies: list[float] = []
    answers: dict[int, int] = {}
    heartbeats = {"ok": 0}
    lock = threading.Lock()

    def serve(request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = emulator.handle(request)
        with lock:
            latencies.append(time.perf_counter() - started)
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            if request.url.path.endswith("/presence_session_beat") and response.is_success:
                heartbeats["ok"] += 1
        return response

    async def side_effect(request: httpx.Request) -> httpx.Response:
        return await asyncio.get_running_loop().run_in_executor(pool, serve, request)

    http = httpx.AsyncClient()
    try:
        with respx.mock(base_url=emulator.url) as router:
            router.route(path__startswith="/rest/v1/rpc/").mock(side_effect=side_effect)
            clients = [
                AsyncPresenceClient(
                    async_client(emulator, emulator.user_token(user), http=http), config=CONFIG
                )
                for user in users
            ]
            started = time.perf_counter()
            await asyncio.gather(*(c.start() for c in clients))
            await asyncio.sleep(DURATION)
            online = presence_db.query(
                "SELECT count(*) AS n FROM public.user_presence WHERE online"
            )[0]["n"]
            states = {c.state for c in clients}
            await asyncio.gather(*(c.stop() for c in clients))
            elapsed = time.perf_counter() - started
    finally:
        await http.aclose()
        pool.shutdown(wait=True)
        emulator.close()

    sent = sum(c.stats.beats_sent for c in clients)
    failed = sum(c.stats.beats_failed for c in clients)
    retries = sum(c.stats.retries for c in clients)
    offline = presence_db.query(
        "SELECT count(*) AS n FROM public.user_presence WHERE NOT online AND status = 'offline'"
    )[0]["n"]
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    figures = (
        f"load: {CLIENTS} async clients for {elapsed:.1f}s (interval {CONFIG.interval}s, "
        f"{WORKERS} server workers): {sent} beats sent ({sent / elapsed:.0f}/s), "
        f"{failed} failed, {retries} retries, {heartbeats['ok']} accepted by the server; "
        f"server time per RPC p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms; "
        f"{online}/{CLIENTS} online during the run, {offline}/{CLIENTS} offline after stop; "
        f"HTTP answers {dict(sorted(answers.items()))}"
    )
    print(figures)

    assert failed == 0
    assert retries == 0
    assert states == {PresenceState.ONLINE}
    assert all(c.state is PresenceState.STOPPED for c in clients)
    assert heartbeats["ok"] == sent  # every beat the clients counted reached the database
    assert sent >= CLIENTS * int(DURATION / (CONFIG.interval * 1.1))
    assert answers.keys() == {200}
    assert online == CLIENTS
    assert offline == CLIENTS  # every client's leave arrived
    assert not [t for t in threading.enumerate() if t.name.startswith("postgrest")]
    assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
