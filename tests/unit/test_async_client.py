"""AsyncPresenceClient over a real supabase ``AsyncClient``, the network mocked with respx."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx
from client_support import (
    ANON_KEY,
    FAST,
    SERVER_TIME,
    TRANSIENT_FAULTS,
    URL,
    async_supabase,
    async_wait_until,
    html_error,
    mock_server,
    ok,
    other_tasks,
    pgrst_error,
    session_json,
    statuses_sent,
    user_token,
)

from presence_sdk import AsyncPresenceClient, PresenceConfig, PresenceState
from presence_sdk._exceptions import (
    AuthenticationError,
    InvalidInputError,
    NotInstalledError,
    PresenceError,
    TransientError,
)

SRC = Path(__file__).resolve().parents[2] / "src"
RETRYING = dataclasses.replace(FAST, interval=2.0, timeout=10.0)


@pytest_asyncio.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
    yield
    await async_wait_until(lambda: not other_tasks(), within=2.0)
    assert loop_errors == []


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with mock_server() as router:
        yield router


def client(config: PresenceConfig = FAST, **kwargs: Any) -> AsyncPresenceClient:
    return AsyncPresenceClient(async_supabase(user_token()), config=config, **kwargs)


# -- lifecycle -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_first_beat_is_immediate_and_stop_sends_the_leave(
    server: respx.MockRouter,
) -> None:
    states: list[PresenceState] = []
    slow = dataclasses.replace(FAST, interval=5.0, timeout=20.0)
    presence = client(slow, on_state_change=lambda old, new: states.append(new))
    started = time.monotonic()
    await presence.start()
    await async_wait_until(lambda: server["heartbeat"].call_count == 1)
    assert time.monotonic() - started < 2.0
    request = server["heartbeat"].calls[0].request
    assert json.loads(request.content) == {
        "session_id": str(presence.session_id),
        "new_status": "online",
        "device": None,
        "metadata": None,
    }
    assert request.headers["authorization"] == f"Bearer {user_token()}"
    await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
    await presence.stop()
    assert server["leave"].call_count == 1
    assert states == [
        PresenceState.STARTING,
        PresenceState.ONLINE,
        PresenceState.STOPPING,
        PresenceState.STOPPED,
    ]
    assert presence.stats.last_success is not None


@pytest.mark.asyncio
async def test_start_and_stop_are_idempotent(server: respx.MockRouter) -> None:
    presence = client()
    await asyncio.gather(*(presence.start() for _ in range(5)))
    assert len(other_tasks()) == 1
    assert await presence.start() is presence
    await asyncio.gather(*(presence.stop() for _ in range(5)))
    await presence.stop()
    assert server["leave"].call_count == 1
    async with presence:  # restartable; beats repeat every interval
        await async_wait_until(lambda: server["heartbeat"].call_count >= 4)
    assert server["leave"].call_count == 2


@pytest.mark.asyncio
async def test_set_status_beats_at_once_even_from_another_thread(
    server: respx.MockRouter,
) -> None:
    async with client(dataclasses.replace(FAST, interval=5.0, timeout=20.0)) as presence:
        await async_wait_until(lambda: server["heartbeat"].call_count == 1)
        presence.set_status("away")
        await async_wait_until(lambda: server["heartbeat"].call_count == 2, within=2.0)
        thread = threading.Thread(target=presence.set_status, args=("busy",))
        thread.start()
        thread.join()
        await async_wait_until(lambda: server["heartbeat"].call_count == 3, within=2.0)
    assert statuses_sent(server["heartbeat"]) == ["online", "away", "busy"]


@pytest.mark.asyncio
async def test_invalid_status_raises_before_any_io(server: respx.MockRouter) -> None:
    presence = client()
    with pytest.raises(InvalidInputError):
        presence.set_status("offline")
    assert server.calls.call_count == 0


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
@pytest.mark.asyncio
async def test_transient_faults_are_retried(server: respx.MockRouter, fault: str) -> None:
    server["heartbeat"].side_effect = [TRANSIENT_FAULTS[fault](), TRANSIENT_FAULTS[fault](), ok()]
    errors: list[PresenceError] = []
    async with client(RETRYING, on_error=errors.append) as presence:
        await async_wait_until(lambda: presence.stats.beats_sent >= 1)
        stats = presence.stats
    assert (stats.retries, stats.beats_failed, stats.consecutive_failures) == (2, 0, 0)
    assert errors == []


@pytest.mark.asyncio
async def test_a_hanging_request_times_out_and_is_retried(server: respx.MockRouter) -> None:
    calls = {"n": 0}

    async def slow_then_ok(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(5)  # far beyond request_timeout
        return ok()

    server["heartbeat"].side_effect = slow_then_ok
    config = dataclasses.replace(RETRYING, request_timeout=0.1)
    async with client(config) as presence:
        await async_wait_until(lambda: presence.stats.beats_sent >= 1)
    assert presence.stats.retries == 1


@pytest.mark.asyncio
async def test_all_retries_failing_degrades_then_recovers(server: respx.MockRouter) -> None:
    failing = [True]
    server["heartbeat"].side_effect = lambda request: html_error(503) if failing[0] else ok()
    async with client(dataclasses.replace(RETRYING, interval=0.3)) as presence:
        await async_wait_until(lambda: presence.stats.beats_failed >= 1)
        degraded = presence.stats
        failing[0] = False
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert degraded.state is PresenceState.DEGRADED
    assert isinstance(degraded.last_error, TransientError)


@pytest.mark.asyncio
async def test_429_waits_for_retry_after(server: respx.MockRouter) -> None:
    sent: list[float] = []

    def limited_then_ok(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        if len(sent) == 1:
            return pgrst_error(429, "", "rate limited", **{"Retry-After": "0.3"})
        return ok()

    server["heartbeat"].side_effect = limited_then_ok
    async with client(RETRYING) as presence:
        await async_wait_until(lambda: len(sent) >= 2)
    assert sent[1] - sent[0] >= 0.3
    assert presence.stats.retries == 1


@pytest.mark.asyncio
async def test_expired_jwt_refreshes_the_session_once_and_retries(
    server: respx.MockRouter,
) -> None:
    old, new = user_token(expires_in=120), user_token(expires_in=3600)
    server["token"].mock(return_value=httpx.Response(200, json=session_json(new, "refresh-2")))
    server["heartbeat"].side_effect = [pgrst_error(401, "PGRST301", "JWT expired")] + [ok()] * 50
    supabase = async_supabase()
    await supabase.auth.set_session(old, "refresh-1")
    async with AsyncPresenceClient(supabase, config=FAST) as presence:
        await async_wait_until(lambda: presence.stats.beats_sent >= 1)
    assert server["token"].call_count == 1
    auth = [c.request.headers["authorization"] for c in server["heartbeat"].calls]
    assert auth[:2] == [f"Bearer {old}", f"Bearer {new}"]


@pytest.mark.asyncio
async def test_unauthenticated_is_a_clear_state_without_spinning(
    server: respx.MockRouter,
) -> None:
    server["heartbeat"].mock(return_value=pgrst_error(403, "28000", "presence: not authenticated"))
    async with AsyncPresenceClient(async_supabase(), config=FAST) as presence:
        await async_wait_until(lambda: presence.state is PresenceState.UNAUTHENTICATED)
        await asyncio.sleep(0.35)
    assert 1 <= server["heartbeat"].call_count <= 8
    assert isinstance(presence.stats.last_error, AuthenticationError)
    assert server["leave"].call_count == 0


@pytest.mark.asyncio
async def test_missing_rpc_points_at_migrations_and_does_not_hot_loop(
    server: respx.MockRouter,
) -> None:
    for route in ("heartbeat", "legacy_heartbeat"):  # neither sessions nor 0.1 SQL
        server[route].mock(return_value=pgrst_error(404, "PGRST202", "Could not find"))
    config = dataclasses.replace(FAST, idle_backoff_max=0.2)
    async with client(config) as presence:
        await async_wait_until(lambda: presence.state is PresenceState.NOT_INSTALLED)
        await asyncio.sleep(0.5)
    error = presence.stats.last_error
    assert isinstance(error, NotInstalledError)
    assert error.hint is not None
    assert "verify_setup" in error.hint
    assert server["heartbeat"].call_count <= 5


@pytest.mark.asyncio
async def test_stop_returns_within_the_bound_while_the_network_hangs(
    server: respx.MockRouter,
) -> None:
    hanging = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        hanging.set()
        await asyncio.sleep(10)
        return ok()

    server["heartbeat"].side_effect = hang
    config = dataclasses.replace(FAST, stop_timeout=0.3, request_timeout=5.0)
    presence = client(config)
    await presence.start()
    await asyncio.wait_for(hanging.wait(), 1)
    started = time.monotonic()
    await presence.stop()
    assert time.monotonic() - started < 0.3 + 0.3
    assert presence.state is PresenceState.STOPPED
    assert not other_tasks()


@pytest.mark.asyncio
async def test_nothing_escapes_into_the_app(server: respx.MockRouter) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    def bad_callback(*args: object) -> None:
        raise ValueError("callback bug")

    server["heartbeat"].side_effect = explode
    server["leave"].side_effect = explode
    presence = client(on_error=bad_callback, on_state_change=bad_callback)
    async with presence:
        await async_wait_until(lambda: presence.stats.beats_failed >= 1)
    assert presence.state is PresenceState.STOPPED
    assert "transport bug" in str(presence.stats.last_error)


def test_cancelled_by_asyncio_run_still_leaves(server: respx.MockRouter) -> None:
    left: list[int] = []

    async def app() -> None:
        presence = client()
        await presence.start()  # never stopped: asyncio.run() cancels the task at the end
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
        left.append(server["leave"].call_count)

    asyncio.run(app())
    assert left == [0]
    assert server["leave"].call_count == 1


# -- manual beat and construction -------------------------------------------------------


@pytest.mark.asyncio
async def test_beat_sends_one_heartbeat(server: respx.MockRouter) -> None:
    presence = client()
    beat_at = await presence.beat()
    assert beat_at is not None
    assert presence.stats.beats_sent == 1
    async with presence:
        with pytest.raises(RuntimeError, match="set_status"):
            await presence.beat()
    for route in ("heartbeat", "legacy_heartbeat"):  # neither sessions nor 0.1 SQL
        server[route].mock(return_value=pgrst_error(404, "PGRST202", "missing"))
    with pytest.raises(NotInstalledError):
        await presence.beat()


@pytest.mark.asyncio
async def test_from_url_with_a_session(server: respx.MockRouter) -> None:
    server["heartbeat"].side_effect = [pgrst_error(401, "PGRST301", "JWT expired")] + [ok()] * 5
    presence = AsyncPresenceClient.from_url(
        URL, ANON_KEY, access_token=user_token(), refresh_token="r-1", config=FAST
    )
    assert await presence.beat() is not None
    assert json.loads(server["token"].calls[0].request.content) == {"refresh_token": "r-1"}
    await presence.close()
    assert presence.supabase.postgrest.session.is_closed


# -- queries ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queries_work_without_running(server: respx.MockRouter) -> None:
    a = uuid.uuid4()
    row = {
        "user_id": str(a),
        "status": "away",
        "online": True,
        "last_heartbeat": SERVER_TIME,
        "last_seen": SERVER_TIME,
        "online_since": SERVER_TIME,
    }
    server["get"].mock(return_value=ok([row]))
    server["is_online"].mock(return_value=ok(True))
    server["list_online"].mock(return_value=ok([row]))
    server["counts"].mock(return_value=ok({"online": 1, "away": 1, "busy": 0, "offline": 3}))
    presence = client()
    assert (await presence.get(a)).status == "away"
    assert await presence.is_online(a) is True
    assert list(await presence.lookup([a, uuid.uuid4()])) == [a]
    assert (await presence.online_users(limit=1)).next_after == a
    assert (await presence.counts()).present == 2
    assert await presence.lookup([]) == {}
    with pytest.raises(InvalidInputError):
        await presence.online_users(limit=5000)


@pytest.mark.asyncio
async def test_query_refreshes_an_expired_session(server: respx.MockRouter) -> None:
    server["counts"].side_effect = [
        pgrst_error(401, "PGRST301", "JWT expired"),
        ok({"online": 0, "away": 0, "busy": 0, "offline": 0}),
    ]
    supabase = async_supabase()
    await supabase.auth.set_session(user_token(), "refresh-1")
    assert (await AsyncPresenceClient(supabase).counts()).total == 0
    assert server["token"].call_count == 1


@pytest.mark.asyncio
async def test_sigterm_chains_to_the_apps_handler(server: respx.MockRouter) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(server["leave"].call_count))
    try:
        presence = client(dataclasses.replace(FAST, handle_sigterm=True))
        await presence.start()
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
        os.kill(os.getpid(), signal.SIGTERM)
        await async_wait_until(lambda: bool(seen))
        assert seen == [1]  # the leave went out before the app's handler ran
        assert presence.state is PresenceState.STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- processes ----------------------------------------------------------------------------


def _run_script(body: str) -> subprocess.CompletedProcess[str]:
    header = f"""
import asyncio, dataclasses, os, signal, sys
sys.path.insert(0, {str(SRC)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from client_support import announce, async_supabase, async_wait_until, mock_server, user_token, FAST
from presence_sdk import AsyncPresenceClient, PresenceState
mocked = mock_server()
server = mocked.__enter__()
announce(server["leave"], "LEAVE")
"""
    return subprocess.run(
        [sys.executable, "-c", header + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_sigterm_default_action_still_ends_the_process_after_the_leave() -> None:
    result = _run_script(
        """
        async def main():
            config = dataclasses.replace(FAST, handle_sigterm=True)
            presence = AsyncPresenceClient(async_supabase(user_token()), config=config)
            await presence.start()
            await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(3)
            print("NOT REACHED", flush=True)
        asyncio.run(main())
        """
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout.split() == ["LEAVE"]


def test_forked_child_does_not_inherit_the_task() -> None:
    result = _run_script(
        """
        async def main():
            presence = AsyncPresenceClient(async_supabase(user_token()), config=FAST)
            await presence.start()
            await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
            pid = os.fork()
            if pid == 0:
                print("CHILD", presence.state, presence._run is None, flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
            print("PARENT", presence.state, flush=True)
            await presence.stop()
        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["CHILD stopped True", "PARENT online", "LEAVE"]
