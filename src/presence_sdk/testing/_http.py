"""Serve the PostgREST emulation over real HTTP on 127.0.0.1 (for demos and examples)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import httpx

from presence_sdk.testing._postgrest import PostgRESTEmulator

__all__ = ["LocalPostgREST"]

logger = logging.getLogger("presence_sdk.testing")


class LocalPostgREST:
    """An HTTP server on 127.0.0.1 that answers like Supabase's REST API (RPCs only).

    Requests are served by :meth:`PostgRESTEmulator.handle`, one thread per
    connection, so supabase-py clients (sync or async) talk to it over real sockets::

        with LocalPostgREST(PostgRESTEmulator(dsn)) as api:
            client = create_client(api.url, api.emulator.anon_key, options=...)

    Args:
        emulator: The emulator answering the requests (closed on :meth:`stop`).
        port: Port to listen on; 0 picks a free one.
    """

    def __init__(self, emulator: PostgRESTEmulator, *, port: int = 0) -> None:
        self.emulator = emulator
        handler = _handler_for(emulator)
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to give supabase-py, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Start serving in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="presence-local-postgrest", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the emulator's connections."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.emulator.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-request (a killed process, a stopped client) is
        # normal here; log it instead of printing a traceback over the demo's table.
        logger.debug("request from %s failed", client_address, exc_info=True)


def _handler_for(emulator: PostgRESTEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"{emulator.url}{self.path}",
                headers=dict(self.headers.items()),
                content=body,
            )
            response = emulator.handle(request)
            payload = response.content
            self.send_response(response.status_code)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            """Keep the terminal quiet (the demo draws its own table)."""

    return Handler
