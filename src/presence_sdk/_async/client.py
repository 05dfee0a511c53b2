"""AsyncPresenceClient: heartbeats from an asyncio task, over a supabase ``AsyncClient``.

A thin shell: the logic is :class:`presence_sdk._heartbeat.Heartbeat`; this module only
performs its effects (awaited sends, waits on an ``asyncio.Event``) in a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from supabase import AsyncClient, AsyncClientOptions

from presence_sdk import _events as events
from presence_sdk import _privacy as privacy
from presence_sdk import _queries as queries
from presence_sdk._async._send import send_call
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
    detached_context,
    holding_callbacks,
    query_effects,
)
from presence_sdk._errors import translate
from presence_sdk._events import EventPage, OnlineDay, SessionRecord
from presence_sdk._exceptions import ConfigurationError, PresenceError
from presence_sdk._http import OwnedAsyncClient
from presence_sdk._models import OnlinePage, Presence, StatusCounts
from presence_sdk._shell import ClientBase, ExitHooks, client_options
from presence_sdk._watch import DEFAULT_POLL_INTERVAL

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
    :meth:`set_status` may also be called from other threads. With
    ``filterwarnings = error`` build the supabase client with
    ``AsyncClientOptions(httpx_client=httpx.AsyncClient())``.

    Event loops: one at a time. After a loop ended (e.g. a second ``asyncio.run()``),
    the client works in the next one; a client built by :meth:`from_url` then opens
    new connections there (an ``httpx.AsyncClient`` the app passes in is the app's to
    keep per loop). Using it from a second loop while a run or a call is still active
    in the first raises ConfigurationError.

    The guarantees of :class:`~presence_sdk.PresenceClient` hold here too (whole
    requests bounded by ``request_timeout``, callbacks outside locks, no leave from a
    superseded run, fork rules).

    Args:
        supabase: The app's supabase ``AsyncClient``.
        config: Timings and policies (:class:`~presence_sdk.PresenceConfig`).
        on_error: Called with the error of each failed heartbeat (after retries) or
            leave. Exceptions it raises are logged. It runs on the event loop's
            thread: it may call the synchronous methods (``set_status``, ``stats``) and
            schedule the others (``asyncio.create_task(presence.stop())``).
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`.
            Exceptions it raises are logged; it may use the client as ``on_error``.
        refresh_token: Used once when the token expires and the supabase client has
            no stored session (see :meth:`from_url`).
        session_id: This client's presence session id (default: a new random uuid;
            see ``PresenceClient``). Exposed as :attr:`session_id`.
        device: Optional device/app label stored with the session (1-64 characters).
        metadata: Optional JSON object stored with the session (at most 1024 bytes).
    """

    def _init_shell(self) -> None:
        # asyncio.Lock belongs to the loop it is first contended in: one per loop,
        # made lazily (_lock_here), so a second event loop gets its own.
        self._lock_guard = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._run: _Run | None = None
        self._stopping: _Run | None = None  # the run a stop() is waiting for
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
        session_id: uuid.UUID | str | None = None,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncPresenceClient:
        """Build the supabase ``AsyncClient`` too (see ``PresenceClient.from_url``)."""
        config = config or PresenceConfig()
        http = http_client or OwnedAsyncClient(timeout=config.request_timeout)
        options = client_options(AsyncClientOptions(httpx_client=http), access_token)
        return cls._from_parts(
            lambda: AsyncClient(url, key, options),
            owns_http=http_client is None,
            config=config,
            refresh_token=refresh_token,
            on_error=on_error,
            on_state_change=on_state_change,
            session_id=session_id,
            device=device,
            metadata=metadata,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        """Start the heartbeat task (first beat at once). Idempotent.

        Raises ConfigurationError in a forked child if the supabase client is the
        app's, and while a run is active in another event loop.
        """
        with holding_callbacks():
            async with self._lock_here():
                self._check_usable()
                if self._running():
                    return self
                run = _Run(self._engine.begin_run())
                run.task = asyncio.create_task(
                    self._main(run), name="presence-heartbeat", context=detached_context()
                )
                self._run = run
                self._loop = asyncio.get_running_loop()
                self._hooks.install()
        return self

    async def stop(self) -> None:
        """Stop beating and send the leave; returns within ``config.stop_timeout``.

        Idempotent. If the network hangs, the task is cancelled after the bound.
        """
        with holding_callbacks():
            async with self._lock_here():
                run, self._run = self._run, None
                first = run is not None
                if run is not None:
                    self._hooks.uninstall()
                    self._engine.request_stop(run.control)
                    self._stopping = run
                else:  # another stop() is under way (a signal, a task): wait too
                    run = self._stopping
                if run is None or run.task is None:
                    return
                task_loop = run.task.get_loop()
                if task_loop is not asyncio.get_running_loop():
                    # A run of another loop: nothing here can wait for it.
                    if task_loop.is_closed():
                        self._engine.end_run(run.control)
                    else:
                        task_loop.call_soon_threadsafe(run.wake.set)
                    return
                run.wake.set()
        # The wait is outside the lock: the task's last callbacks may use the client.
        if run.task is asyncio.current_task():
            return
        await asyncio.wait({run.task}, timeout=self._engine.stop_time_left(run.control))
        if not run.task.done() and first:
            LOGGER.warning(
                "presence: stop() gave up waiting after %.1fs (network slow?)",
                self.config.stop_timeout,
            )
            run.task.cancel()
        if not run.task.done():
            await asyncio.wait({run.task})
        if self._stopping is run:
            self._stopping = None

    async def close(self) -> None:
        """Stop, and release the connections of the httpx client :meth:`from_url`
        created (a later use opens new ones)."""
        await self.stop()
        if self._owns_http:
            await self._supabase.postgrest.session.aclose()

    async def beat(self) -> datetime | None:
        """Send one heartbeat now and return the server's time of it.

        See ``PresenceClient.beat``: raises the error of a failed heartbeat, and
        RuntimeError while the heartbeat task runs.
        """
        with holding_callbacks():
            async with self._lock_here():
                self._check_usable()
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
        await self.close()

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

    # -- privacy (the signed-in user's own settings) -----------------------------------

    async def set_invisible(self, invisible: bool = True) -> privacy.PrivacySettings:
        """Turn invisible mode on or off (see ``PresenceClient.set_invisible``)."""
        return await self._query(privacy.set_invisible(invisible))

    async def set_visibility(
        self,
        *,
        presence: privacy.Visibility | None = None,
        last_seen: privacy.Visibility | None = None,
    ) -> privacy.PrivacySettings:
        """Who may see presence and last seen (see ``PresenceClient.set_visibility``)."""
        return await self._query(privacy.set_visibility(presence=presence, last_seen=last_seen))

    async def privacy(self) -> privacy.PrivacySettings:
        """This user's privacy settings (see ``PresenceClient.privacy``)."""
        return await self._query(privacy.my_privacy())

    # -- effects ------------------------------------------------------------------

    def _lock_here(self) -> asyncio.Lock:
        """The client's lock for the running event loop (made on first use there)."""
        loop = asyncio.get_running_loop()
        with self._lock_guard:
            lock, owner = self._lock, self._lock_loop
            other = owner() if owner is not None else None
            if lock is None or other is not loop:
                if lock is not None and lock.locked() and other and not other.is_closed():
                    msg = (
                        f"this {type(self).__name__} is in use in another event loop "
                        "right now; use one client per loop, or finish in the first "
                        "loop before using it in the next"
                    )
                    raise ConfigurationError(msg)
                lock = self._lock = asyncio.Lock()
                self._lock_loop = weakref.ref(loop)
            return lock

    def _running(self) -> bool:
        """Whether a run is active; ConfigurationError if it is in another live loop."""
        run = self._run
        if run is None or run.task is None or run.task.done():
            return False
        task_loop = run.task.get_loop()
        if task_loop.is_closed():  # its loop ended without finishing it: it never will
            self._run = None
            self._engine.request_stop(run.control)
            self._engine.end_run(run.control)
            return False
        if task_loop is not asyncio.get_running_loop():
            msg = (
                f"this {type(self).__name__} runs in another event loop that is still "
                "open: stop() it there first, or use one client per loop"
            )
            raise ConfigurationError(msg)
        return True

    async def _query(self, query: queries.Query[T]) -> T:
        self._check_usable()
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
            if self._engine.end_run(run.control):
                self._wake()  # superseded: the current run beats again now

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
        return await send_call(self._supabase, call)

    async def _auth(self, call: AuthCall) -> Any:
        try:
            async with asyncio.timeout(self.config.request_timeout):
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
        self._lock_guard = threading.Lock()
        self._lock = None
        self._lock_loop = None
        self._run = None
        self._stopping = None
