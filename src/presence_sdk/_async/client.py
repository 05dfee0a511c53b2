"""AsyncPresenceClient: heartbeats from an asyncio task, over a supabase ``AsyncClient``.

A thin shell: the logic is :class:`presence_sdk._core.Heartbeat`; this module only
performs its effects (awaited sends, waits on an ``asyncio.Event``) in a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from supabase import AsyncClient, AsyncClientOptions

from presence_sdk import _events as events
from presence_sdk import _queries as queries
from presence_sdk._async.watcher import AsyncPresenceWatcher
from presence_sdk._config import PresenceConfig
from presence_sdk._core import (
    LOGGER,
    AuthCall,
    Call,
    Driver,
    Effect,
    Effects,
    ErrorCallback,
    Refresh,
    RunControl,
    StateCallback,
    query_effects,
)
from presence_sdk._errors import translate
from presence_sdk._events import EventPage, OnlineDay, SessionRecord
from presence_sdk._exceptions import PresenceError
from presence_sdk._models import OnlinePage, Presence, StatusCounts
from presence_sdk._shell import ClientBase, ExitHooks, client_options
from presence_sdk._watch import DEFAULT_POLL_INTERVAL
from presence_sdk._wire import build_request, parse_response

__all__ = ["AsyncPresenceClient"]

T = TypeVar("T")


@dataclass(slots=True)
class _Run:
    control: RunControl
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class AsyncPresenceClient(ClientBase[AsyncClient]):
    """Keeps a signed-in user's presence alive from an asyncio task.

    The asyncio twin of :class:`~presence_sdk.PresenceClient`, over the app's supabase
    ``AsyncClient``::

        async with AsyncPresenceClient(supabase) as presence:
            presence.set_status("busy")
            ...  # leaves (offline now) on exit

    If the task is cancelled from outside (``asyncio.run()`` cancels what is left when
    the main coroutine returns), it still sends the leave, within ``stop_timeout``.
    Use it from its event loop; :meth:`set_status` may also be called from other
    threads. With ``filterwarnings = error`` build the supabase client with
    ``AsyncClientOptions(httpx_client=httpx.AsyncClient())``.

    Args:
        supabase: The app's supabase ``AsyncClient``.
        config: Timings and policies (:class:`~presence_sdk.PresenceConfig`).
        on_error: Called with the error of each failed heartbeat (after retries) or
            leave. Exceptions it raises are logged.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`.
            Exceptions it raises are logged.
        refresh_token: Used once when the token expires and the supabase client has
            no stored session (see :meth:`from_url`).
    """

    def _init_shell(self) -> None:
        self._lock = asyncio.Lock()
        self._run: _Run | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal_tasks: set[asyncio.Task[None]] = set()
        self._hooks = ExitHooks(None, self._stop_then if self.config.handle_sigterm else None)

    @classmethod
    def from_url(
        cls,
        url: str,
        key: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        config: PresenceConfig | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> AsyncPresenceClient:
        """Build the supabase ``AsyncClient`` too (see ``PresenceClient.from_url``)."""
        config = config or PresenceConfig()
        http = http_client or httpx.AsyncClient(timeout=config.request_timeout)
        options = client_options(AsyncClientOptions(httpx_client=http), access_token)
        return cls._from_parts(
            lambda: AsyncClient(url, key, options),
            owns_http=http_client is None,
            config=config,
            refresh_token=refresh_token,
            on_error=on_error,
            on_state_change=on_state_change,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        """Start the heartbeat task (first beat at once). Idempotent."""
        async with self._lock:
            if self._running():
                return self
            run = _Run(self._engine.begin_run())
            run.task = asyncio.create_task(self._main(run), name="presence-heartbeat")
            self._run = run
            self._loop = asyncio.get_running_loop()
            self._hooks.install()
        return self

    async def stop(self) -> None:
        """Stop beating and send the leave; returns within ``config.stop_timeout``.

        Idempotent. If the network hangs, the task is cancelled after the bound.
        """
        async with self._lock:
            run, self._run = self._run, None
            if run is None or run.task is None:
                return
            self._hooks.uninstall()
            self._engine.request_stop(run.control)
            run.wake.set()
            if run.task is asyncio.current_task():
                return
            done, _ = await asyncio.wait({run.task}, timeout=self.config.stop_timeout)
            if not done:
                LOGGER.warning(
                    "presence: stop() gave up waiting after %.1fs (network slow?)",
                    self.config.stop_timeout,
                )
                run.task.cancel()
                await asyncio.wait({run.task})

    async def close(self) -> None:
        """Stop, and close the httpx client if :meth:`from_url` created it."""
        await self.stop()
        if self._owns_http:
            await self._supabase.postgrest.session.aclose()

    async def beat(self) -> datetime | None:
        """Send one heartbeat now and return the server's time of it.

        See ``PresenceClient.beat``: raises the error of a failed heartbeat, and
        RuntimeError while the heartbeat task runs.
        """
        async with self._lock:
            if self._running():
                msg = "the heartbeat task is running; use set_status() for a beat now"
                raise RuntimeError(msg)
            return await self._drive(self._engine.beat_once(), None)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- presence queries ---------------------------------------------------------

    async def get(self, user_id: queries.UserId) -> Presence:
        """The presence of one user (see ``PresenceClient.get``)."""
        return await self._query(queries.get(user_id))

    async def is_online(self, user_id: queries.UserId) -> bool:
        """Whether one user is online now (see ``PresenceClient.is_online``)."""
        return await self._query(queries.is_online(user_id))

    async def lookup(self, user_ids: Iterable[queries.UserId]) -> dict[uuid.UUID, Presence]:
        """Many users' presence in one round trip (see ``PresenceClient.lookup``)."""
        return await self._query(queries.lookup(user_ids))

    async def online_users(
        self, limit: int = 100, after: queries.UserId | None = None
    ) -> OnlinePage:
        """One page of online users (see ``PresenceClient.online_users``)."""
        return await self._query(queries.online_users(limit, after))

    async def counts(self) -> StatusCounts:
        """Number of visible users per effective status."""
        return await self._query(queries.counts())

    # -- events and history --------------------------------------------------------

    def watch(
        self,
        after_id: int = 0,
        *,
        dsn: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = 100,
    ) -> AsyncPresenceWatcher:
        """Presence events as they happen: ``async for event in presence.watch(saved_id):``.

        Polls ``presence_events_since`` through this client every ``poll_interval``
        seconds, or LISTENs on a direct connection when ``dsn`` is given. Resumes after
        ``after_id`` with no event lost or repeated. See
        :class:`~presence_sdk.AsyncPresenceWatcher`.
        """
        if dsn is not None:
            return AsyncPresenceWatcher(
                dsn=dsn,
                after_id=after_id,
                poll_interval=poll_interval,
                page_size=page_size,
                request_timeout=self.config.request_timeout,
            )
        return AsyncPresenceWatcher._over(
            self._query, after_id=after_id, poll_interval=poll_interval, page_size=page_size
        )

    async def events_since(self, after_id: int = 0, limit: int = 100) -> EventPage:
        """One page of the event log after ``after_id``; resume from ``page.last_id``."""
        return await self._query(events.events_since(after_id, limit))

    async def session_history(
        self,
        user_id: queries.UserId,
        start: datetime,
        end: datetime | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]:
        """A user's sessions overlapping ``[start, end)`` (your own; service key: anyone's)."""
        return await self._query(events.session_history(user_id, start, end, limit))

    async def online_per_day(
        self,
        user_id: queries.UserId,
        first_day: date,
        last_day: date,
        time_zone: str = "UTC",
    ) -> list[OnlineDay]:
        """Time a user was online on each day (calendar days in ``time_zone``)."""
        return await self._query(events.online_per_day(user_id, first_day, last_day, time_zone))

    # -- effects ------------------------------------------------------------------

    def _running(self) -> bool:
        run = self._run
        return run is not None and run.task is not None and not run.task.done()

    async def _query(self, query: queries.Query[T]) -> T:
        return await self._drive(query_effects(query, self.config.request_timeout), None)

    async def _main(self, run: _Run) -> None:
        try:
            await self._drive(self._engine.run(run.control), run.wake)
        except asyncio.CancelledError:
            await self._farewell(run.control)
            raise
        except Exception:  # a bug; never let it reach the app
            LOGGER.exception("presence: heartbeat task failed")
        finally:
            self._engine.end_run(run.control)

    async def _farewell(self, control: RunControl) -> None:
        """Cancelled from outside (not by stop()): still send the leave, bounded."""
        if control.stop_requested:
            return
        self._engine.request_stop(control)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.stop_timeout):
                await self._drive(self._engine.leave(control), None)

    async def _drive(self, effects: Effects[T], wake: asyncio.Event | None) -> T:
        driver = Driver(effects)
        try:
            for effect in driver:
                try:
                    driver.reply(await self._perform(effect, wake))
                except PresenceError as exc:
                    driver.fail(exc)
        finally:
            driver.close()
        return driver.result

    async def _perform(self, effect: Effect, wake: asyncio.Event | None) -> Any:
        if isinstance(effect, Call):
            return await self._call(effect)
        if isinstance(effect, Refresh):
            return await self._drive(self._refresh_effects(effect), None)
        if isinstance(effect, AuthCall):
            return await self._auth(effect)
        if wake is None:
            await asyncio.sleep(effect.seconds)
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(effect.seconds):
                await wake.wait()
        wake.clear()
        return None

    async def _call(self, call: Call) -> Any:
        try:
            rest = self._supabase.postgrest
            async with asyncio.timeout(call.timeout):
                response = await rest.session.send(build_request(rest.session, rest, call))
        except Exception as exc:
            raise translate(exc) from exc
        return parse_response(response)

    async def _auth(self, call: AuthCall) -> Any:
        try:
            return await getattr(self._supabase.auth, call.method)(*call.args)
        except Exception as exc:
            raise translate(exc) from exc

    def _wake(self) -> None:
        run, loop = self._run, self._loop
        if run is None or loop is None or loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            run.wake.set()
        else:
            loop.call_soon_threadsafe(run.wake.set)

    def _stop_then(self, pass_on: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            pass_on()
            return

        async def stop_and_pass_on() -> None:
            try:
                await self.stop()
            finally:
                pass_on()

        def schedule() -> None:
            task = loop.create_task(stop_and_pass_on())
            self._signal_tasks.add(task)
            task.add_done_callback(self._signal_tasks.discard)

        loop.call_soon_threadsafe(schedule)

    def _reset_after_fork(self) -> None:
        self._lock = asyncio.Lock()
        self._run = None
