"""AsyncPresenceClient: heartbeats from an asyncio task, over a supabase ``AsyncClient``.

A thin shell: the logic is :class:`presence_sdk._heartbeat.Heartbeat`; the task, its
start and stop and the effects both async shells perform are
:class:`presence_sdk._async._lifecycle.TaskShell`; this module adds the per-loop lock,
the session refresh and the presence queries.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Self, TypeVar

import httpx
from supabase import AsyncClient, AsyncClientOptions

from presence_sdk import _events as events
from presence_sdk import _privacy as privacy
from presence_sdk import _queries as queries
from presence_sdk._async._lifecycle import TaskShell
from presence_sdk._async.watcher import AsyncPresenceWatcher
from presence_sdk._config import PresenceConfig
from presence_sdk._core import (
    AuthCall,
    Effect,
    Effects,
    ErrorCallback,
    Refresh,
    RunControl,
    StateCallback,
    holding_callbacks,
    query_effects,
)
from presence_sdk._errors import translate
from presence_sdk._events import EventPage, OnlineDay, SessionRecord
from presence_sdk._exceptions import ConfigurationError
from presence_sdk._heartbeat import Heartbeat
from presence_sdk._http import OwnedAsyncClient
from presence_sdk._models import OnlinePage, Presence, StatusCounts
from presence_sdk._shell import ClientBase, client_options
from presence_sdk._watch import DEFAULT_POLL_INTERVAL

__all__ = ["AsyncPresenceClient"]

T = TypeVar("T")


class AsyncPresenceClient(TaskShell[Heartbeat], ClientBase[AsyncClient]):
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

    _task_name = "presence-heartbeat"
    _task_failed = "presence: heartbeat task failed"
    _stop_gave_up = "presence: stop() gave up waiting after %.1fs (network slow?)"
    _kind = "client"

    def _init_shell(self) -> None:
        super()._init_shell()
        # asyncio.Lock belongs to the loop it is first contended in: one per loop,
        # made lazily (_lock_here), so a second event loop gets its own.
        self._lock_guard = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

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
        await self._start()
        return self

    async def stop(self) -> None:
        """Stop beating and send the leave; returns within ``config.stop_timeout``.

        Idempotent. If the network hangs, the task is cancelled after the bound.
        """
        await self._stop()

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

    async def _query(self, query: queries.Query[T]) -> T:
        self._check_usable()
        return await self._drive(query_effects(query, self.config.request_timeout), None)

    def _section(self) -> asyncio.Lock:
        return self._lock_here()

    def _last_words(self, control: RunControl) -> Effects[None]:
        return self._engine.leave(control)

    async def _perform_other(self, effect: Effect) -> Any:
        if isinstance(effect, Refresh):
            return await self._drive(self._refresh_effects(effect), None)
        if isinstance(effect, AuthCall):
            return await self._auth(effect)
        return await super()._perform_other(effect)

    async def _auth(self, call: AuthCall) -> Any:
        try:
            async with asyncio.timeout(self.config.request_timeout):
                return await getattr(self._supabase.auth, call.method)(*call.args)
        except Exception as exc:
            raise translate(exc) from exc

    def _reset_after_fork(self) -> None:
        super()._reset_after_fork()
        self._lock_guard = threading.Lock()
        self._lock = None
        self._lock_loop = None
