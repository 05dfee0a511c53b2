"""The I/O-free core the sync and async clients and trackers are built on.

Sans-I/O: the logic is written as generators that *yield effects* (:class:`Call` an
RPC, :class:`Refresh` the session, :class:`Sleep`, :class:`AuthCall`) and receive
their outcome; the
thin shells in :mod:`presence_sdk._sync` and :mod:`presence_sdk._async` perform the
effects with a thread or an asyncio task (see :class:`Driver`). So the schedule,
retries (tenacity's decision logic, driven step by step through
``BaseRetrying.iter``), state machine and statistics exist once and are tested with a
fake clock, without sockets, threads or event loops. This module holds the effects,
the callbacks' delivery, the retry decisions and the states; the engines built on them
are :mod:`presence_sdk._engine` (what both share), :mod:`presence_sdk._heartbeat` (a
client) and :mod:`presence_sdk._tracker_core` (a server's tracker).

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
)
from presence_sdk._exceptions import (
    AuthenticationError,
    InvalidInputError,
    PresenceError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from presence_sdk._models import _parse_time
from presence_sdk._queries import Query

__all__ = [
    "LOGGER",
    "MIN_SERVER_INTERVAL",
    "AuthCall",
    "Call",
    "Driver",
    "Effect",
    "Effects",
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


# -- runs and server timings ---------------------------------------------------------


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
