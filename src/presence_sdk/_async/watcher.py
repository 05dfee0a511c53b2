"""AsyncPresenceWatcher: an async iterator of presence events, over a DSN or a supabase
``AsyncClient``.

The asyncio twin of :mod:`presence_sdk._sync.watcher`: the same core
(:func:`presence_sdk._watch.watch_effects`), effects awaited on a psycopg
``AsyncConnection`` or through PostgREST.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from supabase import AsyncClient

from presence_sdk._core import Call
from presence_sdk._errors import translate
from presence_sdk._events import EVENTS_CHANNEL, EventPage, PresenceEvent, events_since
from presence_sdk._exceptions import PresenceError
from presence_sdk._queries import Query
from presence_sdk._watch import (
    DEFAULT_POLL_INTERVAL,
    Deliver,
    Fetch,
    Listen,
    Pause,
    Reconnect,
    Unlisten,
    Wait,
    WatchEffect,
    WatcherBase,
    watch_effects,
)
from presence_sdk._wire import build_request, parse_response

__all__ = ["AsyncPresenceWatcher", "AsyncQueryRunner"]

#: Runs one read through PostgREST (a client's own runner refreshes expired sessions).
AsyncQueryRunner = Callable[[Query[Any]], Awaitable[Any]]


def supabase_runner(supabase: AsyncClient, timeout: float) -> AsyncQueryRunner:
    """Reads through a supabase ``AsyncClient`` (its httpx session, URL and headers)."""

    async def run(query: Query[Any]) -> Any:
        assert query.fn is not None
        call = Call(query.fn, query.params, timeout)
        try:
            rest = supabase.postgrest
            response = await rest.session.send(build_request(rest.session, rest, call))
        except Exception as exc:
            raise translate(exc) from exc
        return query.parse(parse_response(response))

    return run


class _DsnSource:
    """A direct connection: LISTEN/NOTIFY, and the RPC as plain SQL."""

    listens = True

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout)),
                    application_name="presence_sdk watcher",
                )
            except psycopg.Error as exc:
                raise translate(exc) from exc
        return self._conn

    async def fetch(self, query: Query[EventPage]) -> EventPage:
        conn = await self._connection()
        try:
            cursor = await conn.execute(
                "SELECT public.presence_events_since(%(after_id)s, %(max_rows)s)", query.params
            )
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        return query.parse(None if row is None else row[0])

    async def listen(self, on: bool) -> None:
        verb = "LISTEN" if on else "UNLISTEN"
        conn = await self._connection()
        try:
            await conn.execute(
                sql.SQL("{} {}").format(sql.SQL(verb), sql.Identifier(EVENTS_CHANNEL))
            )
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def wait(self, seconds: float) -> None:
        conn = await self._connection()
        try:
            got = False
            async for _ in conn.notifies(timeout=seconds, stop_after=1):
                got = True
            if got:  # collapse whatever else is pending into this one read
                async for _ in conn.notifies(timeout=0.0):
                    pass
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def reconnect(self) -> None:
        await self.close()
        await self._connection()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                await conn.close()


class _RpcSource:
    """PostgREST: polling ``presence_events_since``."""

    listens = False

    def __init__(self, runner: AsyncQueryRunner) -> None:
        self._run = runner

    async def fetch(self, query: Query[EventPage]) -> EventPage:
        page: EventPage = await self._run(query)
        return page

    async def listen(self, on: bool) -> None:  # never asked: listens is False
        raise NotImplementedError

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def reconnect(self) -> None:
        """Each HTTP request stands alone."""

    async def close(self) -> None:
        """The supabase client belongs to the app."""


class AsyncPresenceWatcher(WatcherBase["_DsnSource | _RpcSource", AsyncQueryRunner]):
    """Presence events as an async iterator: ``async for event in watcher:``.

    The asyncio twin of :class:`~presence_sdk.PresenceWatcher` (same arguments, same
    guarantees), over a DSN (LISTEN/NOTIFY) or a supabase ``AsyncClient`` (polling)::

        async with AsyncPresenceWatcher(dsn=DSN, after_id=saved) as watcher:
            async for event in watcher:
                await handle(event)
                saved = event.id

    Args:
        supabase: A supabase ``AsyncClient``.
        dsn: A libpq connection string.
        after_id: Start after this event id (0: the oldest kept event).
        poll_interval: Seconds between reads when polling; with a DSN, the longest
            wait for a notification before reading anyway.
        page_size: Events per read (1-1000), also the most held in memory.
        request_timeout: Seconds for each HTTP request / connection attempt.
    """

    _iterator: AsyncGenerator[PresenceEvent, None] | None

    def __init__(
        self,
        supabase: AsyncClient | None = None,
        *,
        dsn: str | None = None,
        after_id: int = 0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = 100,
        request_timeout: float = 10.0,
    ) -> None:
        self._check_target(supabase, dsn)
        source = (
            _DsnSource(dsn, request_timeout)
            if dsn is not None
            else _RpcSource(supabase_runner(supabase, request_timeout))  # type: ignore[arg-type]
        )
        self._setup(source, after_id, poll_interval, page_size)

    @classmethod
    def _polling(cls, runner: AsyncQueryRunner) -> _DsnSource | _RpcSource:
        return _RpcSource(runner)

    def __aiter__(self) -> AsyncIterator[PresenceEvent]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    async def close(self) -> None:
        """Stop: the iteration ends, the connection (if any) is closed. Idempotent.

        From another thread (task) than the one iterating, the iteration ends at
        its next step (within ``poll_interval``).
        """
        self._closed = True
        if self._iterator is not None:
            try:
                await self._iterator.aclose()
            except RuntimeError:  # iterated by another task: it stops at its next step
                return
        await self._source.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _events(self) -> AsyncGenerator[PresenceEvent, None]:
        effects = watch_effects(self._options)
        reply: Any = None
        error: BaseException | None = None
        try:
            while not self._closed:
                effect = effects.throw(error) if error is not None else effects.send(reply)
                reply, error = None, None
                if isinstance(effect, Deliver):
                    self._last_id = effect.event.id
                    yield effect.event
                    continue
                try:
                    reply = await self._perform(effect)
                except PresenceError as exc:
                    error = exc
        finally:
            effects.close()
            await self._source.close()

    async def _perform(self, effect: WatchEffect) -> Any:
        source = self._source
        if isinstance(effect, Fetch):
            return await source.fetch(events_since(effect.after_id, effect.limit))
        if isinstance(effect, Listen | Unlisten):
            await source.listen(isinstance(effect, Listen))
        elif isinstance(effect, Wait):
            await source.wait(effect.seconds)
        elif isinstance(effect, Pause):
            await asyncio.sleep(effect.seconds)
        elif isinstance(effect, Reconnect):
            await source.reconnect()
        return None
