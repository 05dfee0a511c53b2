"""PresenceTracker and AsyncPresenceTracker over real supabase-py clients, the network
mocked with respx (the batch RPCs answered by :class:`tracker_support.FakeSQL`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from client_support import (
    TRANSIENT_FAULTS,
    URL,
    async_wait_until,
    pgrst_error,
    rpc_path,
    settings_json,
    wait_until,
)
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions
from tracker_support import FakeSQL

from presence_sdk import (
    AsyncPresenceTracker,
    ConfigurationError,
    InvalidInputError,
    PresenceConfig,
    PresenceState,
    PresenceTracker,
    SessionsRejectedError,
    TrackerConfig,
    TransientError,
)
from presence_sdk.testing import make_token

SRC = Path(__file__).resolve().parents[2] / "src"
SERVICE_KEY = make_token("service_role", expires_in=86400)

FAST = TrackerConfig(
    interval=0.2,
    timeout=2.0,
    jitter=0.0,
    linger=0.01,
    backoff_initial=0.01,
    backoff_max=0.02,
    request_timeout=0.5,
    stop_timeout=1.0,
)


@dataclasses.dataclass
class Server:
    router: respx.MockRouter
    sql: FakeSQL

    def calls(self, fn: str) -> list[Any]:
        route = self.router[fn]
        return [json.loads(call.request.content) for call in route.calls]

    def beat_entries(self) -> list[list[dict[str, Any]]]:
        return [body["sessions"] for body in self.calls("presence_track_beat")]

    def ended(self) -> list[str]:
        return [sid for body in self.calls("presence_track_end") for sid in body["session_ids"]]


@pytest.fixture
def server() -> Iterator[Server]:
    sql = FakeSQL()
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        for fn in ("presence_track_beat", "presence_track_end"):
            router.post(rpc_path(fn), name=fn).mock(side_effect=sql.handle)
        router.post(rpc_path("presence_settings"), name="presence_settings").mock(
            return_value=httpx.Response(200, json=settings_json())
        )
        yield Server(router, sql)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "presence-tracker"],
        timeout=3.0,
    )


def admin() -> Client:
    """A real supabase Client with the service role key (as from_url builds it)."""
    options = ClientOptions(httpx_client=httpx.Client(), auto_refresh_token=False)
    return Client(URL, SERVICE_KEY, options)


def async_admin() -> AsyncClient:
    options = AsyncClientOptions(httpx_client=httpx.AsyncClient(), auto_refresh_token=False)
    return AsyncClient(URL, SERVICE_KEY, options)


def user(server: Server) -> str:
    uid = str(uuid.uuid4())
    server.sql.users.add(uid)
    return uid


# -- the life of a tracker -----------------------------------------------------------------


def test_from_url_beats_with_the_service_key_then_stop_ends_everything(server: Server) -> None:
    tracker = PresenceTracker.from_url(URL, SERVICE_KEY, config=FAST)
    sessions = [tracker.track(user(server), device="ws") for _ in range(3)]
    with tracker:
        wait_until(lambda: len(server.calls("presence_track_beat")) >= 3)
        assert tracker.state is PresenceState.ONLINE
        request = server.router["presence_track_beat"].calls[0].request
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
        assert request.headers["apikey"] == SERVICE_KEY
        assert {e["session_id"] for e in server.beat_entries()[0]} == {str(s) for s in sessions}
        assert set(server.sql.live) == {str(s) for s in sessions}
    assert sorted(server.ended()) == sorted(str(s) for s in sessions)
    assert server.sql.live == {}
    assert tracker.state is PresenceState.STOPPED
    assert tracker.supabase.postgrest.session.is_closed  # from_url's own http client
    stats = tracker.stats
    assert stats.sessions == 3
    assert stats.sessions_ended == 3
    assert stats.batches_failed == 0


def test_connect_and_disconnect_are_sent_promptly(server: Server) -> None:
    slow = dataclasses.replace(FAST, interval=30.0, timeout=120.0)
    with PresenceTracker(admin(), config=slow) as tracker:
        wait_until(lambda: tracker.state is PresenceState.STARTING)
        started = time.monotonic()
        sid = tracker.track(user(server))
        wait_until(lambda: str(sid) in server.sql.live)
        tracker.set_status(sid, "busy")
        wait_until(lambda: server.sql.live[str(sid)]["status"] == "busy")
        assert tracker.untrack(sid) is True
        wait_until(lambda: str(sid) not in server.sql.live)
        # Well under the 30 s interval (a margin for a loaded machine).
        assert time.monotonic() - started < slow.interval / 3
        assert tracker.untrack(sid) is False
        assert tracker.set_status(sid, "away") is False
        # The server has the end; the tracker counts it once it reads the answer.
        wait_until(lambda: tracker.stats.sessions_ended == 1)
        assert tracker.stats.pending_ends == 0


def test_bad_input_raises_before_any_io_and_changes_nothing(server: Server) -> None:
    with PresenceTracker(admin(), config=FAST) as tracker:
        kept = tracker.track(user(server))
        wait_until(lambda: str(kept) in server.sql.live)
        sent = len(server.router["presence_track_beat"].calls)
        for bad in (
            lambda: tracker.track("not-a-uuid"),
            lambda: tracker.track(user(server), status="offline"),
            lambda: tracker.track(user(server), device="x" * 65),
            lambda: tracker.track(user(server), metadata={"blob": "x" * 2000}),
            lambda: tracker.track(user(server), metadata="{}"),  # type: ignore[arg-type]
            lambda: tracker.set_status(kept, "invisible"),
            lambda: tracker.untrack("nope"),
        ):
            with pytest.raises(InvalidInputError):
                bad()
        time.sleep(0.1)
        assert tracker.tracked() == {kept: uuid.UUID(server.sql.live[str(kept)]["user_id"])}
        assert all(
            e["session_id"] == str(kept)
            for entries in server.beat_entries()[sent:]
            for e in entries
        )


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_transient_faults_are_retried(server: Server, fault: str) -> None:
    route = server.router["presence_track_beat"]
    route.side_effect = [TRANSIENT_FAULTS[fault](), server.sql.handle, server.sql.handle] + [
        server.sql.handle
    ] * 50
    config = dataclasses.replace(FAST, interval=2.0, timeout=10.0)
    with PresenceTracker(admin(), config=config) as tracker:
        tracker.track(user(server))
        wait_until(lambda: tracker.stats.sessions_beaten >= 1)
        assert tracker.stats.retries == 1
        assert tracker.stats.batches_failed == 0
        assert tracker.state is PresenceState.ONLINE


def test_a_refused_session_is_dropped_and_reported_the_rest_beaten(server: Server) -> None:
    errors: list[Exception] = []
    good = [str(uuid.uuid4()) for _ in range(3)]
    theirs = str(uuid.uuid4())
    server.sql.owner[theirs] = str(uuid.uuid4())  # another user's session id
    with PresenceTracker(admin(), config=FAST, on_error=errors.append) as tracker:
        for sid in good:
            tracker.track(user(server), session_id=sid)
        tracker.track(user(server), session_id=theirs)
        wait_until(lambda: set(server.sql.live) == set(good))
        wait_until(lambda: bool(errors))
    (report,) = errors
    assert isinstance(report, SessionsRejectedError)
    assert report.session_ids == (uuid.UUID(theirs),)
    assert (report.status, report.code) == (409, "PT409")
    assert tracker.stats.sessions_dropped == 1
    assert uuid.UUID(theirs) not in tracker.tracked()


def test_nothing_escapes_into_the_app(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server.router["presence_track_beat"].side_effect = RuntimeError("transport bug")
    server.router["presence_track_end"].side_effect = RuntimeError("transport bug")
    errors: list[Exception] = []
    tracker = PresenceTracker(admin(), config=FAST, on_error=errors.append)
    with caplog.at_level(logging.ERROR, logger="presence_sdk"), tracker:
        tracker.track(user(server))
        wait_until(lambda: tracker.state is PresenceState.FAILED)
    assert errors
    assert tracker.state is PresenceState.STOPPED
    assert "tracker thread failed" not in caplog.text


def test_stop_returns_within_the_bound_while_the_network_hangs(server: Server) -> None:
    release = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return server.sql.handle(request)

    server.router["presence_track_end"].side_effect = hang
    config = dataclasses.replace(FAST, request_timeout=5.0, stop_timeout=0.5)
    tracker = PresenceTracker(admin(), config=config).start()
    tracker.track(user(server))
    wait_until(lambda: tracker.stats.sessions_beaten >= 1)
    started = time.monotonic()
    tracker.stop()
    assert time.monotonic() - started < 1.5
    release.set()


def test_a_callback_may_stop_the_tracker(server: Server) -> None:
    server.router["presence_track_beat"].side_effect = [pgrst_error(500, "XX000")] * 100
    holder: dict[str, PresenceTracker] = {}
    config = dataclasses.replace(FAST, max_attempts=1)
    tracker = PresenceTracker(admin(), config=config, on_error=lambda e: holder["t"].stop())
    holder["t"] = tracker
    tracker.start()
    tracker.track(user(server))
    wait_until(lambda: tracker.state is PresenceState.STOPPED)


def test_configuration_is_checked_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="TrackerConfig"):
        PresenceTracker(admin(), config=PresenceConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callable"):
        PresenceTracker(admin(), on_error="log")  # type: ignore[arg-type]
    for bad in ({"batch_size": 0}, {"batch_size": 10_001}, {"linger": 0}, {"jitter": 0.9}):
        with pytest.raises(ConfigurationError):
            TrackerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="shorter"):
        TrackerConfig(interval=30, timeout=30)


# -- asyncio -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_tracker_lifecycle(server: Server) -> None:
    states: list[PresenceState] = []
    tracker = AsyncPresenceTracker.from_url(
        URL, SERVICE_KEY, config=FAST, on_state_change=lambda old, new: states.append(new)
    )
    async with tracker:
        sid = tracker.track(user(server), metadata={"room": "lobby"})
        await async_wait_until(lambda: str(sid) in server.sql.live)
        assert server.sql.live[str(sid)]["metadata"] == {"room": "lobby"}
        # From another thread too (a sync websocket handler, a worker pool).
        other: list[uuid.UUID] = []
        thread = threading.Thread(target=lambda: other.append(tracker.track(user(server))))
        thread.start()
        thread.join()
        await async_wait_until(lambda: str(other[0]) in server.sql.live)
        tracker.untrack(sid)
        await async_wait_until(lambda: str(sid) not in server.sql.live)
    assert server.sql.live == {}
    assert states[0] is PresenceState.STARTING
    assert PresenceState.ONLINE in states
    assert states[-1] is PresenceState.STOPPED
    assert tracker.supabase.postgrest.session.is_closed


@pytest.mark.asyncio
async def test_async_tracker_cancelled_from_outside_still_ends_its_sessions(
    server: Server,
) -> None:
    tracker = AsyncPresenceTracker(async_admin(), config=FAST)
    await tracker.start()
    tracker.track(user(server))
    await async_wait_until(lambda: len(server.sql.live) == 1)
    run = tracker._run  # the task that asyncio.run() would cancel
    assert run is not None
    assert run.task is not None
    run.task.cancel()
    await asyncio.wait({run.task})
    assert server.sql.live == {}
    assert tracker.state is PresenceState.STOPPED


@pytest.mark.asyncio
async def test_async_tracker_retries_and_degrades(server: Server) -> None:
    server.router["presence_track_beat"].side_effect = httpx.ConnectError("refused")
    errors: list[Exception] = []
    async with AsyncPresenceTracker(async_admin(), config=FAST, on_error=errors.append) as t:
        t.track(user(server))
        await async_wait_until(lambda: t.state is PresenceState.DEGRADED)
        assert t.stats.retries >= 1
    assert isinstance(errors[0], TransientError)


# -- process lifecycle ----------------------------------------------------------------------

_SCRIPT = f"""
import os, signal, sys, time, uuid
sys.path.insert(0, {str(SRC)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
import dataclasses, httpx, respx
from client_support import URL, rpc_path, wait_until
from tracker_support import FakeSQL
from test_tracker import FAST, SERVICE_KEY
from presence_sdk import PresenceTracker, PresenceState

sql = FakeSQL()
mocked = respx.mock(base_url=URL, assert_all_called=False)
router = mocked.__enter__()
for fn in ("presence_track_beat", "presence_track_end"):
    router.post(rpc_path(fn)).mock(side_effect=sql.handle)

def ended(request):
    response = sql.handle(request)
    print("ENDED", len(request.read()) > 0, len(sql.live), flush=True)
    return response

router.post(rpc_path("presence_track_end")).mock(side_effect=ended)
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_stop_at_exit_ends_the_sessions() -> None:
    result = _run(
        """
        tracker = PresenceTracker.from_url(
            URL, SERVICE_KEY, config=dataclasses.replace(FAST, stop_at_exit=True)
        ).start()
        for _ in range(3):
            uid = str(uuid.uuid4()); sql.users.add(uid); tracker.track(uid)
        wait_until(lambda: len(sql.live) == 3)
        print("EXITING", flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EXITING", "ENDED", "True", "0"]


def test_sigterm_ends_the_sessions_then_the_process() -> None:
    result = _run(
        """
        tracker = PresenceTracker.from_url(
            URL, SERVICE_KEY, config=dataclasses.replace(FAST, handle_sigterm=True)
        ).start()
        uid = str(uuid.uuid4()); sql.users.add(uid); tracker.track(uid)
        wait_until(lambda: len(sql.live) == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)
        print("NOT REACHED", flush=True)
        """
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout.split() == ["ENDED", "True", "0"]


def test_a_forked_child_forgets_the_parents_sessions() -> None:
    result = _run(
        """
        tracker = PresenceTracker.from_url(URL, SERVICE_KEY, config=FAST).start()
        uid = str(uuid.uuid4()); sql.users.add(uid); tracker.track(uid)
        wait_until(lambda: len(sql.live) == 1)
        pid = os.fork()
        if pid == 0:
            forgot = tracker.stats.sessions == 0 and tracker.state is PresenceState.STOPPED
            code = 0 if forgot else 3
            tracker.close()  # nothing to end: the parent's session is untouched
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status), len(sql.live), flush=True)
        tracker.close()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CHILD", "0", "1", "ENDED", "True", "0"]


def test_a_tracker_on_the_apps_client_refuses_to_send_in_a_forked_child() -> None:
    result = _run(
        """
        from supabase import Client, ClientOptions
        supabase = Client(URL, SERVICE_KEY, ClientOptions(httpx_client=httpx.Client()))
        tracker = PresenceTracker(supabase, config=FAST)
        pid = os.fork()
        if pid == 0:
            try:
                tracker.start()
            except Exception as exc:
                os._exit(0 if "fork" in str(exc) else 4)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CHILD", "0"]
