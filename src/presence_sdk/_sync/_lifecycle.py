"""The lifecycle both sync shells share: a daemon thread that drives the engine.

:class:`ThreadShell` starts the thread, stops it within ``stop_timeout`` (from any
thread, a callback, atexit or SIGTERM), performs the engine's effects (blocking sends
under a total deadline, waits on a ``threading.Event``) and forgets the parent's
thread in a forked child. :class:`~presence_sdk.PresenceClient` and
:class:`~presence_sdk.PresenceTracker` add what they send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from supabase import Client

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
from presence_sdk._exceptions import PresenceError
from presence_sdk._shell import ExitHooks, ShellBase
from presence_sdk._sync._send import send_call

__all__ = ["Run", "ThreadShell"]

T = TypeVar("T")
E = TypeVar("E", bound=Engine[Any])


@dataclass(slots=True)
class Run:
    """One run of the engine on its thread."""

    control: RunControl
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class ThreadShell(ShellBase[Client, E]):
    """Start, stop, effects and fork handling of a shell whose engine runs on a thread.

    Subclasses name the thread and its log lines, and perform the effects other than
    :class:`~presence_sdk._core.Call` and :class:`~presence_sdk._core.Sleep` (see
    :meth:`_perform_other`).
    """

    #: The name of the engine's thread.
    _thread_name: ClassVar[str]
    #: Logged with the traceback when the thread dies of a bug.
    _thread_failed: ClassVar[str]
    #: Logged when stop() gives up waiting for the thread (``%.1f``: stop_timeout).
    _stop_gave_up: ClassVar[str]

    def _init_shell(self) -> None:
        config = self._engine.config
        self._lock = threading.RLock()
        self._run: Run | None = None
        self._stopping: Run | None = None  # the run a stop() is waiting for
        self._hooks = ExitHooks(
            self.stop if config.stop_at_exit else None,
            self._stop_then if config.handle_sigterm else None,
        )

    # -- lifecycle (the subclasses document start and stop) --------------------------

    def start(self) -> Self:
        """Start the thread. Idempotent, thread-safe."""
        self._start()
        return self

    def stop(self) -> None:
        """Stop the thread; returns within ``config.stop_timeout``. Idempotent."""
        self._stop()

    def _start(self) -> None:
        with holding_callbacks(), self._lock:
            self._check_usable()
            if self._running():
                return
            run = Run(self._engine.begin_run())
            run.thread = threading.Thread(
                target=detached_context().run,
                args=(self._main, run),
                name=self._thread_name,
                daemon=True,
            )
            self._run = run
            run.thread.start()
            self._hooks.install()

    def _stop(self) -> None:
        with holding_callbacks(), self._lock:
            run, self._run = self._run, None
            first = run is not None
            if run is not None:
                self._hooks.uninstall()
                self._engine.request_stop(run.control)
                run.wake.set()
                self._stopping = run
            else:  # another stop() is under way (a signal handler, a thread): wait too
                run = self._stopping
            if run is None or run.thread is None:
                return
        # The wait is outside the lock: the thread's last callbacks may call any method.
        if run.thread is threading.current_thread():
            return  # stop() from a callback on the engine's thread
        run.thread.join(self._engine.stop_time_left(run.control))
        if not run.thread.is_alive():
            with self._lock:
                if self._stopping is run:
                    self._stopping = None
        elif first:
            LOGGER.warning(self._stop_gave_up, self._engine.config.stop_timeout)

    def close(self) -> None:
        """Stop, and release the connections of the httpx client :meth:`from_url`
        created (a later use opens new ones)."""
        self.stop()
        if self._owns_http:
            self._supabase.postgrest.session.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- effects ------------------------------------------------------------------

    def _running(self) -> bool:
        run = self._run
        return run is not None and run.thread is not None and run.thread.is_alive()

    def _main(self, run: Run) -> None:
        try:
            self._drive(self._engine.run(run.control), run.wake)
        except BaseException:  # a bug; never let it reach the app's excepthook
            LOGGER.exception(self._thread_failed)
        finally:
            if self._engine.end_run(run.control):
                self._wake()  # superseded: the current run beats again now

    def _drive(self, effects: Effects[T], wake: threading.Event | None) -> T:
        driver = Driver(effects)
        try:
            for effect in driver:
                try:
                    driver.reply(self._perform(effect, wake))
                except PresenceError as exc:
                    driver.fail(exc)
        finally:
            driver.close()
        return driver.result

    def _perform(self, effect: Effect, wake: threading.Event | None) -> Any:
        if isinstance(effect, Call):
            return send_call(self._supabase, effect)
        if not isinstance(effect, Sleep):
            return self._perform_other(effect)
        if wake is None:
            time.sleep(effect.seconds)
        else:
            wake.wait(effect.seconds)
            wake.clear()
        return None

    def _perform_other(self, effect: Effect) -> Any:
        """Perform an effect other than a call or a sleep (the tracker has none)."""
        msg = f"unexpected effect {effect!r}"
        raise TypeError(msg)

    def _wake(self) -> None:
        run = self._run
        if run is not None:
            run.wake.set()

    def _stop_then(self, pass_on: Callable[[], None]) -> None:
        self.stop()
        pass_on()

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()
        self._run = None
        self._stopping = None
