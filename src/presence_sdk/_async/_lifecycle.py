"""The lifecycle both async shells share: an asyncio task that drives the engine.

:class:`TaskShell` starts the task, stops it within ``stop_timeout`` (also from
another loop's thread or SIGTERM), still sends the last requests when the task is
cancelled from outside, performs the engine's effects (awaited sends, waits on an
``asyncio.Event``) and forgets the parent's task in a forked child.
:class:`~presence_sdk.AsyncPresenceClient` and
:class:`~presence_sdk.AsyncPresenceTracker` add what they send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from supabase import AsyncClient

from presence_sdk._async._send import send_call
from presence_sdk._core import (
    LOGGER,
    Call,
    Driver,
    Effect,
    Effects,
    RunControl,
    Sleep,
    detached_context,
    holding_callbacks,
)
from presence_sdk._engine import Engine
from presence_sdk._exceptions import ConfigurationError, PresenceError
from presence_sdk._shell import ExitHooks, ShellBase

__all__ = ["Run", "TaskShell"]

T = TypeVar("T")
E = TypeVar("E", bound=Engine[Any])


@dataclass(slots=True)
class Run:
    """One run of the engine, as a task of ``loop``."""

    control: RunControl
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class TaskShell(ShellBase[AsyncClient, E]):
    """Start, stop, effects and fork handling of a shell whose engine runs in a task.

    One event loop at a time: a run in another loop that is still open makes
    :meth:`_running` raise ConfigurationError. Subclasses name the task and its log
    lines, say what a cancelled run still sends (:meth:`_last_words`), and perform
    the effects other than calls and sleeps (:meth:`_perform_other`).
    """

    #: The name of the engine's task.
    _task_name: ClassVar[str]
    #: Logged with the traceback when the task dies of a bug.
    _task_failed: ClassVar[str]
    #: Logged when stop() gives up waiting for the task (``%.1f``: stop_timeout).
    _stop_gave_up: ClassVar[str]
    #: What the app should use one of per loop ("client", "tracker").
    _kind: ClassVar[str]

    def _init_shell(self) -> None:
        self._run: Run | None = None
        self._stopping: Run | None = None  # the run a stop() is waiting for
        self._signal_tasks: set[asyncio.Task[None]] = set()
        handle_sigterm = self._engine.config.handle_sigterm
        self._hooks = ExitHooks(None, self._stop_then if handle_sigterm else None)

    def _section(self) -> AbstractAsyncContextManager[object]:
        """What start() and stop() hold while they change the run (nothing here)."""
        return contextlib.nullcontext()

    # -- lifecycle (the subclasses document start and stop) --------------------------

    async def start(self) -> Self:
        """Start the task. Idempotent."""
        await self._start()
        return self

    async def stop(self) -> None:
        """Stop the task; returns within ``config.stop_timeout``. Idempotent."""
        await self._stop()

    async def _start(self) -> None:
        with holding_callbacks():
            async with self._section():
                self._check_usable()
                if self._running():
                    return
                run = Run(self._engine.begin_run(), asyncio.get_running_loop())
                run.task = asyncio.create_task(
                    self._main(run), name=self._task_name, context=detached_context()
                )
                self._run = run
                self._hooks.install()

    async def _stop(self) -> None:
        with holding_callbacks():
            async with self._section():
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
                if run.loop is not asyncio.get_running_loop():
                    # A run of another loop: nothing here can wait for it.
                    if run.loop.is_closed():
                        self._engine.end_run(run.control)
                    else:
                        run.loop.call_soon_threadsafe(run.wake.set)
                    return
                run.wake.set()
        # The wait is outside the lock: the task's last callbacks may use the shell.
        if run.task is asyncio.current_task():
            return
        await asyncio.wait({run.task}, timeout=self._engine.stop_time_left(run.control))
        if not run.task.done() and first:
            LOGGER.warning(self._stop_gave_up, self._engine.config.stop_timeout)
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
                f"open: stop() it there first, or use one {self._kind} per loop"
            )
            raise ConfigurationError(msg)
        return True

    async def _main(self, run: Run) -> None:
        try:
            await self._drive(self._engine.run(run.control), run.wake)
        except asyncio.CancelledError:
            await self._farewell(run.control)
            raise
        except Exception:  # a bug; never let it reach the app
            LOGGER.exception(self._task_failed)
        finally:
            if self._engine.end_run(run.control):
                self._wake()  # superseded: the current run beats again now

    async def _farewell(self, control: RunControl) -> None:
        """Cancelled from outside (not by stop()): still send the last requests (the
        leave, the ends), bounded by ``stop_timeout``."""
        if control.stop_requested:
            return
        self._engine.request_stop(control)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._engine.config.stop_timeout):
                await self._drive(self._last_words(control), None)

    def _last_words(self, control: RunControl) -> Effects[None]:
        """What a run cancelled from outside still sends."""
        raise NotImplementedError

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
        if not isinstance(effect, Sleep):
            return await self._perform_other(effect)
        if wake is None:
            await asyncio.sleep(effect.seconds)
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(effect.seconds):
                await wake.wait()
        wake.clear()
        return None

    async def _perform_other(self, effect: Effect) -> Any:
        """Perform an effect other than a call or a sleep (the tracker has none)."""
        msg = f"unexpected effect {effect!r}"
        raise TypeError(msg)

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
