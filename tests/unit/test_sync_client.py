"""PresenceClient over a real supabase ``Client``, the network mocked with respx."""

from __future__ import annotations

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from client_support import (
    ANON_KEY,
    FAST,
    SERVER_TIME,
    TRANSIENT_FAULTS,
    URL,
    USER_ID,
    html_error,
    mock_server,
    ok,
    pgrst_error,
    presence_threads,
    session_json,
    settings_json,
    statuses_sent,
    sync_supabase,
    user_token,
    wait_until,
)

from presence_sdk import PresenceClient, PresenceConfig, PresenceState
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    TransientError,
)

SRC = Path(__file__).resolve().parents[2] / "src"

#: Room for all retries of one beat even on a loaded machine (retries stay in the interval).
RETRYING = dataclasses.replace(FAST, interval=2.0, timeout=10.0)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_until(lambda: not presence_threads(), timeout=2.0)
    # Sender threads are pooled on purpose (they idle, then exit on their own).
    assert {t for t in threading.enumerate() if t.name != "presence-sender"} <= before


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with mock_server() as router:
        yield router


def client(config: PresenceConfig = FAST, **kwargs: Any) -> PresenceClient:
    return PresenceClient(sync_supabase(user_token()), config=config, **kwargs)


# -- lifecycle -------------------------------------------------------------------------


def test_first_beat_is_immediate_with_the_users_token(server: respx.MockRouter) -> None:
    presence = client(dataclasses.replace(FAST, interval=5.0, timeout=20.0))
    started = time.monotonic()
    presence.start()
    wait_until(lambda: server["heartbeat"].call_count == 1)
    assert time.monotonic() - started < 2.0
    request = server["heartbeat"].calls[0].request
    assert json.loads(request.content) == {
        "session_id": str(presence.session_id),
        "new_status": "online",
        "device": None,
        "metadata": None,
    }
    assert request.headers["authorization"] == f"Bearer {user_token()}"
    assert request.headers["apikey"] == ANON_KEY
    wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert presence.stats.last_success is not None
    assert presence.stats.last_success.isoformat() == SERVER_TIME.replace(".123456", ".123456")
    presence.stop()


def test_beats_repeat_every_interval_and_stop_sends_the_leave(server: respx.MockRouter) -> None:
    states: list[tuple[PresenceState, PresenceState]] = []
    presence = client(on_state_change=lambda old, new: states.append((old, new)))
    presence.start()
    wait_until(lambda: server["heartbeat"].call_count >= 3)
    presence.stop()
    assert server["leave"].call_count == 1
    assert presence.state is PresenceState.STOPPED
    assert [new for _, new in states] == [
        PresenceState.STARTING,
        PresenceState.ONLINE,
        PresenceState.STOPPING,
        PresenceState.STOPPED,
    ]
    times = [c.request.extensions.get("timeout") for c in server["heartbeat"].calls]
    assert times[0] == {"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5}
    beats = server["heartbeat"].call_count
    time.sleep(0.25)
    assert server["heartbeat"].call_count == beats  # really stopped


def test_interval_is_read_from_the_server_settings(server: respx.MockRouter) -> None:
    server["settings"].mock(return_value=ok(settings_json(interval=7, timeout=21)))
    presence = client(PresenceConfig(request_timeout=0.5, stop_timeout=0.5))
    with presence:
        wait_until(lambda: server["settings"].call_count == 1)
        wait_until(lambda: presence.stats.interval == 7.0)
    assert presence.stats.timeout == 21.0
    assert server["heartbeat"].call_count == 1


def test_start_and_stop_are_idempotent_and_thread_safe(server: respx.MockRouter) -> None:
    presence = client()
    threads = [threading.Thread(target=presence.start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(presence_threads()) == 1
    assert presence.start() is presence
    stoppers = [threading.Thread(target=presence.stop) for _ in range(8)]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    presence.stop()
    assert server["leave"].call_count == 1
    presence.stop()


def test_restart_after_stop(server: respx.MockRouter) -> None:
    presence = client()
    with presence:
        wait_until(lambda: server["heartbeat"].call_count >= 1)
    with presence:
        wait_until(lambda: server["heartbeat"].call_count >= 2)
    assert server["leave"].call_count == 2


def test_context_manager_returns_the_client(server: respx.MockRouter) -> None:
    with client() as presence:
        assert isinstance(presence, PresenceClient)
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert presence.state is PresenceState.STOPPED


def test_set_status_beats_at_once(server: respx.MockRouter) -> None:
    presence = client(dataclasses.replace(FAST, interval=5.0, timeout=20.0))
    with presence:
        wait_until(lambda: server["heartbeat"].call_count == 1)
        presence.set_status("away")
        wait_until(lambda: server["heartbeat"].call_count == 2, timeout=2.0)
        presence.set_status("busy")
        wait_until(lambda: server["heartbeat"].call_count == 3, timeout=2.0)
        presence.set_status("busy")  # unchanged: no extra beat
        time.sleep(0.1)
    assert statuses_sent(server["heartbeat"]) == ["online", "away", "busy"]
    assert presence.stats.status == "busy"


def test_invalid_status_raises_before_any_io(server: respx.MockRouter) -> None:
    presence = client()
    for bad in ("offline", "idle", "", None):
        with pytest.raises(InvalidInputError):
            presence.set_status(bad)  # type: ignore[arg-type]
    assert server.calls.call_count == 0
    presence.set_status("away")  # before start: the status to start with
    with presence:
        wait_until(lambda: server["heartbeat"].call_count == 1)
    assert statuses_sent(server["heartbeat"]) == ["away"]


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_transient_faults_are_retried(server: respx.MockRouter, fault: str) -> None:
    server["heartbeat"].side_effect = [TRANSIENT_FAULTS[fault](), TRANSIENT_FAULTS[fault](), ok()]
    errors: list[PresenceError] = []
    presence = client(RETRYING, on_error=errors.append)
    with presence:
        wait_until(lambda: presence.stats.beats_sent >= 1)
        stats = presence.stats
    assert server["heartbeat"].call_count >= 3
    assert (stats.retries, stats.beats_failed, stats.consecutive_failures) == (2, 0, 0)
    assert errors == []


def test_all_retries_failing_degrades_then_recovers(server: respx.MockRouter) -> None:
    failing = threading.Event()
    failing.set()
    server["heartbeat"].side_effect = lambda request: html_error(502) if failing.is_set() else ok()
    errors: list[PresenceError] = []
    presence = client(dataclasses.replace(RETRYING, interval=0.3), on_error=errors.append)
    with presence:
        wait_until(lambda: presence.stats.beats_failed >= 1)
        degraded = presence.stats
        failing.clear()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert degraded.state is PresenceState.DEGRADED
    assert degraded.consecutive_failures >= 1
    assert isinstance(degraded.last_error, TransientError)
    assert degraded.last_error.status == 502
    assert len(errors) == presence.stats.beats_failed
    assert presence.stats.consecutive_failures == 0


def test_429_waits_for_retry_after(server: respx.MockRouter) -> None:
    limited = pgrst_error(429, "", "rate limited", **{"Retry-After": "0.3"})
    server["heartbeat"].side_effect = [limited, ok()] + [ok()] * 50
    presence = client(RETRYING)
    with presence:
        wait_until(lambda: server["heartbeat"].call_count >= 2)
    first, second = (c.request for c in server["heartbeat"].calls[:2])
    assert presence.stats.retries >= 1
    gap = _sent_at(second) - _sent_at(first)
    assert gap >= 0.3


def test_expired_jwt_refreshes_the_session_once_and_retries(server: respx.MockRouter) -> None:
    old, new = user_token(expires_in=120), user_token(expires_in=3600)
    server["token"].mock(return_value=httpx.Response(200, json=session_json(new, "refresh-2")))
    server["heartbeat"].side_effect = [pgrst_error(401, "PGRST301", "JWT expired")] + [ok()] * 50
    supabase = sync_supabase()
    supabase.auth.set_session(old, "refresh-1")  # a signed-in app (GET /auth/v1/user)
    presence = PresenceClient(supabase, config=FAST)
    with presence:
        wait_until(lambda: presence.stats.beats_sent >= 1)
    assert server["token"].call_count == 1
    assert json.loads(server["token"].calls[0].request.content) == {"refresh_token": "refresh-1"}
    auth = [c.request.headers["authorization"] for c in server["heartbeat"].calls]
    assert auth[:2] == [f"Bearer {old}", f"Bearer {new}"]
    assert presence.stats.retries == 1
    assert presence.stats.beats_failed == 0


def test_no_refresh_when_supabase_already_refreshed(server: respx.MockRouter) -> None:
    supabase = sync_supabase(user_token())
    newer = f"Bearer {user_token(expires_in=7200)}"
    seen: list[str] = []

    def expired_then_ok(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if len(seen) == 1:
            supabase.options.headers["Authorization"] = newer  # supabase-py's timer ran
            supabase._postgrest = None  # what its auth listener does
            return pgrst_error(401, "PGRST301", "JWT expired")
        return ok()

    server["heartbeat"].side_effect = expired_then_ok
    presence = PresenceClient(supabase, config=FAST)
    with presence:
        wait_until(lambda: presence.stats.beats_sent >= 1)
    assert server["token"].call_count == 0
    assert seen[1] == newer


def test_unauthenticated_is_a_clear_state_without_spinning(server: respx.MockRouter) -> None:
    server["heartbeat"].mock(return_value=pgrst_error(403, "28000", "presence: not authenticated"))
    presence = PresenceClient(sync_supabase(), config=FAST)  # anon key only, no session
    with presence:
        wait_until(lambda: presence.state is PresenceState.UNAUTHENTICATED)
        time.sleep(0.35)
    # interval 0.1 s: a few attempts, one per interval, not a hot loop
    assert 1 <= server["heartbeat"].call_count <= 8
    assert server["token"].call_count == 0  # no session: nothing to refresh
    assert isinstance(presence.stats.last_error, AuthenticationError)
    assert server["leave"].call_count == 0


def test_missing_rpc_points_at_migrations_and_does_not_hot_loop(
    server: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    for route in ("heartbeat", "legacy_heartbeat"):  # neither sessions nor 0.1 SQL
        server[route].mock(return_value=pgrst_error(404, "PGRST202", "Could not find the function"))
    presence = client(dataclasses.replace(FAST, idle_backoff_max=0.2))
    with caplog.at_level(logging.ERROR, logger="presence_sdk"), presence:
        wait_until(lambda: presence.state is PresenceState.NOT_INSTALLED)
        time.sleep(0.5)
    error = presence.stats.last_error
    assert isinstance(error, NotInstalledError)
    assert error.hint is not None
    assert "verify_setup" in error.hint
    assert "migrat" in error.hint
    assert server["heartbeat"].call_count <= 5
    assert "verify_setup" in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_permission_denied_is_failed_state(server: respx.MockRouter) -> None:
    server["heartbeat"].mock(return_value=pgrst_error(403, "42501", "permission denied"))
    presence = client()
    with presence:
        wait_until(lambda: presence.state is PresenceState.FAILED)
    assert isinstance(presence.stats.last_error, PermissionDeniedError)


def test_stop_returns_within_the_bound_while_the_network_hangs(server: respx.MockRouter) -> None:
    release = threading.Event()
    hanging = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        hanging.set()
        release.wait(5)
        return ok()

    server["heartbeat"].side_effect = hang
    presence = client(dataclasses.replace(FAST, stop_timeout=0.3))
    presence.start()
    assert hanging.wait(1)
    started = time.monotonic()
    presence.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.3
    release.set()  # the hung request returns; the thread sends its leave and ends
    wait_until(lambda: not presence_threads(), timeout=2.0)
    assert server["leave"].call_count == 1


def test_nothing_escapes_into_the_app(server: respx.MockRouter) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    def bad_callback(*args: object) -> None:
        raise ValueError("callback bug")

    server["heartbeat"].side_effect = explode
    server["leave"].side_effect = explode
    hook_calls: list[object] = []
    previous = threading.excepthook
    threading.excepthook = hook_calls.append
    try:
        presence = client(on_error=bad_callback, on_state_change=bad_callback)
        with presence:
            wait_until(lambda: presence.stats.beats_failed >= 1)
    finally:
        threading.excepthook = previous
    assert hook_calls == []
    assert presence.state is PresenceState.STOPPED
    assert "transport bug" in str(presence.stats.last_error)


def test_stop_from_a_callback_does_not_deadlock(server: respx.MockRouter) -> None:
    presence: PresenceClient

    def on_state(old: PresenceState, new: PresenceState) -> None:
        if new is PresenceState.ONLINE:
            presence.stop()

    presence = client(on_state_change=on_state)
    presence.start()
    wait_until(lambda: presence.state is PresenceState.STOPPED)
    assert server["leave"].call_count == 1


# -- manual beat and construction -------------------------------------------------------


def test_beat_sends_one_heartbeat_in_the_calling_thread(server: respx.MockRouter) -> None:
    presence = client()
    beat_at = presence.beat()
    assert beat_at is not None
    assert beat_at.isoformat().startswith("2025-01-02T03:04:05")
    assert presence.stats.beats_sent == 1
    assert presence.state is PresenceState.STOPPED
    with presence, pytest.raises(RuntimeError, match="set_status"):
        presence.beat()
    for route in ("heartbeat", "legacy_heartbeat"):  # neither sessions nor 0.1 SQL
        server[route].mock(return_value=pgrst_error(404, "PGRST202", "missing"))
    with pytest.raises(NotInstalledError):
        presence.beat()


def test_from_url_with_a_session(server: respx.MockRouter) -> None:
    token = user_token(expires_in=60)
    server["heartbeat"].side_effect = [pgrst_error(401, "PGRST301", "JWT expired")] + [ok()] * 50
    http = httpx.Client()
    presence = PresenceClient.from_url(
        URL, ANON_KEY, access_token=token, refresh_token="r-1", config=FAST, http_client=http
    )
    assert presence.beat() is not None
    assert json.loads(server["token"].calls[0].request.content) == {"refresh_token": "r-1"}
    presence.close()
    assert not http.is_closed  # not ours to close
    http.close()

    owned = PresenceClient.from_url(URL, ANON_KEY, access_token=token, config=FAST)
    owned.close()
    assert owned.supabase.postgrest.session.is_closed


def test_bad_construction_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="supabase client"):
        PresenceClient.from_url("not a url", ANON_KEY)
    with pytest.raises(ConfigurationError, match="PresenceConfig"):
        PresenceClient(sync_supabase(), config={"interval": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_error"):
        PresenceClient(sync_supabase(), on_error="log")  # type: ignore[arg-type]


# -- queries ---------------------------------------------------------------------------


def test_queries_work_without_running(server: respx.MockRouter) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    row = {
        "user_id": str(a),
        "status": "busy",
        "online": True,
        "last_heartbeat": SERVER_TIME,
        "last_seen": SERVER_TIME,
        "online_since": SERVER_TIME,
    }
    server["get"].mock(return_value=ok([row]))
    server["is_online"].mock(return_value=ok(True))
    server["list_online"].mock(return_value=ok([row]))
    server["counts"].mock(return_value=ok({"online": 1, "away": 2, "busy": 3, "offline": 4}))
    presence = client()
    assert presence.get(a).status == "busy"
    assert presence.is_online(a) is True
    assert list(presence.lookup([b, a])) == [a]
    assert json.loads(server["get"].calls[-1].request.content) == {"user_ids": [str(b), str(a)]}
    page = presence.online_users(limit=1)
    assert page.next_after == a
    assert json.loads(server["list_online"].calls[0].request.content) == {
        "page_size": 1,
        "after_user_id": None,
    }
    assert presence.counts().total == 10
    assert presence.lookup([]) == {}
    assert presence.state is PresenceState.STOPPED


def test_query_input_errors_happen_before_io(server: respx.MockRouter) -> None:
    presence = client()
    with pytest.raises(InvalidInputError):
        presence.get("nope")
    with pytest.raises(InvalidInputError):
        presence.lookup([uuid.uuid4() for _ in range(1001)])
    with pytest.raises(InvalidInputError):
        presence.online_users(limit=0)
    assert server.calls.call_count == 0


def test_query_errors_are_translated(server: respx.MockRouter) -> None:
    server["counts"].mock(return_value=html_error(503))
    with pytest.raises(TransientError):
        client().counts()
    server["counts"].mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransientError, match="could not reach"):
        client().counts()


# -- process lifecycle: fork, atexit, SIGTERM -----------------------------------------------

_SCRIPT_HEADER = f"""
import json, os, signal, sys, threading, time
sys.path.insert(0, {str(SRC)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
import httpx, respx
from client_support import (
    announce, mock_server, sync_supabase, user_token, FAST, wait_until, URL, ANON_KEY
)
from presence_sdk import PresenceClient, PresenceState
import dataclasses

def presence_client(**config):
    return PresenceClient(sync_supabase(user_token()), config=dataclasses.replace(FAST, **config))

def owned_presence_client(**config):
    return PresenceClient.from_url(
        URL, ANON_KEY, access_token=user_token(), config=dataclasses.replace(FAST, **config)
    )
"""


def _run_script(body: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    script = _SCRIPT_HEADER + textwrap.dedent(body)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_stop_at_exit_sends_the_leave() -> None:
    result = _run_script(
        """
        mocked = mock_server()
        server = mocked.__enter__()
        announce(server["leave"], "LEAVE")
        presence = presence_client(stop_at_exit=True)
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        print("EXITING", flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EXITING", "LEAVE"]


def test_sigterm_default_action_still_ends_the_process_after_the_leave() -> None:
    result = _run_script(
        """
        mocked = mock_server()
        server = mocked.__enter__()
        announce(server["leave"], "LEAVE")
        presence = presence_client(handle_sigterm=True)
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)
        print("NOT REACHED", flush=True)
        """
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout.split() == ["LEAVE"]


def test_sigterm_chains_to_the_apps_handler(server: respx.MockRouter) -> None:
    seen: list[str] = []

    def app_handler(signum: int, frame: object) -> None:
        seen.append(f"app saw leave={server['leave'].call_count}")

    previous = signal.signal(signal.SIGTERM, app_handler)
    try:
        presence = client(dataclasses.replace(FAST, handle_sigterm=True))
        presence.start()
        assert signal.getsignal(signal.SIGTERM) is not app_handler
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: bool(seen))
        assert seen == ["app saw leave=1"]  # we left first, then the app's handler ran
        assert presence.state is PresenceState.STOPPED
        assert signal.getsignal(signal.SIGTERM) is app_handler  # restored on stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_sigterm_stays_ignored(server: respx.MockRouter) -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with client(dataclasses.replace(FAST, handle_sigterm=True)):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_forked_child_does_not_inherit_a_dead_thread_silently() -> None:
    result = _run_script(
        """
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        mocked = mock_server()
        server = mocked.__enter__()
        presence = owned_presence_client()  # its connections are renewed in the child
        presence.start()
        wait_until(lambda: presence.state is PresenceState.ONLINE)
        pid = os.fork()
        if pid == 0:
            print("CHILD", presence.state, flush=True)
            presence.start()  # the child can start its own heartbeat thread
            wait_until(lambda: presence.state is PresenceState.ONLINE)
            threads = [t.name for t in threading.enumerate() if t.name == "presence-heartbeat"]
            presence.stop()
            print("CHILD", presence.state, len(threads), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("PARENT", presence.state, os.waitstatus_to_exitcode(status), flush=True)
        presence.stop()
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "CHILD stopped" in lines
    assert "CHILD stopped 1" in lines
    assert "PARENT online 0" in lines
    assert any("forked while the heartbeat ran" in line for line in lines)


def _sent_at(request: httpx.Request) -> float:
    return float(request.extensions.get("sent_at", 0.0))


@pytest.fixture(autouse=True)
def stamp_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record when each request was sent (for the Retry-After test)."""
    original: Callable[..., httpx.Response] = httpx.Client.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        request.extensions["sent_at"] = time.monotonic()
        return original(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", send)


def test_logging_goes_to_the_presence_sdk_logger(
    server: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    handlers = logging.getLogger("presence_sdk").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    with caplog.at_level(logging.DEBUG, logger="presence_sdk"), client():
        wait_until(lambda: server["heartbeat"].call_count >= 1)
    assert caplog.records
    assert {r.name for r in caplog.records} == {"presence_sdk"}
    assert USER_ID  # the user id never needs to be logged
