"""The httpx clients that ``from_url`` builds: connection pools per process (and loop).

A pooled keep-alive connection is a socket. After ``os.fork()`` the parent and the
child hold the same socket, so their requests interleave on one connection: the
server reads garbled requests and each process may read the other's responses. An
``httpx.AsyncClient``'s connections also belong to the event loop they were opened in.

So the clients that presence_sdk builds and owns check, before every request, that
their pool was made in this process (and, async, for the running event loop). If not,
they make a new pool with the same settings and leave the inherited one untouched:
closing it could write on the parent's socket or wait forever on a lock that one of the
parent's threads held at the fork. The old pool stays referenced, so no socket of it is
finalised (and warned about) in the child.

They are also re-openable: after :meth:`OwnedClient.close` the next request opens a
new pool, so a ``with`` block can release the connections on exit and the same
presence client can be started again later.

Clients the app passes in (``http_client=``, or a whole supabase client) are the app's:
presence_sdk never replaces their pools, and refuses to use them in a forked child
(see ``ClientBase``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import httpx

__all__ = ["OwnedAsyncClient", "OwnedClient"]


class OwnedClient(httpx.Client):
    """An ``httpx.Client`` with a pool per process, re-opened on use after close.

    Args:
        timeout: The default timeout of its requests.
    """

    def __init__(self, *, timeout: float) -> None:
        self._presence_settings: dict[str, Any] = {"timeout": timeout}
        self._presence_guard = threading.Lock()
        self._presence_pid = os.getpid()
        self._presence_closed = False
        self._presence_inherited: list[dict[str, Any]] = []
        super().__init__(**self._presence_settings)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send ``request`` over a pool of this process (see the module docstring)."""
        if self._presence_pid != os.getpid() or self._presence_closed:
            self._renew()
        return super().send(request, **kwargs)

    def close(self) -> None:
        """Close the pool (a later request opens a new one); a pool inherited from the
        parent process is dropped instead (see the module docstring)."""
        with self._presence_guard:
            if self._presence_pid == os.getpid():
                super().close()
            else:
                self._presence_inherited.append(_pool_of(self))
            self._presence_closed = True

    def _renew(self) -> None:
        with self._presence_guard:
            forked = self._presence_pid != os.getpid()
            if not forked and not self._presence_closed:
                return  # another thread renewed it meanwhile
            if forked:
                self._presence_inherited.append(_pool_of(self))
            httpx.Client.__init__(self, **self._presence_settings)
            self._presence_pid = os.getpid()
            self._presence_closed = False


class OwnedAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` with a pool per process and event loop, re-opened on
    use after close.

    Args:
        timeout: The default timeout of its requests.
    """

    def __init__(self, *, timeout: float) -> None:
        self._presence_settings: dict[str, Any] = {"timeout": timeout}
        self._presence_pid = os.getpid()
        self._presence_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._presence_closed = False
        self._presence_inherited: list[dict[str, Any]] = []
        super().__init__(**self._presence_settings)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send ``request`` over a pool of this process and loop."""
        loop = asyncio.get_running_loop()
        here = self._presence_pool_is_here(loop)
        if not here or self._presence_closed or self._presence_loop is None:
            # No await from the check to the renewal: atomic within the loop.
            if not here:
                self._presence_inherited.append(_pool_of(self))  # left alone
            if not here or self._presence_closed:
                httpx.AsyncClient.__init__(self, **self._presence_settings)
            self._presence_pid = os.getpid()
            self._presence_loop = weakref.ref(loop)
            self._presence_closed = False
        return await super().send(request, **kwargs)

    async def aclose(self) -> None:
        """Close the pool (a later request opens a new one). A pool of another process
        or of an event loop that has ended cannot be closed from here: it is dropped."""
        if self._presence_loop is None or self._presence_pool_is_here(asyncio.get_running_loop()):
            await super().aclose()
        else:
            self._presence_inherited.append(_pool_of(self))
        self._presence_closed = True

    def _presence_pool_is_here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the pool was made in this process, for ``loop`` (or never used)."""
        if self._presence_pid != os.getpid():
            return False
        return self._presence_loop is None or self._presence_loop() is loop


def _pool_of(client: httpx.Client | httpx.AsyncClient) -> dict[str, Any]:
    """What holds the client's connections, kept so that nothing finalises them."""
    return dict(vars(client))
