"""SDK overhead per heartbeat, and the heartbeat thread's CPU per hour.

1. Overhead: one heartbeat through ``PresenceClient.beat()`` (a real supabase
   ``Client``, the core's retry/state/stats bookkeeping, request building and response
   parsing) versus a raw ``httpx`` POST of the same RPC with the same headers and body,
   both against the *same* in-process ``httpx.MockTransport``, measured side by side in
   interleaved rounds (medians). The same for the asyncio client. Target ratio <= 1.3.
2. CPU: the background heartbeat thread runs at a tiny interval for N beats; the
   process's CPU time (the heartbeat thread, plus the sender thread that performs each
   request under its total deadline; the main thread only sleeps) divided by N is the
   CPU per beat (one wait plus one beat). Idle waiting blocks in the kernel and costs
   nothing, so the CPU per hour at the default 15 s interval is extrapolated as
   ``per_beat * 240``.

Prints measured numbers only. Run: ``python bench/bench_client_overhead.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions

from presence_sdk import AsyncPresenceClient, PresenceClient, PresenceConfig
from presence_sdk._config import DEFAULT_INTERVAL
from presence_sdk.testing import make_token

URL = "http://presence.bench"
RPC_URL = f"{URL}/rest/v1/rpc/presence_session_beat"
ANON_KEY = make_token("anon", expires_in=86400)
USER_TOKEN = make_token("authenticated", user_id="00000000-0000-4000-8000-000000000001")
BODY = b'"2025-01-02T03:04:05.123456+00:00"'
ROUNDS = 15
PER_ROUND = 400
CPU_BEATS = 2000


def handler(request: httpx.Request) -> httpx.Response:
    """The in-process server: answers every heartbeat like PostgREST would."""
    return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})


TRANSPORT = httpx.MockTransport(handler)


def raw_headers(supabase: Client | AsyncClient) -> dict[str, str]:
    """The headers supabase-py's PostgREST client sends (same bytes on the wire)."""
    return dict(supabase.postgrest.headers)


def beat_body(session_id: uuid.UUID) -> dict[str, Any]:
    """The JSON body of the client's per-session beat (same bytes on the wire)."""
    return {"session_id": str(session_id), "new_status": "online", "device": None, "metadata": None}


def measure(fn: Callable[[], Any]) -> float:
    """Seconds per call of ``fn`` over one round."""
    started = time.perf_counter()
    for _ in range(PER_ROUND):
        fn()
    return (time.perf_counter() - started) / PER_ROUND


async def ameasure(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds per call of the coroutine function ``fn`` over one round."""
    started = time.perf_counter()
    for _ in range(PER_ROUND):
        await fn()
    return (time.perf_counter() - started) / PER_ROUND


def report(name: str, raw: list[float], sdk: list[float]) -> None:
    raw_us, sdk_us = statistics.median(raw) * 1e6, statistics.median(sdk) * 1e6
    print(
        f"{name}: raw httpx POST {raw_us:.1f} us/beat, SDK beat() {sdk_us:.1f} us/beat, "
        f"overhead {sdk_us - raw_us:+.1f} us, ratio {sdk_us / raw_us:.3f} "
        f"(median of {ROUNDS} interleaved rounds x {PER_ROUND} beats)"
    )


def bench_sync() -> None:
    options = ClientOptions(httpx_client=httpx.Client(transport=TRANSPORT))
    options.headers["Authorization"] = f"Bearer {USER_TOKEN}"
    supabase = Client(URL, ANON_KEY, options)
    presence = PresenceClient(supabase, config=PresenceConfig(interval=15, timeout=45))
    raw_http = httpx.Client(transport=TRANSPORT)
    headers = raw_headers(supabase)
    body = beat_body(presence.session_id)

    def raw_beat() -> object:
        response = raw_http.post(RPC_URL, json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    for _ in range(200):  # warm up both paths
        raw_beat()
        presence.beat()
    raw, sdk = [], []
    for _ in range(ROUNDS):
        raw.append(measure(raw_beat))
        sdk.append(measure(presence.beat))
    report("sync ", raw, sdk)
    raw_http.close()
    supabase.postgrest.session.close()


async def bench_async() -> None:
    http = httpx.AsyncClient(transport=TRANSPORT)
    options = AsyncClientOptions(httpx_client=http)
    options.headers["Authorization"] = f"Bearer {USER_TOKEN}"
    supabase = AsyncClient(URL, ANON_KEY, options)
    presence = AsyncPresenceClient(supabase, config=PresenceConfig(interval=15, timeout=45))
    raw_http = httpx.AsyncClient(transport=TRANSPORT)
    headers = raw_headers(supabase)
    body = beat_body(presence.session_id)

    async def raw_beat() -> object:
        response = await raw_http.post(RPC_URL, json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    for _ in range(200):
        await raw_beat()
        await presence.beat()
    raw, sdk = [], []
    for _ in range(ROUNDS):
        raw.append(await ameasure(raw_beat))
        sdk.append(await ameasure(presence.beat))
    report("async", raw, sdk)
    await raw_http.aclose()
    await http.aclose()


def bench_thread_cpu() -> None:
    supabase = Client(URL, ANON_KEY, ClientOptions(httpx_client=httpx.Client(transport=TRANSPORT)))
    config = PresenceConfig(interval=0.001, timeout=1.0, jitter=0.0, leave_on_stop=False)
    presence = PresenceClient(supabase, config=config)
    presence.start()
    while presence.stats.beats_sent < 50:  # warm up
        time.sleep(0.01)
    cpu0, beats0, wall0 = time.process_time(), presence.stats.beats_sent, time.monotonic()
    while presence.stats.beats_sent < beats0 + CPU_BEATS:
        time.sleep(0.05)
    cpu1, beats1, wall1 = time.process_time(), presence.stats.beats_sent, time.monotonic()
    presence.stop()
    supabase.postgrest.session.close()
    per_beat = (cpu1 - cpu0) / (beats1 - beats0)
    per_hour = per_beat * 3600 / DEFAULT_INTERVAL
    print(
        f"heartbeat CPU (thread + sender): {(cpu1 - cpu0) * 1000:.1f} ms "
        f"for {beats1 - beats0} beats "
        f"in {wall1 - wall0:.1f} s at a 1 ms interval = {per_beat * 1e6:.1f} us per beat "
        f"(wait + beat); extrapolated to the default {DEFAULT_INTERVAL:g} s interval "
        f"({3600 / DEFAULT_INTERVAL:.0f} beats/hour): {per_hour * 1000:.1f} ms CPU per hour "
        f"({per_hour / 3600 * 100:.5f} % of one core)"
    )


def main() -> None:
    """Run the three measurements and print their figures."""
    bench_sync()
    asyncio.run(bench_async())
    bench_thread_cpu()


if __name__ == "__main__":
    main()
