"""The heartbeat logic shared by the sync and async clients, free of I/O.

Sans-I/O: the logic is written as generators that *yield effects* (:class:`Call` an
RPC, :class:`Refresh` the session, :class:`Sleep`, :class:`AuthCall`) and receive
their outcome; the
thin shells in :mod:`presence_sdk._sync` and :mod:`presence_sdk._async` perform the
effects with a thread or an asyncio task (see :class:`Driver`). So the schedule,
retries (tenacity's decision logic, driven step by step through
``BaseRetrying.iter``), state machine and statistics exist once and are tested with a
fake clock, without sockets, threads or event loops.

Callbacks (``on_error``, ``on_state_change``) are app code: they are queued and
delivered in order by :class:`Notifier`, never while the core or a shell holds a lock
(shells wrap their locked sections in :func:`holding_callbacks`), so a callback may call
any public method of its client.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from tenacity import DoAttempt, DoSleep, RetryCallState, Retrying, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from presence_sdk._config import (
    ACTIVE_STATUSES,
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    PresenceConfig,
    check_timing,
)
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    NotInstalledError,
    PresenceError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from presence_sdk._models import _parse_time
from presence_sdk._queries import Query
from presence_sdk._sessions import to_session_id, validate_device, validate_metadata

__all__ = [
    "LOGGER",
    "MIN_SERVER_INTERVAL",
    "AuthCall",
    "Call",
    "Driver",
    "Effect",
    "Effects",
    "Heartbeat",
    "Notifier",
    "PresenceState",
    "PresenceStats",
    "Refresh",
    "RunControl",
    "Sleep",
    "StopAtDeadline",
    "StopRequestedError",
    "WaitFullJitter",
    "WaitRetryAfter",
    "clamp_server_timing",
    "detached_context",
    "holding_callbacks",
    "parse_heartbeat_time",
    "query_effects",
    "retry_call",
    "validate_status",
]

#: The logger of presence_sdk (a NullHandler is attached in ``presence_sdk/__init__``).
LOGGER = logging.getLogger("presence_sdk")

T = TypeVar("T")

ErrorCallback = Callable[[PresenceError], object]
StateCallback = Callable[["PresenceState", "PresenceState"], object]


class PresenceState(StrEnum):
    """Where a heartbeat client is (``stats.state``; ``on_state_change`` reports moves).

    Attributes:
        STOPPED: Not running (before ``start()``, after ``stop()``, in a forked child).
        STARTING: Started; the first heartbeat has not been answered yet.
        ONLINE: The last heartbeat succeeded.
        DEGRADED: The last heartbeat failed for a transient reason (network, timeout,
            5xx, 429, an answer that is not the server's time) after its retries; the
            client keeps beating on schedule.
        UNAUTHENTICATED: No valid session (and refreshing it failed): the client tries
            again every interval, without spinning, until the app signs the user in.
        NOT_INSTALLED: The presence SQL is missing on the server (PGRST202): apply the
            migrations and run ``presence_sdk.verify_setup()``. Retried with a long
            backoff, so no hot loop.
        FAILED: The server rejected the heartbeat for another reason (no
            ``public.users`` row, permission denied...). Retried with a long backoff.
        STOPPING: ``stop()`` was called; the leave is being sent.
    """

    STOPPED = "stopped"
    STARTING = "starting"
    ONLINE = "online"
    DEGRADED = "degraded"
    UNAUTHENTICATED = "unauthenticated"
    NOT_INSTALLED = "not_installed"
    FAILED = "failed"
    STOPPING = "stopping"


_QUIET_STATES = frozenset({PresenceState.NOT_INSTALLED, PresenceState.FAILED})


@dataclass(frozen=True, kw_only=True, slots=True)
class PresenceStats:
    """A consistent snapshot of a heartbeat client's counters.

    Attributes:
        state: The client's :class:`PresenceState`.
        status: The status the client reports (``online``, ``away`` or ``busy``).
        beats_sent: Heartbeats the server accepted.
        beats_failed: Heartbeats given up after their retries.
        retries: Retry requests sent (retries of transient failures, and the one retry
            after a session refresh; a refresh that fails sends none).
        consecutive_failures: Heartbeats failed since the last success.
        last_success: Server time of the last accepted heartbeat (None: none yet).
        last_error: The error of the last failed heartbeat or leave (None: none yet).
        interval: The heartbeat interval in use, in seconds.
        timeout: The presence timeout the server applies, in seconds.
    """

    state: PresenceState
    status: str
    beats_sent: int
    beats_failed: int
    retries: int
    consecutive_failures: int
    last_success: datetime | None
    last_error: PresenceError | None
    interval: float
    timeout: float


# -- effects -------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """Effect: call ``public.<fn>(**params)`` over PostgREST; the reply is its JSON.

    The shell sets ``authorization`` to the ``Authorization`` header it sent, so that
    a later :class:`Refresh` can tell whether the token changed meanwhile.
    """

    fn: str
    params: Mapping[str, Any]
    timeout: float
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Effect: refresh the session once, unless the token already changed since
    ``stale_authorization`` was sent (e.g. supabase-py's own refresh timer ran)."""

    stale_authorization: str | None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Effect: wait up to ``seconds``; the shell may return earlier when woken."""

    seconds: float


@dataclass(frozen=True, slots=True)
class AuthCall:
    """Effect: call ``<supabase client>.auth.<method>(*args)``; the reply is its result.

    The steps of a :class:`Refresh` (see :func:`presence_sdk._wire.refresh_effects`).
    """

    method: str
    args: tuple[Any, ...] = ()


Effect = Call | Refresh | Sleep | AuthCall
#: A generator of effects that finally returns ``T``.
Effects = Generator[Effect, Any, T]


class Driver(Generic[T]):
    """Runs an effect generator for a shell.

    Iterate to get the next effect; after performing it, report its outcome with
    :meth:`reply` or :meth:`fail`; when the iteration ends, :attr:`result` holds the
    generator's return value (its exceptions propagate from the iteration)::

        driver = Driver(effects)
        for effect in driver:
            try:
                driver.reply(perform(effect))
            except PresenceError as exc:
                driver.fail(exc)
        return driver.result
    """

    __slots__ = ("_done", "_error", "_gen", "_reply", "_result")
    _result: T

    def __init__(self, effects: Effects[T]) -> None:
        self._gen = effects
        self._reply: Any = None
        self._error: BaseException | None = None
        self._done = False

    def __iter__(self) -> Driver[T]:
        return self

    def __next__(self) -> Effect:
        error, self._error = self._error, None
        reply, self._reply = self._reply, None
        try:
            return self._gen.throw(error) if error is not None else self._gen.send(reply)
        except StopIteration as stop:
            self._result, self._done = stop.value, True
            raise StopIteration from None

    def reply(self, value: Any) -> None:
        """The outcome of the last effect: its value."""
        self._reply = value

    def fail(self, error: BaseException) -> None:
        """The outcome of the last effect: an error (thrown into the generator)."""
        self._error = error

    def close(self) -> None:
        """Abandon the generator (runs its ``finally`` blocks)."""
        self._gen.close()

    @property
    def result(self) -> T:
        """The generator's return value, once the iteration has ended."""
        if not self._done:
            msg = "the effects have not finished"
            raise RuntimeError(msg)
        return self._result


# -- callbacks -------------------------------------------------------------------------

# The notifiers whose events wait for the end of the current locked section (None: no
# section open). A ContextVar, so it is per thread and per asyncio task: a section held
# by one task does not delay the events of the heartbeat task on the same loop.
_HELD: ContextVar[list[Notifier] | None] = ContextVar("presence_sdk_held", default=None)


@contextlib.contextmanager
def holding_callbacks() -> Iterator[None]:
    """Delay the callbacks raised in this block until it ends.

    Shells wrap each section that holds their own lock: ``with holding_callbacks(),
    lock:`` releases the lock first, then delivers what the section raised, so app
    code never runs under a client's lock and may call any of its methods.
    """
    if _HELD.get() is not None:  # nested: the outermost section delivers
        yield
        return
    token = _HELD.set([])
    try:
        yield
    finally:
        held = _HELD.get() or []
        _HELD.reset(token)
        for notifier in held:
            notifier.deliver()


def detached_context() -> Context:
    """A copy of the current context outside any held section.

    For the heartbeat thread or task started inside ``start()``'s section: a task
    copies its creator's context, and its events must not wait for a section that
    has long ended.
    """
    context = copy_context()
    context.run(_HELD.set, None)
    return context


class Notifier:
    """Delivers app callbacks one at a time, in the order of their events.

    :meth:`post` queues an event and delivers the queue at once, unless the posting
    thread/task is inside :func:`holding_callbacks` (then the section's end delivers
    it) or another thread is delivering (then that thread delivers it next). So
    callbacks never run while a lock of the client is held, never run concurrently
    with each other, and a callback that triggers a new event (e.g. calls ``stop()``)
    sees it delivered after it returns instead of recursing. Exceptions a callback
    raises are logged, never propagated.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, Callable[..., object], tuple[Any, ...]]] = deque()
        self._delivering = False

    def post(self, name: str, callback: Callable[..., object] | None, *args: Any) -> None:
        """Queue ``callback(*args)`` (``name`` is used in the log if it raises)."""
        if callback is None:
            return
        with self._lock:
            self._queue.append((name, callback, args))
        held = _HELD.get()
        if held is None:
            self.deliver()
        elif self not in held:
            held.append(self)

    def deliver(self) -> None:
        """Run the queued callbacks, unless another thread is already doing it."""
        while True:
            with self._lock:
                if self._delivering or not self._queue:
                    return
                self._delivering = True
                name, callback, args = self._queue.popleft()
            try:
                callback(*args)
            except Exception:
                LOGGER.exception("presence: %s callback raised", name)
            finally:
                with self._lock:
                    self._delivering = False

    def reset_after_fork(self) -> None:
        """In a forked child: drop the parent's pending events and its lock."""
        self._lock = threading.Lock()
        self._queue.clear()
        self._delivering = False


# -- retry decisions (tenacity strategies) -------------------------------------------


class WaitFullJitter(wait_base):
    """Exponential backoff with full jitter: ``uniform(0, min(cap, initial * 2**(n-1)))``.

    Like tenacity's ``wait_random_exponential`` but with an injectable random source.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random) -> None:
        self.initial = initial
        self.cap = cap
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        exponent = min(retry_state.attempt_number - 1, 62)
        return self.rng.uniform(0.0, min(self.cap, self.initial * 2.0**exponent))


class WaitRetryAfter(wait_base):
    """The server's ``Retry-After`` for a 429, no wait before the retry that follows a
    session refresh, else ``fallback``."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        error = _outcome_error(retry_state)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after
        if isinstance(error, AuthenticationError):
            return 0.0
        return float(self.fallback(retry_state))


class StopAtDeadline(stop_base):
    """Give up after ``max_attempts``, or when the next retry would start after
    ``deadline`` (a time of ``clock``; set before each heartbeat). The one retry after
    a session refresh is always allowed."""

    def __init__(self, clock: Callable[[], float], max_attempts: int) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        self.deadline = math.inf

    def __call__(self, retry_state: RetryCallState) -> bool:
        if isinstance(_outcome_error(retry_state), AuthenticationError):
            return False
        return (
            retry_state.attempt_number >= self.max_attempts
            or self.clock() + retry_state.upcoming_sleep > self.deadline
        )


def _outcome_error(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


def retry_call(
    call: Call,
    parse: Callable[[Any], T],
    *,
    clock: Callable[[], float],
    wait: wait_base,
    max_attempts: int,
    deadline: float,
    control: RunControl,
    pause: Callable[[float], Effects[None]],
    on_retry: Callable[[], object],
    refresh: Callable[[Call, AuthenticationError], Effects[None]] | None = None,
) -> Effects[T]:
    """Send ``call`` and ``parse`` its reply; after a failure (of either), retry as
    tenacity decides, sleeping through ``pause`` (an effect generator); raise the
    final error.

    Transient errors are retried up to ``max_attempts`` while the next retry would
    start before ``deadline`` (a time of ``clock``). With ``refresh``, an
    authentication error is followed by one session refresh and one retry. The first
    attempt runs before any retry bookkeeping (the common case costs no more than the
    call); tenacity is consulted from the first failure on, with a fresh ``Retrying``
    per call, so two runs never share retry state. ``on_retry`` is called for each
    retry actually sent. Raises ``StopRequestedError`` when ``control`` is stopped
    before a retry.
    """
    try:
        return parse((yield call))
    except PresenceError as exc:
        first_error = exc
    refreshed: list[bool] = []  # the one session refresh of this call happened

    def retryable(error: BaseException) -> bool:
        if isinstance(error, AuthenticationError):
            return refresh is not None and not refreshed
        return isinstance(error, TransientError)

    stop_rule = StopAtDeadline(clock, max_attempts)
    stop_rule.deadline = deadline
    retrying = Retrying(
        retry=retry_if_exception(retryable), wait=wait, stop=stop_rule, reraise=True
    )
    retrying.begin()
    state = RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.set_exception((type(first_error), first_error, first_error.__traceback__))
    while True:
        action = retrying.iter(state)  # raises the final error when giving up
        if isinstance(action, DoAttempt):
            if control.stop_requested:
                raise StopRequestedError
            on_retry()
            call = Call(call.fn, call.params, call.timeout)
            try:
                state.set_result(parse((yield call)))
            except PresenceError as exc:
                state.set_exception((type(exc), exc, exc.__traceback__))
        elif isinstance(action, DoSleep):
            error = _outcome_error(state)
            if isinstance(error, AuthenticationError) and refresh is not None:
                refreshed.append(True)
                yield from refresh(call, error)
            else:
                LOGGER.debug(
                    "presence: %s failed (%s); retry %d in %.2fs",
                    call.fn,
                    error,
                    state.attempt_number,
                    float(action),
                )
                yield from pause(float(action))
            state.prepare_for_next_attempt()
        else:
            return action  # type: ignore[no-any-return]


# -- the heartbeat engine ------------------------------------------------------------


def validate_status(status: object) -> str:
    """Return ``status`` if a client may report it, else raise InvalidInputError."""
    if not isinstance(status, str) or status not in ACTIVE_STATUSES:
        msg = (
            f"status must be one of {sorted(ACTIVE_STATUSES)}, not {status!r} "
            "(call stop() to go offline)"
        )
        raise InvalidInputError(msg)
    return status


@dataclass(slots=True)
class RunControl:
    """Stop flag of one run of the heartbeat loop (each ``start()`` makes a new one, so
    a run that outlived its ``stop()`` can never be revived by the next ``start()``).

    ``superseded``: a newer run began while this one was still alive (``stop()`` gave
    up waiting for it and ``start()`` followed). Such a run records nothing and sends
    no leave, since its results are stale and a leave would undo the newer run; see
    :meth:`Heartbeat.end_run` for what a request it had already sent is answered with.
    """

    stop_requested: bool = False
    stop_deadline: float = math.inf
    quiet: bool = False  # stop without a leave (forked child)
    superseded: bool = False


class StopRequestedError(Exception):
    """Internal to the engines: stop() was requested while waiting (never escapes a run)."""


def parse_heartbeat_time(value: Any) -> datetime:
    """The server time a heartbeat RPC answered with; TransientError for anything else.

    ``presence_heartbeat()`` returns a timestamp. A 2xx with anything else (an empty
    body, other JSON, a proxy's HTML page, which :func:`presence_sdk._wire.parse_response`
    already refuses) did not come from the presence SQL, so it is not a beat: the same
    retried, reported, transient error every time.
    """
    parsed: datetime | None = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = _parse_time(value)
    if parsed is None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        msg = (
            f"the server answered the heartbeat with {shown}, not a timestamp "
            "(is a proxy or another service answering in PostgREST's place?)"
        )
        raise TransientError(msg)
    return parsed


#: Server intervals below this are clamped (the SQL's CHECK allows 1 s at least).
MIN_SERVER_INTERVAL = 1.0


def clamp_server_timing(interval: Any, timeout: Any) -> tuple[float, float, str | None]:
    """Server timings made sane, and what was wrong with them (None: nothing).

    The SQL's CHECKs keep ``heartbeat_interval_seconds >= 1`` and
    ``timeout_seconds >= 2 * heartbeat_interval_seconds``, so values outside come only
    from something broken in between (a proxy, a hand-edited response). A timeout that
    is not a number of at least ``2 * MIN_SERVER_INTERVAL`` becomes the default (45 s);
    an interval that is not a positive number becomes the default (15 s, at most a third
    of the timeout); any other interval is clamped into ``[1 s, timeout / 2]``, so a
    client never beats in a hot loop nor too rarely to stay online.
    """
    problems: list[str] = []
    good_timeout = _finite(timeout)
    if good_timeout is None or good_timeout < 2 * MIN_SERVER_INTERVAL:
        problems.append(f"timeout_seconds {timeout!r}")
        good_timeout = DEFAULT_TIMEOUT
    good_interval = _finite(interval)
    if good_interval is None or good_interval <= 0:
        problems.append(f"heartbeat_interval_seconds {interval!r}")
        good_interval = min(DEFAULT_INTERVAL, good_timeout / 3)
    elif not MIN_SERVER_INTERVAL <= good_interval <= good_timeout / 2:
        problems.append(f"heartbeat_interval_seconds {interval!r}")
        good_interval = min(max(good_interval, MIN_SERVER_INTERVAL), good_timeout / 2)
    if not problems:
        return good_interval, good_timeout, None
    problem = (
        f"presence_settings() returned {' and '.join(problems)}, outside what the SQL "
        f"allows; using interval {good_interval:g}s and timeout {good_timeout:g}s "
        "(is something between the client and PostgREST rewriting responses?)"
    )
    return good_interval, good_timeout, problem


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(slots=True)
class _Counters:
    beats_sent: int = 0
    beats_failed: int = 0
    retries: int = 0
    consecutive_failures: int = 0
    last_success: datetime | None = None
    last_error: PresenceError | None = None


class Heartbeat:
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
        self._legacy = False  # this run beats with the 0.1 RPCs (no sessions SQL)
        self._legacy_warned = False
        self.config = config
        self._on_error = on_error
        self._on_state_change = on_state_change
        self._events = Notifier()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = threading.Lock()
        self._status: str = config.initial_status
        self._beat_due = False  # beat at once: new status, or a superseded run ended
        self._state = PresenceState.STOPPED
        self._counters = _Counters()
        self._server_interval: float | None = None
        self._server_timeout: float | None = None
        self._settings_known = config.interval is not None and config.timeout is not None
        self._not_before = -math.inf  # server-imposed wait (Retry-After), capped
        self._last_success_at: float | None = None  # clock() of the last accepted beat
        self._wait_cap_logged = False
        self._run: RunControl | None = None
        self._wait = WaitRetryAfter(
            WaitFullJitter(config.backoff_initial, config.backoff_max, self._rng)
        )

    # -- state shared with the API threads -------------------------------------------

    @property
    def interval(self) -> float:
        """The heartbeat interval in use, in seconds."""
        return self.config.effective_interval(self._server_interval)

    @property
    def timeout(self) -> float:
        """The presence timeout in use, in seconds."""
        if self.config.timeout is not None:
            return float(self.config.timeout)
        return self._server_timeout or DEFAULT_TIMEOUT

    @property
    def state(self) -> PresenceState:
        """The current state."""
        return self._state

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

    def begin_run(self) -> RunControl:
        """A new run: state STARTING; the first heartbeat is due at once.

        A previous run that is still alive (its ``stop()`` returned after
        ``stop_timeout`` while a request hung) is *superseded*: it stops waiting,
        records nothing and never sends its leave, so it cannot undo this run. What it
        had already sent is overwritten when it ends (:meth:`end_run`).
        """
        control = RunControl()
        with self._lock:
            previous, self._run = self._run, control
            if previous is not None:
                previous.superseded = previous.stop_requested = True
            self._not_before = -math.inf
            self._beat_due = False
            self._legacy = False  # probe the sessions RPCs again
            old = self._move(PresenceState.STARTING)
        self._announce(old, PresenceState.STARTING)
        return control

    def request_stop(self, control: RunControl) -> None:
        """Ask ``control``'s run to stop; its leave must be sent within ``stop_timeout``."""
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
        superseded while one of its requests could still be in flight (a heartbeat
        with a stale status, or a leave sent just before the newer run began), and
        the server may have applied it after the current run's last beat. So the
        current run beats again at once: whatever the old run sent, the newest beat
        lands last. (A request the old run gave up on at its timeout may in theory be
        applied later still; the next regular beat then repairs it.)
        """
        with self._lock:
            if self._run is not control:
                current = self._run
                if control.superseded and current is not None and not current.stop_requested:
                    self._beat_due = True
                    return True
                return False
            self._run = None
            old = self._move(PresenceState.STOPPED)
        self._announce(old, PresenceState.STOPPED)
        return False

    def forget_run_after_fork(self) -> bool:
        """In a forked child: end the inherited run quietly (no leave, no callbacks).

        Returns whether a run was active in the parent.
        """
        self._lock = threading.Lock()
        self._events.reset_after_fork()
        control, self._run = self._run, None
        if control is not None:
            control.quiet = control.stop_requested = True
        self._state = PresenceState.STOPPED
        # The child is another connection: sharing the parent's session id would let
        # either process's leave end the other's presence.
        self.session_id = uuid.uuid4()
        return control is not None

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
                yield from self._pause(self._next_delay(), control, wake_when_due=True)
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
            self._events.post("on_error", self._on_error, exc)
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
        return (
            yield from retry_call(
                Call(fn, params, self.config.request_timeout),
                parse,
                clock=self._clock,
                wait=self._wait,
                max_attempts=self.config.max_attempts,
                deadline=self._clock() + self.interval,
                control=control,
                pause=lambda seconds: self._pause(seconds, control, wake_when_due=False),
                on_retry=self._count_retry,
                refresh=self._refresh,
            )
        )

    def _count_retry(self) -> None:
        with self._lock:
            self._counters.retries += 1

    def _refresh(self, call: Call, error: AuthenticationError) -> Effects[None]:
        LOGGER.info("presence: %s; refreshing the session once", error)
        try:
            yield Refresh(call.authorization)
        except PresenceError as refresh_error:
            LOGGER.debug("presence: session refresh failed: %s", refresh_error)
            raise error from refresh_error

    def _pause(self, seconds: float, control: RunControl, *, wake_when_due: bool) -> Effects[None]:
        """Wait ``seconds``; stop early for stop() (raises StopRequestedError) or, with
        ``wake_when_due``, for a beat due at once (new status, superseded run ended)."""
        deadline = self._clock() + seconds
        while True:
            if control.stop_requested:
                raise StopRequestedError
            if wake_when_due and self._beat_due:
                return
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            yield Sleep(remaining)

    def _next_delay(self) -> float:
        interval = self.interval
        jitter = self.config.jitter
        factor = self._rng.uniform(1.0 - jitter, 1.0 + jitter) if jitter else 1.0
        if self._state in _QUIET_STATES:
            failures = max(1, self._counters.consecutive_failures)
            base = min(self.config.idle_backoff_max, interval * 2.0 ** min(failures - 1, 30))
            delay = max(interval, base) * factor
        else:
            delay = interval * factor
        return max(delay, self._not_before - self._clock())

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

    def _load_settings(self) -> Effects[None]:
        try:
            settings = yield Call("presence_settings", {}, self.config.request_timeout)
            raw_interval = settings["heartbeat_interval_seconds"]
            raw_timeout = settings["timeout_seconds"]
        except PresenceError as exc:
            LOGGER.debug("presence: could not read presence_settings(): %s", exc)
            return
        except (KeyError, TypeError, IndexError):
            LOGGER.warning("presence: presence_settings() returned %r; using defaults", settings)
            self._settings_known = True
            return
        interval, timeout, problem = clamp_server_timing(raw_interval, raw_timeout)
        if problem is not None:  # read once per client, so logged once
            LOGGER.warning("presence: %s", problem)
        with self._lock:
            self._server_interval, self._server_timeout = interval, timeout
            self._settings_known = True
        try:
            check_timing(self.interval, self.timeout, self.config.jitter)
        except ConfigurationError as exc:
            LOGGER.warning("presence: %s", exc)
        LOGGER.debug("presence: interval %.1fs, timeout %.1fs", self.interval, self.timeout)

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
        new = _state_for(error)
        capped: tuple[float, float] | None = None
        with self._lock:
            if control.superseded:
                LOGGER.debug("presence: heartbeat of a stopped run failed: %s", error)
                return
            c = self._counters
            c.beats_failed += 1
            c.consecutive_failures += 1
            c.last_error = error
            if isinstance(error, RateLimitedError) and error.retry_after is not None:
                now = self._clock()
                cap = self._server_wait_cap(now)
                wait = min(error.retry_after, cap)
                if wait < error.retry_after:
                    capped = (error.retry_after, wait)
                self._not_before = now + wait
            old = self._move(new) if self._is_current(control) else None
        if capped is not None:
            self._log_capped_wait(*capped)
        if old is not None and old is not new:
            level = logging.WARNING if new is PresenceState.DEGRADED else logging.ERROR
            LOGGER.log(level, "presence: heartbeat failed (%s): %s", new, error)
            self._announce(old, new)
        else:
            LOGGER.debug("presence: heartbeat failed: %s", error)
        self._events.post("on_error", self._on_error, error)

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

    def _is_current(self, control: RunControl) -> bool:
        return self._run is control and not control.stop_requested

    def _move(self, new: PresenceState) -> PresenceState:
        """Set the state (the caller holds the lock, so counters and state agree)."""
        old, self._state = self._state, new
        return old

    def _announce(self, old: PresenceState, new: PresenceState) -> None:
        """Log and report a state change (through the notifier: never under a lock)."""
        if old is new:
            return
        LOGGER.debug("presence: state %s -> %s", old, new)
        self._events.post("on_state_change", self._on_state_change, old, new)


def _state_for(error: PresenceError) -> PresenceState:
    if isinstance(error, AuthenticationError):
        return PresenceState.UNAUTHENTICATED
    if isinstance(error, NotInstalledError):
        return PresenceState.NOT_INSTALLED
    if isinstance(error, TransientError):
        return PresenceState.DEGRADED
    return PresenceState.FAILED


# -- queries ---------------------------------------------------------------------------


def query_effects(query: Query[T], timeout: float) -> Effects[T]:
    """Run one read: on an authentication error refresh the session once and retry.

    A query without ``fn`` (e.g. an empty lookup) is answered without any I/O.
    """
    fn, params, parse = query.fn, query.params, query.parse
    if fn is None:
        return parse(None)
    call = Call(fn, params, timeout)
    try:
        return parse((yield call))
    except AuthenticationError as error:
        try:
            yield Refresh(call.authorization)
        except RequestError as refresh_error:
            raise error from refresh_error
    return parse((yield Call(fn, params, timeout)))
