"""The heartbeat logic of one client, free of I/O (the sans-I/O pattern of _core).

A :class:`Heartbeat` keeps one session of a signed-in user alive: it beats at once,
then every interval, with the status the app set; retries transient failures; refreshes
an expired session once; and sends the leave when stopped. What it shares with the
server-side tracker (timings, runs, schedule, state) is :class:`presence_sdk._engine.Engine`.
The shells in :mod:`presence_sdk._sync.client` and :mod:`presence_sdk._async.client`
perform its effects.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from presence_sdk._config import PresenceConfig
from presence_sdk._core import (
    LOGGER,
    Call,
    Effects,
    ErrorCallback,
    PresenceState,
    PresenceStats,
    Refresh,
    RunControl,
    StateCallback,
    StopRequestedError,
    parse_heartbeat_time,
    validate_status,
)
from presence_sdk._engine import Counters, Engine, state_for
from presence_sdk._exceptions import (
    AuthenticationError,
    NotInstalledError,
    PresenceError,
)
from presence_sdk._sessions import to_session_id, validate_device, validate_metadata

__all__ = ["Heartbeat"]

T = TypeVar("T")


@dataclass(slots=True)
class _Counters(Counters):
    beats_sent: int = 0
    beats_failed: int = 0


class Heartbeat(Engine[PresenceConfig]):
    """The heartbeat logic of one client: schedule, retries, state and statistics.

    Thread-safe where the shells need it: :meth:`set_status`, :meth:`request_stop`,
    :meth:`stats` may be called from any thread while a worker drives :meth:`run`, and
    a run that outlived its ``stop()`` may still be finishing while a newer run beats
    (see :meth:`begin_run`). Callbacks go through a :class:`Notifier`.

    Args:
        config: The client configuration.
        on_error: Called with each failed heartbeat's error (after retries).
        on_state_change: Called with ``(old, new)`` on every state change.
        session_id: The id of this client's session (None: a new random uuid).
        device: Optional device/app label of the session (1-64 characters).
        metadata: Optional JSON object attached to the session (at most 1024 bytes).
        clock: Monotonic clock (seconds); tests pass a fake one.
        rng: Random source for jitter and backoff.

    Sessions: each client is one session of its user. It beats with
    ``presence_session_beat`` and leaves with ``presence_session_leave``, so a user's
    other devices stay online when it stops. On a database without the sessions SQL
    (0.1 schema: PGRST202) it falls back to ``presence_heartbeat``/``presence_leave``
    (the user's one implicit session), with one warning; each run probes again.
    """

    _quiet_states = frozenset({PresenceState.NOT_INSTALLED, PresenceState.FAILED})
    _counters: _Counters

    def __init__(
        self,
        config: PresenceConfig,
        *,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
        session_id: uuid.UUID | str | None = None,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.session_id = uuid.uuid4() if session_id is None else to_session_id(session_id)
        self.device = validate_device(device)
        self.metadata = validate_metadata(metadata)
        super().__init__(
            config, on_error=on_error, on_state_change=on_state_change, clock=clock, rng=rng
        )
        self._legacy = False  # this run beats with the 0.1 RPCs (no sessions SQL)
        self._legacy_warned = False
        self._status: str = config.initial_status
        self._beat_due = False  # beat at once: new status, or a superseded run ended
        self._counters = _Counters()
        self._wait_cap_logged = False

    # -- state shared with the API threads -------------------------------------------

    @property
    def status(self) -> str:
        """The status reported by the next heartbeat."""
        return self._status

    def stats(self) -> PresenceStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counters
            return PresenceStats(
                state=self._state,
                status=self._status,
                beats_sent=c.beats_sent,
                beats_failed=c.beats_failed,
                retries=c.retries,
                consecutive_failures=c.consecutive_failures,
                last_success=c.last_success,
                last_error=c.last_error,
                interval=self.interval,
                timeout=self.timeout,
            )

    def set_status(self, status: str) -> bool:
        """Report ``status`` from the next heartbeat on; True if it changed.

        Raises InvalidInputError (before any I/O) for anything but online/away/busy.
        """
        status = validate_status(status)
        with self._lock:
            changed = status != self._status
            self._status = status
            self._beat_due = self._beat_due or changed
        return changed

    def forget_run_after_fork(self) -> bool:
        """In a forked child: end the inherited run quietly (no leave, no callbacks).

        Returns whether a run was active in the parent.
        """
        was_running = self._forget_run_after_fork()
        # The child is another connection: sharing the parent's session id would let
        # either process's leave end the other's presence.
        self.session_id = uuid.uuid4()
        return was_running

    def _reset_for_run(self) -> None:
        self._beat_due = False
        self._legacy = False  # probe the sessions RPCs again

    def _due_again(self) -> None:
        self._beat_due = True

    def _woken(self) -> bool:
        return self._beat_due

    # -- the loop ----------------------------------------------------------------------

    def run(self, control: RunControl) -> Effects[None]:
        """The heartbeat loop of one run: beat now, then every interval, until stopped;
        then the leave. Never raises PresenceError. The shell calls :meth:`end_run`
        afterwards, however the run ended."""
        while not control.stop_requested:
            try:
                beat_at = yield from self._beat(control)
            except StopRequestedError:
                break
            except PresenceError as exc:
                self._record_failure(control, exc)
            else:
                self._record_success(control, beat_at)
                if not self._settings_known and not control.stop_requested:
                    yield from self._load_settings()
            try:
                yield from self._pause(self._next_delay(self._clock()), control, wake=True)
            except StopRequestedError:
                break
        if not control.quiet:
            yield from self.leave(control)

    def beat_once(self) -> Effects[datetime | None]:
        """One heartbeat now, with the retry policy; raises its final error.

        A stopped run still finishing (its ``stop()`` gave up waiting) is superseded
        first, as by :meth:`begin_run`: its leave must not land after this beat.
        """
        control = RunControl()
        with self._lock:
            lingering = self._run
            if lingering is not None and lingering.stop_requested:
                lingering.superseded = True
        try:
            beat_at = yield from self._beat(control)
        except PresenceError as exc:
            self._record_failure(control, exc)
            raise
        self._record_success(control, beat_at)
        return beat_at

    def leave(self, control: RunControl) -> Effects[None]:
        """Send ``presence_leave()`` once, within the stop deadline; never raises.

        Nothing is sent for a superseded run: a newer run is beating, and a leave
        landing after its beats would show the user offline while it runs.
        """
        if not self.config.leave_on_stop:
            return
        with self._lock:
            superseded = control.superseded
            failures = self._counters.consecutive_failures
            last_error = self._counters.last_error
        if superseded:
            LOGGER.debug("presence: no leave from a stopped run: a newer run is beating")
            return
        if failures and isinstance(last_error, AuthenticationError | NotInstalledError):
            LOGGER.debug("presence: no leave sent after %s", type(last_error).__name__)
            return
        remaining = control.stop_deadline - self._clock()
        timeout = max(0.05, min(self.config.request_timeout, remaining))
        try:
            if self._legacy:
                yield Call("presence_leave", {}, timeout)
            else:
                try:
                    params = {"session_id": str(self.session_id)}
                    yield Call("presence_session_leave", params, timeout)
                except NotInstalledError:
                    self._use_legacy("presence_session_leave")
                    remaining = control.stop_deadline - self._clock()
                    timeout = max(0.05, min(self.config.request_timeout, remaining))
                    yield Call("presence_leave", {}, timeout)
        except PresenceError as exc:
            with self._lock:
                self._counters.last_error = exc
            LOGGER.warning(
                "presence: leave failed, the user goes offline after the timeout: %s", exc
            )
            self._report(exc)
        else:
            LOGGER.info("presence: left (session %s ended)", self.session_id)

    # -- one heartbeat -------------------------------------------------------------

    def _beat(self, control: RunControl) -> Effects[datetime]:
        with self._lock:
            status = self._status
            if not control.superseded:
                self._beat_due = False
        if not self._legacy:
            params = {
                "session_id": str(self.session_id),
                "new_status": status,
                "device": self.device,
                "metadata": self.metadata,
            }
            try:
                return (
                    yield from self._attempts(
                        "presence_session_beat", params, control, parse_heartbeat_time
                    )
                )
            except NotInstalledError:
                self._use_legacy("presence_session_beat")
        try:
            return (
                yield from self._attempts(
                    "presence_heartbeat", {"new_status": status}, control, parse_heartbeat_time
                )
            )
        except NotInstalledError:
            self._legacy = False  # nothing is installed: probe the sessions RPCs next time
            raise

    def _use_legacy(self, fn: str) -> None:
        """``fn`` is missing: the database predates sessions; use the 0.1 RPCs."""
        self._legacy = True
        level = logging.DEBUG if self._legacy_warned else logging.WARNING
        self._legacy_warned = True
        LOGGER.log(
            level,
            "presence: %s() is not on the server (a database without the sessions "
            "migration); using presence_heartbeat()/presence_leave(), one presence per "
            "user: stopping any client of the user ends it. Apply the migrations for "
            "per-device sessions",
            fn,
        )

    def _attempts(
        self,
        fn: str,
        params: Mapping[str, Any],
        control: RunControl,
        parse: Callable[[Any], T],
    ) -> Effects[T]:
        """Call ``fn`` and ``parse`` its result with the retry policy (:func:`retry_call`),
        retrying until one interval after the first attempt started."""
        call = Call(fn, params, self.config.request_timeout)
        deadline = self._clock() + self.interval
        return (yield from self._retry(call, parse, control, deadline, refresh=self._refresh))

    def _refresh(self, call: Call, error: AuthenticationError) -> Effects[None]:
        LOGGER.info("presence: %s; refreshing the session once", error)
        try:
            yield Refresh(call.authorization)
        except PresenceError as refresh_error:
            LOGGER.debug("presence: session refresh failed: %s", refresh_error)
            raise error from refresh_error

    def _load_settings(self) -> Effects[bool]:
        loaded = yield from super()._load_settings()
        if loaded:
            LOGGER.debug("presence: interval %.1fs, timeout %.1fs", self.interval, self.timeout)
        return loaded

    # -- bookkeeping ---------------------------------------------------------------

    def _record_success(self, control: RunControl, beat_at: datetime) -> None:
        with self._lock:
            if control.superseded:  # stale: the newer run's beats count
                return
            c = self._counters
            c.beats_sent += 1
            c.consecutive_failures = 0
            c.last_success = beat_at
            self._last_success_at = self._clock()
            self._not_before = -math.inf  # the server accepts beats again: no more waiting
            old = self._move(PresenceState.ONLINE) if self._is_current(control) else None
        if old is not None:
            self._announce(old, PresenceState.ONLINE)

    def _record_failure(self, control: RunControl, error: PresenceError) -> None:
        new = state_for(error)
        with self._lock:
            if control.superseded:
                LOGGER.debug("presence: heartbeat of a stopped run failed: %s", error)
                return
            c = self._counters
            c.beats_failed += 1
            c.consecutive_failures += 1
            c.last_error = error
            capped = self._hold_off(error)
            old = self._move(new) if self._is_current(control) else None
        if capped is not None:
            self._log_capped_wait(*capped)
        if old is not None and old is not new:
            level = logging.WARNING if new is PresenceState.DEGRADED else logging.ERROR
            LOGGER.log(level, "presence: heartbeat failed (%s): %s", new, error)
            self._announce(old, new)
        else:
            LOGGER.debug("presence: heartbeat failed: %s", error)
        self._report(error)

    def _log_capped_wait(self, requested: float, wait: float) -> None:
        level = logging.DEBUG if self._wait_cap_logged else logging.WARNING
        self._wait_cap_logged = True
        LOGGER.log(
            level,
            "presence: the server asked to wait %gs before the next heartbeat (Retry-After); "
            "waiting %.1fs instead, the longest wait that keeps the user online "
            "(timeout %gs, interval %gs)",
            requested,
            wait,
            self.timeout,
            self.interval,
        )
