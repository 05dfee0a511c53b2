"""What the heartbeat and tracker cores share, free of I/O: timings, runs and state.

:class:`Engine` is the base of :class:`presence_sdk._heartbeat.Heartbeat` (one client's
session) and :class:`presence_sdk._tracker_core.Tracker` (a server's sessions). It holds
what both do the same way: the server's settings (interval and timeout), the run that
is current and how runs begin, stop, end and are forgotten in a forked child, the
pause between effects, the schedule with its idle backoff, the server-imposed wait
(``Retry-After``, capped so the sessions stay online), the retry policy, and the state
with its announcements. The subclasses add what they send and what they count.

Like the rest of the core it performs no I/O: the generators yield effects
(:class:`~presence_sdk._core.Call`, :class:`~presence_sdk._core.Sleep`) for the shells.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from presence_sdk._config import DEFAULT_TIMEOUT, PresenceConfig, TrackerConfig, check_timing
from presence_sdk._core import (
    LOGGER,
    Call,
    Effects,
    ErrorCallback,
    Notifier,
    PresenceState,
    RunControl,
    Sleep,
    StateCallback,
    StopRequestedError,
    WaitFullJitter,
    WaitRetryAfter,
    clamp_server_timing,
    retry_call,
)
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotInstalledError,
    PresenceError,
    RateLimitedError,
    TransientError,
)

__all__ = ["Counters", "Engine", "state_for"]

T = TypeVar("T")
ConfigT = TypeVar("ConfigT", PresenceConfig, TrackerConfig)


@dataclass(slots=True)
class Counters:
    """The counters both engines keep (each subclass adds its own)."""

    retries: int = 0
    consecutive_failures: int = 0
    last_success: datetime | None = None
    last_error: PresenceError | None = None


def state_for(error: PresenceError) -> PresenceState:
    """The state a request that failed with ``error`` (after its retries) leads to."""
    if isinstance(error, AuthenticationError):
        return PresenceState.UNAUTHENTICATED
    if isinstance(error, NotInstalledError):
        return PresenceState.NOT_INSTALLED
    if isinstance(error, TransientError):
        return PresenceState.DEGRADED
    return PresenceState.FAILED


class Engine(Generic[ConfigT]):
    """Timings, runs, schedule and state of a heartbeat engine.

    Subclasses set :attr:`_counters`, and define :meth:`_woken` (whether a waiting
    run should act at once), :meth:`_reset_for_run` and :meth:`_due_again`.

    Args:
        config: The client or tracker configuration.
        on_error: Called with each failed request's error (after retries).
        on_state_change: Called with ``(old, new)`` on every state change.
        clock: Monotonic clock (seconds); tests pass a fake one.
        rng: Random source for jitter and backoff.
    """

    #: States in which the schedule backs off (nothing the server would accept).
    _quiet_states: ClassVar[frozenset[PresenceState]]
    #: The debug log line of a state change (old, new).
    _state_log: ClassVar[str] = "presence: state %s -> %s"
    _counters: Counters

    def __init__(
        self,
        config: ConfigT,
        *,
        on_error: ErrorCallback | None,
        on_state_change: StateCallback | None,
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        self.config: ConfigT = config
        self._on_error = on_error
        self._on_state_change = on_state_change
        self._events = Notifier()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = threading.Lock()
        self._state = PresenceState.STOPPED
        self._server_interval: float | None = None
        self._server_timeout: float | None = None
        self._settings_known = config.interval is not None and config.timeout is not None
        self._not_before = -math.inf  # server-imposed wait (Retry-After), capped
        self._last_success_at: float | None = None  # clock() of the last accepted beat
        self._run: RunControl | None = None
        self._wait = WaitRetryAfter(
            WaitFullJitter(config.backoff_initial, config.backoff_max, self._rng)
        )

    # -- timings -------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """The interval in use, in seconds."""
        return self.config.effective_interval(self._server_interval)

    @property
    def timeout(self) -> float:
        """The timeout the server applies, in seconds."""
        if self.config.timeout is not None:
            return float(self.config.timeout)
        return self._server_timeout or DEFAULT_TIMEOUT

    @property
    def state(self) -> PresenceState:
        """The current state."""
        return self._state

    # -- runs ----------------------------------------------------------------------------

    def begin_run(self) -> RunControl:
        """A new run: state STARTING; the first request is due at once.

        A previous run that is still alive (its ``stop()`` returned after
        ``stop_timeout`` while a request hung) is *superseded*: it stops waiting,
        records no state and sends nothing at its end, so it cannot undo this run.
        What it had already sent is overwritten when it ends (:meth:`end_run`).
        """
        control = RunControl()
        with self._lock:
            previous, self._run = self._run, control
            if previous is not None:
                previous.superseded = previous.stop_requested = True
            self._not_before = -math.inf
            self._reset_for_run()
            old = self._move(PresenceState.STARTING)
        self._announce(old, PresenceState.STARTING)
        return control

    def request_stop(self, control: RunControl) -> None:
        """Ask ``control``'s run to stop; its last requests (the leave, the ends) must
        go out within ``stop_timeout``."""
        with self._lock:
            if control.stop_requested:
                return
            control.stop_deadline = self._clock() + self.config.stop_timeout
            control.stop_requested = True
            old = self._move(PresenceState.STOPPING) if self._run is control else None
        if old is not None:
            self._announce(old, PresenceState.STOPPING)

    def stop_time_left(self, control: RunControl) -> float:
        """Seconds until ``control``'s stop deadline (0 when passed or not stopping)."""
        return max(0.0, control.stop_deadline - self._clock()) if control.stop_requested else 0.0

    def end_run(self, control: RunControl) -> bool:
        """``control``'s run is over (whatever happened): state STOPPED if it was current.

        Returns True when the shell must wake the current run: ``control`` was
        superseded while one of its requests could still be in flight (a beat with a
        stale status, a leave or ends sent just before the newer run began), and the
        server may have applied it after the current run's last beat. So the current
        run beats again at once: whatever the old run sent, the newest beat lands
        last. (A request the old run gave up on at its timeout may in theory be
        applied later still; the next regular beat then repairs it.)
        """
        with self._lock:
            if self._run is not control:
                current = self._run
                if control.superseded and current is not None and not current.stop_requested:
                    self._due_again()
                    return True
                return False
            self._run = None
            old = self._move(PresenceState.STOPPED)
        self._announce(old, PresenceState.STOPPED)
        return False

    def run(self, control: RunControl) -> Effects[None]:
        """The loop of one run, until stopped (the shell then calls :meth:`end_run`)."""
        raise NotImplementedError

    def _forget_run_after_fork(self) -> bool:
        """In a forked child: end the inherited run quietly (no requests, no callbacks)
        with new locks; returns whether a run was active in the parent."""
        self._lock = threading.Lock()
        self._events.reset_after_fork()
        control, self._run = self._run, None
        if control is not None:
            control.quiet = control.stop_requested = True
        self._state = PresenceState.STOPPED
        return control is not None

    def _reset_for_run(self) -> None:
        """What a new run starts without (the caller holds the lock)."""
        raise NotImplementedError

    def _due_again(self) -> None:
        """Make the current run beat at once (the caller holds the lock)."""
        raise NotImplementedError

    def _woken(self) -> bool:
        """Whether a run waiting for its next beat must act at once."""
        raise NotImplementedError

    def _is_current(self, control: RunControl) -> bool:
        return self._run is control and not control.stop_requested

    # -- waiting and retrying ------------------------------------------------------------

    def _pause(self, seconds: float, control: RunControl, *, wake: bool) -> Effects[None]:
        """Wait ``seconds``; stop early for stop() (raises StopRequestedError) or, with
        ``wake``, for work due at once (:meth:`_woken`)."""
        deadline = self._clock() + seconds
        while True:
            if control.stop_requested:
                raise StopRequestedError
            if wake and self._woken():
                return
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            yield Sleep(remaining)

    def _next_delay(self, started: float) -> float:
        """Seconds from ``started`` to the next beat: the interval with jitter, backed
        off while quiet (nothing the server would accept), and no sooner than the
        server asked (``Retry-After``)."""
        interval = self.interval
        jitter = self.config.jitter
        factor = self._rng.uniform(1.0 - jitter, 1.0 + jitter) if jitter else 1.0
        if self._state in self._quiet_states:
            failures = max(1, self._counters.consecutive_failures)
            base = min(self.config.idle_backoff_max, interval * 2.0 ** min(failures - 1, 30))
            delay = max(interval, base) * factor
        else:
            delay = interval * factor
        return max(delay, self._not_before - started)

    def _retry(
        self,
        call: Call,
        parse: Callable[[Any], T],
        control: RunControl,
        deadline: float,
        refresh: Callable[[Call, AuthenticationError], Effects[None]] | None = None,
    ) -> Effects[T]:
        """Send ``call`` and ``parse`` its reply with the retry policy
        (:func:`~presence_sdk._core.retry_call`), retrying until ``deadline``."""
        return (
            yield from retry_call(
                call,
                parse,
                clock=self._clock,
                wait=self._wait,
                max_attempts=self.config.max_attempts,
                deadline=deadline,
                control=control,
                pause=lambda seconds: self._pause(seconds, control, wake=False),
                on_retry=self._count_retry,
                refresh=refresh,
            )
        )

    def _count_retry(self) -> None:
        with self._lock:
            self._counters.retries += 1

    def _hold_off(self, error: PresenceError) -> tuple[float, float] | None:
        """After a failure: honour the server's ``Retry-After`` (a 429), capped so the
        sessions stay online. Returns (asked, waiting) when the wait was cut short.
        The caller holds the lock."""
        if not isinstance(error, RateLimitedError) or error.retry_after is None:
            return None
        now = self._clock()
        wait = min(error.retry_after, self._server_wait_cap(now))
        self._not_before = now + wait
        return (error.retry_after, wait) if wait < error.retry_after else None

    def _server_wait_cap(self, now: float) -> float:
        """The longest server-imposed wait (``Retry-After``) that keeps the user online.

        The user is online until ``timeout`` after the last accepted beat; the next
        beat must start one ``interval`` before that, which leaves it room for its
        retries. Counted from now when there was no beat yet or the user is already
        offline. The caller holds the lock.
        """
        timeout, interval = self.timeout, self.interval
        last = self._last_success_at
        base = last if last is not None and last + timeout > now else now
        return max(0.0, base + timeout - interval - now)

    # -- server settings -----------------------------------------------------------------

    def _load_settings(self) -> Effects[bool]:
        """Read ``presence_settings()`` once; True when its timings are in use now."""
        try:
            settings = yield Call("presence_settings", {}, self.config.request_timeout)
            raw_interval = settings["heartbeat_interval_seconds"]
            raw_timeout = settings["timeout_seconds"]
        except PresenceError as exc:
            LOGGER.debug("presence: could not read presence_settings(): %s", exc)
            return False
        except (KeyError, TypeError, IndexError):
            LOGGER.warning("presence: presence_settings() returned %r; using defaults", settings)
            self._settings_known = True
            return False
        interval, timeout, problem = clamp_server_timing(raw_interval, raw_timeout)
        if problem is not None:  # read once per engine, so logged once
            LOGGER.warning("presence: %s", problem)
        with self._lock:
            self._server_interval, self._server_timeout = interval, timeout
            self._settings_known = True
        try:
            check_timing(self.interval, self.timeout, self.config.jitter)
        except ConfigurationError as exc:
            LOGGER.warning("presence: %s", exc)
        return True

    # -- state ---------------------------------------------------------------------------

    def _move(self, new: PresenceState) -> PresenceState:
        """Set the state (the caller holds the lock, so counters and state agree)."""
        old, self._state = self._state, new
        return old

    def _announce(self, old: PresenceState, new: PresenceState) -> None:
        """Log and report a state change (through the notifier: never under a lock)."""
        if old is new:
            return
        LOGGER.debug(self._state_log, old, new)
        self._events.post("on_state_change", self._on_state_change, old, new)

    def _report(self, error: PresenceError) -> None:
        """Hand ``error`` to ``on_error`` (through the notifier: never under a lock)."""
        self._events.post("on_error", self._on_error, error)
