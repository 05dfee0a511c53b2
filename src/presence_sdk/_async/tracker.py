"""AsyncPresenceTracker: a server's sessions kept alive from an asyncio task.

A thin shell: the logic is :class:`presence_sdk._tracker_core.Tracker`; this module
performs its effects (awaited sends, waits on an ``asyncio.Event``) in a task, like
:class:`~presence_sdk.AsyncPresenceClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from supabase import AsyncClient, AsyncClientOptions

from presence_sdk import _privacy as privacy
from presence_sdk._async._send import send_call
from presence_sdk._config import TrackerConfig
from presence_sdk._core import (
    LOGGER,
    Call,
    Driver,
    Effect,
    Effects,
    ErrorCallback,
    RunControl,
    Sleep,
    StateCallback,
    detached_context,
    holding_callbacks,
)
from presence_sdk._exceptions import ConfigurationError, PresenceError
from presence_sdk._http import OwnedAsyncClient
from presence_sdk._queries import Query, UserId
from presence_sdk._shell import ExitHooks
from presence_sdk._tracker_core import request_effects
from presence_sdk._tracker_shell import TrackerBase

__all__ = ["AsyncPresenceTracker"]

T = TypeVar("T")


@dataclass(slots=True)
class _Run:
    control: RunControl
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class AsyncPresenceTracker(TrackerBase[AsyncClient]):
    """Keeps many users' sessions alive from one server process, in one asyncio task.

    The asyncio twin of :class:`~presence_sdk.PresenceTracker`, over a service-role
    supabase ``AsyncClient``; for ASGI servers (FastAPI, Starlette websockets)::

        async with AsyncPresenceTracker.from_url(URL, SERVICE_ROLE_KEY) as tracker:
            session = tracker.track(user_id)  # on connect
            ...
            tracker.untrack(session)  # on disconnect
        # leaving the block ends every tracked session

    :meth:`track`, :meth:`set_status` and :meth:`untrack` are plain methods (no
    ``await``): they only touch memory, from the event loop or any other thread.
    If the task is cancelled from outside (``asyncio.run()`` cancels what is left when
    the main coroutine returns), it still ends the tracked sessions, within
    ``stop_timeout``. One event loop at a time: starting it in a second loop while it
    runs in a first one raises ConfigurationError. The guarantees of
    :class:`~presence_sdk.PresenceTracker` hold here too.

    Args:
        supabase: A supabase ``AsyncClient`` built with the service role key.
        config: Timings and policies (:class:`~presence_sdk.TrackerConfig`).
        on_error: Called with each failed call's error (after retries) and each
            :class:`~presence_sdk.SessionsRejectedError`, on the event loop's thread.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`.
    """

    def _init_shell(self) -> None:
        self._run: _Run | None = None
        self._stopping: _Run | None = None
        self._signal_tasks: set[asyncio.Task[None]] = set()
        self._hooks = ExitHooks(None, self._stop_then if self.config.handle_sigterm else None)

    @classmethod
    def from_url(
        cls,
        url: str,
        service_role_key: str,
        *,
        config: TrackerConfig | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> AsyncPresenceTracker:
        """Build the service-role supabase ``AsyncClient`` too (see
        ``PresenceTracker.from_url``)."""
        config = config or TrackerConfig()
        http = http_client or OwnedAsyncClient(timeout=config.request_timeout)
        options = AsyncClientOptions(
            httpx_client=http, auto_refresh_token=False, persist_session=False
        )
        return cls._from_parts(
            lambda: AsyncClient(url, service_role_key, options),
            owns_http=http_client is None,
            config=config,
            on_error=on_error,
            on_state_change=on_state_change,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        """Start the tracker task (the first round at once). Idempotent.

        Raises ConfigurationError in a forked child if the supabase client is the app's,
        and while the tracker runs in another event loop that is still open.
        """
        with holding_callbacks():
            self._check_usable()
            if self._running():
                return self
            run = _Run(self._engine.begin_run(), asyncio.get_running_loop())
            run.task = asyncio.create_task(
                self._main(run), name="presence-tracker", context=detached_context()
            )
            self._run = run
            self._hooks.install()
        return self

    async def stop(self) -> None:
        """Stop, ending every tracked session on the server; returns within
        ``config.stop_timeout`` (the task is cancelled after it). Idempotent."""
        with holding_callbacks():
            run, self._run = self._run, None
            first = run is not None
            if run is not None:
                self._hooks.uninstall()
                self._engine.request_stop(run.control)
                self._stopping = run
            else:
                run = self._stopping
            if run is None or run.task is None:
                return
            if run.loop is not asyncio.get_running_loop():
                if run.loop.is_closed():
                    self._engine.end_run(run.control)
                else:
                    run.loop.call_soon_threadsafe(run.wake.set)
                return
            run.wake.set()
        if run.task is asyncio.current_task():
            return
        await asyncio.wait({run.task}, timeout=self._engine.stop_time_left(run.control))
        if not run.task.done() and first:
            LOGGER.warning(
                "presence: tracker stop() gave up waiting after %.1fs (network slow?)",
                self.config.stop_timeout,
            )
            run.task.cancel()
        if not run.task.done():
            await asyncio.wait({run.task})
        if self._stopping is run:
            self._stopping = None

    # -- privacy ---------------------------------------------------------------------

    async def set_invisible(self, user_ids: Iterable[UserId], invisible: bool = True) -> int:
        """Turn invisible mode on (or off) for these users, in one request; returns how
        many changed. See :meth:`PresenceTracker.set_invisible
        <presence_sdk.PresenceTracker.set_invisible>` (the same arguments, answer and
        errors). Any event loop; the tracker need not be running."""
        return await self._request(privacy.set_invisible_for(user_ids, invisible))

    async def close(self) -> None:
        """Stop, and release the connections of the httpx client :meth:`from_url`
        created (a later use opens new ones)."""
        await self.stop()
        if self._owns_http:
            await self._supabase.postgrest.session.aclose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- effects ------------------------------------------------------------------

    def _running(self) -> bool:
        """Whether a run is active; ConfigurationError if it is in another live loop."""
        run = self._run
        if run is None or run.task is None or run.task.done():
            return False
        if run.loop.is_closed():  # its loop ended without finishing it: it never will
            self._run = None
            self._engine.request_stop(run.control)
            self._engine.end_run(run.control)
            return False
        if run.loop is not asyncio.get_running_loop():
            msg = (
                f"this {type(self).__name__} runs in another event loop that is still "
                "open: stop() it there first, or use one tracker per loop"
            )
            raise ConfigurationError(msg)
        return True

    async def _main(self, run: _Run) -> None:
        try:
            await self._drive(self._engine.run(run.control), run.wake)
        except asyncio.CancelledError:
            await self._farewell(run.control)
            raise
        except Exception:  # a bug; never let it reach the app
            LOGGER.exception("presence: tracker task failed")
        finally:
            if self._engine.end_run(run.control):
                self._wake()

    async def _farewell(self, control: RunControl) -> None:
        """Cancelled from outside (not by stop()): still end the sessions, bounded."""
        if control.stop_requested:
            return
        self._engine.request_stop(control)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.stop_timeout):
                await self._drive(self._engine.end_all(control), None)

    async def _request(self, query: Query[T]) -> T:
        self._check_usable()
        return await self._drive(request_effects(query, self.config.request_timeout), None)

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
            return await send_call(self._supabase, effect)
        if not isinstance(effect, Sleep):  # the tracker core yields nothing else
            msg = f"unexpected effect {effect!r}"
            raise TypeError(msg)
        if wake is None:
            await asyncio.sleep(effect.seconds)
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(effect.seconds):
                await wake.wait()
        wake.clear()
        return None

    def _wake(self) -> None:
        run = self._run
        if run is None or run.loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is run.loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            run.wake.set()
        else:
            run.loop.call_soon_threadsafe(run.wake.set)

    def _stop_then(self, pass_on: Callable[[], None]) -> None:
        run = self._run
        if run is None or run.loop.is_closed():
            pass_on()
            return
        loop = run.loop

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
        self._run = None
        self._stopping = None
