"""Helpers shared by the sync and async client unit tests (respx + real supabase-py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions

from presence_sdk import PresenceConfig
from presence_sdk.testing import make_token

URL = "http://presence.test"
ANON_KEY = make_token("anon", expires_in=86400)
USER_ID = str(uuid.uuid4())
SERVER_TIME = "2025-01-02T03:04:05.123456+00:00"

#: Timings small enough that no test waits long.
FAST = PresenceConfig(
    interval=0.1,
    timeout=1.0,
    jitter=0.0,
    backoff_initial=0.01,
    backoff_max=0.02,
    request_timeout=0.5,
    stop_timeout=0.5,
)


# Tokens carry their issue time; pin it per test (tests/unit/conftest.py) so the same
# arguments give the same token within a test, even across a second boundary.
_issued_at = [int(time.time())]


def pin_token_time() -> None:
    """Make the tokens of the test about to run be issued now."""
    _issued_at[0] = int(time.time())


def user_token(expires_in: float = 3600, user_id: str = USER_ID) -> str:
    """A user access token (unsigned check: supabase-py only decodes it)."""
    return make_token(
        "authenticated",
        user_id=user_id,
        expires_in=expires_in,
        iat=_issued_at[0],
        exp=int(_issued_at[0] + expires_in),
    )


def rpc_path(fn: str) -> str:
    """The path of an RPC."""
    return f"/rest/v1/rpc/{fn}"


def sync_supabase(token: str | None = None) -> Client:
    """A real supabase Client, signed in as the test user through a static header."""
    options = ClientOptions(httpx_client=httpx.Client(), auto_refresh_token=False)
    if token is not None:
        options.headers["Authorization"] = f"Bearer {token}"
    return Client(URL, ANON_KEY, options)


def async_supabase(token: str | None = None) -> AsyncClient:
    """A real supabase AsyncClient, signed in as the test user through a static header."""
    options = AsyncClientOptions(httpx_client=httpx.AsyncClient(), auto_refresh_token=False)
    if token is not None:
        options.headers["Authorization"] = f"Bearer {token}"
    return AsyncClient(URL, ANON_KEY, options)


def user_json(user_id: str = USER_ID) -> dict[str, Any]:
    """A GoTrue user object."""
    return {
        "id": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": "user@example.test",
        "app_metadata": {},
        "user_metadata": {},
        "created_at": "2025-01-01T00:00:00Z",
    }


def session_json(access_token: str, refresh_token: str) -> dict[str, Any]:
    """A GoTrue session (the answer to a refresh)."""
    return {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
        "user": user_json(),
    }


def ok(value: Any = SERVER_TIME) -> httpx.Response:
    """A successful RPC answer."""
    return httpx.Response(200, json=value)


def pgrst_error(status: int, code: str, message: str = "error", **headers: str) -> httpx.Response:
    """A PostgREST JSON error."""
    body = {"code": code, "message": message, "details": None, "hint": None}
    return httpx.Response(status, json=body, headers=headers)


def html_error(status: int) -> httpx.Response:
    """A proxy's HTML error page."""
    html = f"<html><body><h1>{status}</h1>upstream unavailable</body></html>"
    return httpx.Response(status, text=html, headers={"content-type": "text/html"})


#: One of each transient fault the clients must retry.
TRANSIENT_FAULTS: dict[str, Callable[[], Any]] = {
    "connect-error": lambda: httpx.ConnectError("connection refused"),
    "read-timeout": lambda: httpx.ReadTimeout("read timed out"),
    "500-json": lambda: pgrst_error(500, "XX000", "internal error"),
    "503-pgrst": lambda: pgrst_error(503, "PGRST001", "database unavailable"),
    "502-html": lambda: html_error(502),
    "503-html": lambda: html_error(503),
    "429": lambda: pgrst_error(429, "", "rate limited", **{"Retry-After": "0"}),
}


def settings_json(interval: int = 15, timeout: int = 45) -> dict[str, Any]:
    """The answer of presence_settings()."""
    return {
        "timeout_seconds": timeout,
        "sweep_interval_seconds": 20,
        "heartbeat_interval_seconds": interval,
        "server_time": SERVER_TIME,
    }


@contextmanager
def mock_server() -> Iterator[respx.MockRouter]:
    """respx routes for the presence RPCs, answering success by default.

    Routes are named ``heartbeat`` and ``leave`` (the per-session RPCs the clients
    use), ``legacy_heartbeat`` and ``legacy_leave`` (0.1's per-user RPCs, the fallback),
    ``settings``, ``get``, ``is_online``, ``list_online``, ``counts``, ``user``
    (GoTrue) and ``token`` (GoTrue refresh).
    """
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.post(rpc_path("presence_session_beat"), name="heartbeat").mock(return_value=ok())
        router.post(rpc_path("presence_session_leave"), name="leave").mock(return_value=ok())
        router.post(rpc_path("presence_heartbeat"), name="legacy_heartbeat").mock(return_value=ok())
        router.post(rpc_path("presence_leave"), name="legacy_leave").mock(return_value=ok())
        router.post(rpc_path("presence_settings"), name="settings").mock(
            return_value=ok(settings_json())
        )
        router.post(rpc_path("presence_get"), name="get").mock(return_value=ok([]))
        router.post(rpc_path("presence_is_online"), name="is_online").mock(return_value=ok(False))
        router.post(rpc_path("presence_list_online"), name="list_online").mock(return_value=ok([]))
        router.post(rpc_path("presence_counts"), name="counts").mock(
            return_value=ok({"online": 0, "away": 0, "busy": 0, "offline": 0})
        )
        router.get("/auth/v1/user", name="user").mock(
            return_value=httpx.Response(200, json=user_json())
        )
        router.post("/auth/v1/token", name="token").mock(
            return_value=httpx.Response(200, json=session_json(user_token(), "refresh-2"))
        )
        yield router


def announce(route: respx.Route, word: str) -> None:
    """Make ``route`` print ``word`` (flushed) when called, then answer success."""

    def side_effect(request: httpx.Request) -> httpx.Response:
        print(word, flush=True)
        return ok()

    route.side_effect = side_effect


def statuses_sent(route: respx.Route) -> list[str]:
    """The ``new_status`` of each heartbeat a route received."""
    return [json.loads(call.request.content)["new_status"] for call in route.calls]


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``predicate`` (in a thread-friendly way) until true or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


async def async_wait_until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """The asyncio twin of :func:`wait_until`."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def presence_threads() -> list[threading.Thread]:
    """Live heartbeat threads."""
    return [t for t in threading.enumerate() if t.name == "presence-heartbeat" and t.is_alive()]


def other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the running loop besides the current one."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}
