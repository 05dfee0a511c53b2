"""A small misbehaving PostgREST stand-in on 127.0.0.1, for the client hardening tests.

Real sockets and real HTTP/1.1 keep-alive (unlike respx), so what the clients do with
connections, deadlines and pools is what gets tested. Each endpoint answers by
default like Supabase would (a heartbeat returns the server's time); tests queue
*acts* to make its next answers misbehave: hang, trickle the body a byte at a time,
send a 429 with ``Retry-After``, answer HTML with a 200...

Bounded: the server listens on 127.0.0.1 only; every wait and trickle ends when the
server stops; :meth:`MisbehavingServer.stop` shuts every connection down and waits
for the handler threads (a few seconds at most).

Usage::

    with MisbehavingServer() as server:
        server.then("presence_session_beat", hang(2.0), status(429, retry_after=60))
        client = PresenceClient.from_url(server.url, server.anon_key, access_token=...)
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from presence_sdk.testing import make_token

__all__ = [
    "Act",
    "MisbehavingServer",
    "Seen",
    "body",
    "hang",
    "json_answer",
    "status",
    "trickle",
]

#: How one request is answered: called with the request handler.
Act = Callable[["_Handler"], None]

SETTINGS = {
    "timeout_seconds": 45,
    "sweep_interval_seconds": 20,
    "heartbeat_interval_seconds": 15,
}


@dataclass(frozen=True)
class Seen:
    """A request the server received.

    Attributes:
        endpoint: The RPC name (``presence_session_beat``) or the path (``/auth/v1/token``).
        body: The decoded JSON body (None if empty or not JSON).
        headers: The request headers (lower-case names).
        peer: The client's (host, port): one TCP connection.
        at: ``time.monotonic()`` when it arrived.
    """

    endpoint: str
    body: Any
    headers: dict[str, str]
    peer: tuple[str, int]
    at: float


@dataclass
class _State:
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)
    acts: dict[str, deque[Act]] = field(default_factory=dict)
    defaults: dict[str, Act] = field(default_factory=dict)
    connections: set[socket.socket] = field(default_factory=set)
    aborted: list[str] = field(default_factory=list)  # acts cut short by the client


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up mid-answer is what these tests provoke: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PostgREST behind Kong
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client hung up
            super().finish()

    def _serve(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        path = self.path.split("?", 1)[0]
        endpoint = path.removeprefix("/rest/v1/rpc/")
        with state.lock:
            state.seen.append(
                Seen(
                    endpoint,
                    decoded,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.client_address[:2],
                    time.monotonic(),
                )
            )
            queued = state.acts.get(endpoint)
            act = queued.popleft() if queued else state.defaults.get(endpoint, _default)
        act(self)

    do_GET = do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""

    # -- helpers for acts ----------------------------------------------------------

    def answer(
        self, code: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    @property
    def stopping(self) -> threading.Event:
        return self.server.state.stopping


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _default(handler: _Handler) -> None:
    path = handler.path.split("?", 1)[0]
    if path in (
        "/rest/v1/rpc/presence_session_beat",
        "/rest/v1/rpc/presence_session_leave",
        "/rest/v1/rpc/presence_heartbeat",
        "/rest/v1/rpc/presence_leave",
    ):
        json_answer(_now())(handler)
    elif path == "/rest/v1/rpc/presence_settings":
        json_answer({**SETTINGS, "server_time": _now()})(handler)
    elif path == "/rest/v1/rpc/presence_counts":
        json_answer({"online": 0, "away": 0, "busy": 0, "offline": 0})(handler)
    else:
        status(404, code="PGRST202", message=f"no route for {path}")(handler)


# -- acts ------------------------------------------------------------------------------


def json_answer(value: Any, code: int = 200, headers: dict[str, str] | None = None) -> Act:
    """Answer ``value`` as JSON (a heartbeat's default is the server's time)."""
    payload = json.dumps(value).encode()

    def act(handler: _Handler) -> None:
        handler.answer(code, payload, "application/json; charset=utf-8", headers)

    return act


def body(payload: bytes, code: int = 200, content_type: str = "text/html") -> Act:
    """Answer exactly ``payload`` (HTML, an empty body...) with ``code``."""

    def act(handler: _Handler) -> None:
        handler.answer(code, payload, content_type)

    return act


def status(
    http_status: int,
    *,
    code: str | None = None,
    message: str = "error",
    retry_after: str | None = None,
) -> Act:
    """A PostgREST-style JSON error: HTTP ``http_status``, PostgREST ``code``, and a
    ``Retry-After`` header if given."""
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    value = {"code": code, "message": message, "details": None, "hint": None}
    return json_answer(value, http_status, headers)


def hang(seconds: float, then: Act | None = None) -> Act:
    """Say nothing for ``seconds`` (or until the server stops), then act as ``then``
    (the endpoint's default answer if None)."""

    def act(handler: _Handler) -> None:
        if handler.stopping.wait(seconds):
            return
        (then or _default)(handler)

    return act


def trickle(payload: bytes, per_second: float = 1.0) -> Act:
    """Send the headers at once, then the body ``per_second`` bytes a second (until the
    client gives up or the server stops: recorded in ``aborted``)."""

    def act(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        try:
            for index in range(len(payload)):
                handler.wfile.write(payload[index : index + 1])
                handler.wfile.flush()
                if handler.stopping.wait(1.0 / per_second):
                    return
        except OSError:
            with handler.server.state.lock:
                handler.server.state.aborted.append("trickle")
            handler.close_connection = True

    return act


class MisbehavingServer:
    """The stand-in: ``url`` and ``anon_key`` for ``from_url``; ``then``/``always`` to
    script it; ``seen`` to read what it received."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._thread: threading.Thread | None = None
        self.anon_key = make_token("anon", expires_in=86400)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def then(self, endpoint: str, *acts: Act) -> None:
        """Answer the next requests to ``endpoint`` with ``acts``, one each, in order."""
        with self._server.state.lock:
            self._server.state.acts.setdefault(endpoint, deque()).extend(acts)

    def always(self, endpoint: str, act: Act) -> None:
        """Answer every request to ``endpoint`` (once queued acts are used) with ``act``."""
        with self._server.state.lock:
            self._server.state.defaults[endpoint] = act

    def seen(self, endpoint: str | None = None) -> list[Seen]:
        """The requests received (to ``endpoint``), oldest first."""
        with self._server.state.lock:
            return [s for s in self._server.state.seen if endpoint in (None, s.endpoint)]

    @property
    def aborted(self) -> list[str]:
        """Acts that the client cut short by dropping the connection."""
        with self._server.state.lock:
            return list(self._server.state.aborted)

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.02,),  # poll interval: stop() returns quickly
            name="misbehaving-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every wait and trickle, drop every connection, stop serving."""
        state = self._server.state
        state.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        with state.lock:
            connections = list(state.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with state.lock:
                if not state.connections:
                    break
            time.sleep(0.01)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
