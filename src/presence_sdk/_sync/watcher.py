"""PresenceWatcher: a blocking iterator of presence events, over a DSN or a supabase client.

A thin shell: the logic is :func:`presence_sdk._watch.watch_effects`; this module only
performs its effects, on a psycopg connection (LISTEN + ``presence_events_since``) or
through PostgREST (polling ``presence_events_since``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import sql
from supabase import Client

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

__all__ = ["PresenceWatcher", "QueryRunner"]

T = TypeVar("T")

#: Runs one read through PostgREST (a client's own runner refreshes expired sessions).
QueryRunner = Callable[[Query[Any]], Any]


def supabase_runner(supabase: Client, timeout: float) -> QueryRunner:
    """Reads through a supabase ``Client`` (its httpx session, URL and headers)."""

    def run(query: Query[Any]) -> Any:
        assert query.fn is not None
        call = Call(query.fn, query.params, timeout)
        try:
            rest = supabase.postgrest
            response = rest.session.send(build_request(rest.session, rest, call))
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
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout)),
                    application_name="presence_sdk watcher",
                )
            except psycopg.Error as exc:
                raise translate(exc) from exc
        return self._conn

    def fetch(self, query: Query[EventPage]) -> EventPage:
        conn = self._connection()
        try:
            row = conn.execute(
                "SELECT public.presence_events_since(%(after_id)s, %(max_rows)s)", query.params
            ).fetchone()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        return query.parse(None if row is None else row[0])

    def listen(self, on: bool) -> None:
        verb = "LISTEN" if on else "UNLISTEN"
        try:
            self._connection().execute(
                sql.SQL("{} {}").format(sql.SQL(verb), sql.Identifier(EVENTS_CHANNEL))
            )
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def wait(self, seconds: float) -> None:
        conn = self._connection()
        try:
            got = next(iter(conn.notifies(timeout=seconds, stop_after=1)), None)
            if got is not None:  # collapse whatever else is pending into this one read
                for _ in conn.notifies(timeout=0.0):
                    pass
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def reconnect(self) -> None:
        self.close()
        self._connection()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                conn.close()


class _RpcSource:
    """PostgREST: polling ``presence_events_since``."""

    listens = False

    def __init__(self, runner: QueryRunner) -> None:
        self._run = runner

    def fetch(self, query: Query[EventPage]) -> EventPage:
        page: EventPage = self._run(query)
        return page

    def listen(self, on: bool) -> None:  # never asked: listens is False
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def reconnect(self) -> None:
        """Each HTTP request stands alone."""

    def close(self) -> None:
        """The supabase client belongs to the app."""


class PresenceWatcher(WatcherBase["_DsnSource | _RpcSource", QueryRunner]):
    """Presence events as a blocking iterator: ``for event in watcher:``.

    Give it a DSN (a direct PostgreSQL connection: LISTEN/NOTIFY, events within
    milliseconds) or a supabase ``Client`` (polls the ``presence_events_since`` RPC
    every ``poll_interval`` seconds). Either way it yields
    :class:`~presence_sdk.PresenceEvent` in id order, and resumes after ``after_id``
    without losing or repeating an event: save ``event.id`` (or :attr:`last_id`) as
    you process events and pass it back after a restart::

        with PresenceWatcher(dsn=DSN, after_id=saved) as watcher:
            for event in watcher:
                handle(event)
                saved = event.id

    Dropped connections and server restarts are retried with backoff (logged as
    warnings). A DSN or client without the rights to read the log, or a database
    without the events SQL, raises at the first read instead.

    Args:
        supabase: A supabase ``Client`` (signed-in user: the events visible to them;
            service key: all).
        dsn: A libpq connection string (its role needs EXECUTE on
            ``presence_events_since``; the owner or a BYPASSRLS role sees all events).
        after_id: Start after this event id (0: the oldest kept event).
        poll_interval: Seconds between reads when polling; with a DSN, the longest
            wait for a notification before reading anyway.
        page_size: Events per read (1-1000), also the most held in memory.
        request_timeout: Seconds for each HTTP request / connection attempt.
    """

    _iterator: Generator[PresenceEvent, None, None] | None

    def __init__(
        self,
        supabase: Client | None = None,
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
    def _polling(cls, runner: QueryRunner) -> _DsnSource | _RpcSource:
        return _RpcSource(runner)

    def __iter__(self) -> Iterator[PresenceEvent]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def close(self) -> None:
        """Stop: the iteration ends, the connection (if any) is closed. Idempotent.

        From another thread (task) than the one iterating, the iteration ends at
        its next step (within ``poll_interval``).
        """
        self._closed = True
        if self._iterator is not None:
            try:
                self._iterator.close()
            except ValueError:  # iterated by another thread: it stops at its next step
                return
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _events(self) -> Generator[PresenceEvent, None, None]:
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
                    reply = self._perform(effect)
                except PresenceError as exc:
                    error = exc
        finally:
            effects.close()
            self._source.close()

    def _perform(self, effect: WatchEffect) -> Any:
        source = self._source
        if isinstance(effect, Fetch):
            return source.fetch(events_since(effect.after_id, effect.limit))
        if isinstance(effect, Listen | Unlisten):
            source.listen(isinstance(effect, Listen))
        elif isinstance(effect, Wait):
            source.wait(effect.seconds)
        elif isinstance(effect, Pause):
            time.sleep(effect.seconds)
        elif isinstance(effect, Reconnect):
            source.reconnect()
        return None
