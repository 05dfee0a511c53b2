"""Configuration of the heartbeat clients: one frozen, validated object.

Every default is documented once, on :class:`PresenceConfig`. Invalid values raise
:class:`~presence_sdk.ConfigurationError` (also a ``ValueError``) when the object is
built, before any I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from presence_sdk._exceptions import ConfigurationError

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_BATCH_SIZE",
    "ActiveStatus",
    "PresenceConfig",
    "TrackerConfig",
]

#: A status a client can report while it runs (``offline`` is what ``stop()`` sends).
ActiveStatus = Literal["online", "away", "busy"]

#: The statuses :meth:`PresenceClient.set_status` accepts.
ACTIVE_STATUSES: Final[frozenset[str]] = frozenset({"online", "away", "busy"})

#: Heartbeat interval used until the server's ``presence_settings()`` have been read.
DEFAULT_INTERVAL: Final = 15.0

#: Presence timeout assumed until the server's ``presence_settings()`` have been read.
DEFAULT_TIMEOUT: Final = 45.0

#: Sessions per ``presence_track_beat``/``presence_track_end`` call (see TrackerConfig).
DEFAULT_BATCH_SIZE: Final = 1000

#: Most sessions the SQL accepts in one batch call (``presence_private.max_batch()``).
MAX_BATCH_SIZE: Final = 10_000


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"{name} must be a positive number of seconds, not {value!r}"
        raise ConfigurationError(msg)


@dataclass(frozen=True, kw_only=True, slots=True)
class PresenceConfig:
    """How a :class:`~presence_sdk.PresenceClient` / ``AsyncPresenceClient`` behaves.

    Attributes:
        interval: Seconds between heartbeats. None (default): the server's
            ``heartbeat_interval_seconds`` from ``presence_settings()`` (15 s as shipped).
        timeout: Seconds after which the server considers a silent user offline. None
            (default): the server's ``timeout_seconds`` (45 s as shipped). Used to
            check the interval (a heartbeat must arrive well within the timeout) and to
            cap a server's ``Retry-After`` so that the user stays online.
        jitter: Each wait between heartbeats is ``interval`` times a random factor in
            ``[1 - jitter, 1 + jitter]`` so that many clients do not beat in lockstep.
            From 0 to 0.5; default 0.1.
        max_attempts: Attempts per heartbeat for transient failures (network errors,
            timeouts, HTTP 5xx and 429); 1 disables retries. Default 4.
        backoff_initial: Upper bound of the first retry delay, in seconds; each retry
            doubles it (exponential backoff with full jitter: the delay is uniform in
            ``[0, bound]``). Default 0.5.
        backoff_max: Cap of one retry delay, in seconds. Default 5. Retries of one
            heartbeat never run past the interval: the next heartbeat takes over.
        idle_backoff_max: While the server refuses heartbeats for a reason retries cannot
            fix (presence SQL missing, a rejected request), the client tries again after
            ``interval``, doubling up to this cap, in seconds. Default 300.
        request_timeout: Total time one HTTP request may take, in seconds, from
            connecting to reading the last byte of the answer (in both clients; a
            request over it is aborted and counts as a transient failure). Default 5.
        stop_timeout: Upper bound, in seconds, of how long ``stop()`` waits for the
            heartbeat in flight and the leave; ``stop()`` returns after it even when
            the network hangs. Default 2.
        leave_on_stop: Send ``presence_leave()`` (status offline now) on ``stop()``.
            Default True; with False the user goes offline after the timeout.
        initial_status: The status reported from ``start()`` on. Default ``"online"``.
        stop_at_exit: ``PresenceClient`` only: stop (and so leave) from an ``atexit``
            hook when the interpreter exits. Default False. (An ``AsyncPresenceClient``
            leaves when its task is cancelled, as ``asyncio.run()`` does on exit.)
        handle_sigterm: Stop (and leave) on SIGTERM, then pass the signal on to the
            handler that was installed before (or the default action, which ends the
            process). Default False. Needs ``start()`` on the main thread.
    """

    interval: float | None = None
    timeout: float | None = None
    jitter: float = 0.1
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 5.0
    idle_backoff_max: float = 300.0
    request_timeout: float = 5.0
    stop_timeout: float = 2.0
    leave_on_stop: bool = True
    initial_status: ActiveStatus = "online"
    stop_at_exit: bool = False
    handle_sigterm: bool = False

    def __post_init__(self) -> None:
        _positive("interval", self.interval, allow_none=True)
        _positive("timeout", self.timeout, allow_none=True)
        for name in ("backoff_initial", "backoff_max", "idle_backoff_max"):
            _positive(name, getattr(self, name))
        for name in ("request_timeout", "stop_timeout"):
            _positive(name, getattr(self, name))
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 0.5
        ):
            msg = f"jitter must be a fraction from 0 to 0.5, not {self.jitter!r}"
            raise ConfigurationError(msg)
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            msg = f"max_attempts must be an integer >= 1, not {self.max_attempts!r}"
            raise ConfigurationError(msg)
        if self.backoff_initial > self.backoff_max:
            msg = (
                f"backoff_initial ({self.backoff_initial}) must not exceed "
                f"backoff_max ({self.backoff_max})"
            )
            raise ConfigurationError(msg)
        if self.initial_status not in ACTIVE_STATUSES:
            msg = (
                f"initial_status must be one of {sorted(ACTIVE_STATUSES)}, "
                f"not {self.initial_status!r}"
            )
            raise ConfigurationError(msg)
        for name in ("leave_on_stop", "stop_at_exit", "handle_sigterm"):
            if not isinstance(getattr(self, name), bool):
                msg = f"{name} must be True or False, not {getattr(self, name)!r}"
                raise ConfigurationError(msg)
        if self.interval is not None and self.timeout is not None:
            check_timing(self.interval, self.timeout, self.jitter)

    def effective_interval(self, server_interval: float | None) -> float:
        """The interval to use: the configured one, else the server's, else 15 s."""
        if self.interval is not None:
            return float(self.interval)
        return float(server_interval) if server_interval else DEFAULT_INTERVAL


def check_timing(interval: float, timeout: float, jitter: float) -> None:
    """Raise :class:`ConfigurationError` unless the longest wait ends before the timeout."""
    longest = interval * (1 + jitter)
    if longest >= timeout:
        msg = (
            f"interval {interval:g}s (up to {longest:g}s with jitter) must be shorter "
            f"than the presence timeout {timeout:g}s, or users flap offline between beats"
        )
        raise ConfigurationError(msg)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackerConfig:
    """How a :class:`~presence_sdk.PresenceTracker` / ``AsyncPresenceTracker`` behaves.

    The timing and retry settings mean what they mean on
    :class:`~presence_sdk.PresenceConfig`, applied to the tracker's batch calls.

    Attributes:
        interval: Seconds between two beats of every tracked session. None (default):
            the server's ``heartbeat_interval_seconds`` (15 s as shipped).
        timeout: Seconds after which the server ends a silent session. None (default):
            the server's ``timeout_seconds`` (45 s as shipped).
        jitter: Each wait between rounds is ``interval`` times a random factor in
            ``[1 - jitter, 1 + jitter]`` (several server processes do not beat in
            lockstep). From 0 to 0.5; default 0.1.
        batch_size: Sessions per ``presence_track_beat``/``presence_track_end`` call,
            from 1 to 10,000 (the SQL's limit). Default 1,000: one call costs about
            220 us of PostgREST envelope, under 2 % of the work of 1,000 sessions, so
            bigger calls save almost nothing, while a 1,000-session call stays about
            127 KB of JSON (10,000 sessions are about 1.3 MB, over nginx's default
            1 MB body limit, a common proxy in front of APIs), holds its row locks
            briefly, and a call the server rejects (one bad entry fails its whole
            call) re-sends little.
        linger: Seconds a prompt flush waits after the first ``track``/``untrack``/
            ``set_status`` so that a burst (many connections at once) goes out as
            one call. Default 0.05.
        max_attempts: Attempts per batch call for transient failures. Default 4.
        backoff_initial: Upper bound of the first retry delay, in seconds. Default 0.5.
        backoff_max: Cap of one retry delay, in seconds. Default 5. The retries of one
            round never run past the interval: the next round takes over.
        idle_backoff_max: While the server refuses every call for a reason retries
            cannot fix (SQL missing, not the service role), rounds are retried after
            ``interval``, doubling up to this cap, in seconds. Default 300.
        request_timeout: Total time one batch call may take, in seconds. Default 10
            (a 10,000-session call does real work on the server).
        stop_timeout: Upper bound, in seconds, of how long ``stop()`` waits for the
            call in flight and the calls that end every tracked session. Default 5.
        end_on_stop: End every tracked session on ``stop()`` (offline now). Default
            True; with False they go offline after the timeout.
        stop_at_exit: ``PresenceTracker`` only: stop (ending every session) from an
            ``atexit`` hook. Default False.
        handle_sigterm: Stop (ending every session) on SIGTERM, then pass the signal on
            to the handler installed before. Default False. Needs ``start()`` on the
            main thread.
    """

    interval: float | None = None
    timeout: float | None = None
    jitter: float = 0.1
    batch_size: int = DEFAULT_BATCH_SIZE
    linger: float = 0.05
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 5.0
    idle_backoff_max: float = 300.0
    request_timeout: float = 10.0
    stop_timeout: float = 5.0
    end_on_stop: bool = True
    stop_at_exit: bool = False
    handle_sigterm: bool = False

    def __post_init__(self) -> None:
        _positive("interval", self.interval, allow_none=True)
        _positive("timeout", self.timeout, allow_none=True)
        for name in ("backoff_initial", "backoff_max", "idle_backoff_max"):
            _positive(name, getattr(self, name))
        for name in ("request_timeout", "stop_timeout", "linger"):
            _positive(name, getattr(self, name))
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 0.5
        ):
            msg = f"jitter must be a fraction from 0 to 0.5, not {self.jitter!r}"
            raise ConfigurationError(msg)
        for name, low, high in (
            ("max_attempts", 1, None),
            ("batch_size", 1, MAX_BATCH_SIZE),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < low
                or (high is not None and value > high)
            ):
                bounds = f">= {low}" if high is None else f"from {low} to {high:,}"
                msg = f"{name} must be an integer {bounds}, not {value!r}"
                raise ConfigurationError(msg)
        if self.backoff_initial > self.backoff_max:
            msg = (
                f"backoff_initial ({self.backoff_initial}) must not exceed "
                f"backoff_max ({self.backoff_max})"
            )
            raise ConfigurationError(msg)
        for name in ("end_on_stop", "stop_at_exit", "handle_sigterm"):
            if not isinstance(getattr(self, name), bool):
                msg = f"{name} must be True or False, not {getattr(self, name)!r}"
                raise ConfigurationError(msg)
        if self.interval is not None and self.timeout is not None:
            check_timing(self.interval, self.timeout, self.jitter)

    def effective_interval(self, server_interval: float | None) -> float:
        """The interval to use: the configured one, else the server's, else 15 s."""
        if self.interval is not None:
            return float(self.interval)
        return float(server_interval) if server_interval else DEFAULT_INTERVAL
