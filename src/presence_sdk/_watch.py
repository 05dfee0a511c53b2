"""The event watcher's logic, without I/O: what to read, when to wait, how to recover.

:func:`watch_effects` is a generator of effects, like the heartbeat core in
:mod:`presence_sdk._core`; the sync and async watchers
(:mod:`presence_sdk._sync.watcher`, :mod:`presence_sdk._async.watcher`) perform them
over a source: a direct PostgreSQL connection (``LISTEN`` + ``presence_events_since``)
or the PostgREST RPC (polling).

The guarantees come from the SQL and from one rule here: the cursor only moves to a
``last_id`` the server returned after every event before it was delivered.
``presence_events_since`` never returns an id that an open transaction may still
commit below it, so resuming after any delivered id loses nothing and repeats nothing,
across dropped connections, server restarts and restarts of the watcher.

Backpressure: the watcher holds at most one page. It reads the next page only when the
consumer has taken every event of the current one, and while it is a page or more
behind it stops listening (``UNLISTEN``) and pages through the log, so notifications
never pile up for a slow consumer. Once caught up it listens again, then reads once more
(events committed before ``LISTEN`` took effect), then waits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, Self, TypeVar

from presence_sdk._core import LOGGER
from presence_sdk._events import EventPage, PresenceEvent, check_after_id, check_page_size
from presence_sdk._exceptions import ConfigurationError, TransientError

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "Deliver",
    "Fetch",
    "Listen",
    "Pause",
    "Reconnect",
    "Unlisten",
    "Wait",
    "WatchEffect",
    "WatchOptions",
    "WatchSource",
    "WatcherBase",
    "watch_effects",
]

#: Seconds between reads when polling; with LISTEN, the longest wait for a notification.
DEFAULT_POLL_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Fetch:
    """Effect: read one page after ``after_id``; the reply is an :class:`EventPage`."""

    after_id: int
    limit: int


@dataclass(frozen=True, slots=True)
class Listen:
    """Effect: ``LISTEN`` on the events channel (direct connections only)."""


@dataclass(frozen=True, slots=True)
class Unlisten:
    """Effect: ``UNLISTEN`` the events channel (a slow consumer: page instead)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Effect: wait up to ``seconds`` for a notification (or just sleep when polling)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Effect: sleep ``seconds`` before retrying after a transient failure."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Effect: drop the connection and open a new one (a no-op over HTTP)."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Effect: hand ``event`` to the consumer; the generator resumes when it asks for more."""

    event: PresenceEvent


WatchEffect = Fetch | Listen | Unlisten | Wait | Pause | Reconnect | Deliver


@dataclass(frozen=True, kw_only=True, slots=True)
class WatchOptions:
    """How a watcher reads the log (validated when built).

    Attributes:
        after_id: Start after this event id (0: from the oldest kept event).
        poll_interval: Seconds between reads when polling; with ``listen``, the longest
            wait without a notification (a safety net, e.g. after a rolled-back writer).
        page_size: Events per read (1-1000): also the most the watcher holds in memory.
        listen: Use LISTEN/NOTIFY (a direct connection).
        retry_initial: First wait after a transient failure, doubled each time ...
        retry_cap: ... up to this (seconds); each wait is randomized (full jitter).
    """

    after_id: int = 0
    poll_interval: float = DEFAULT_POLL_INTERVAL
    page_size: int = 100
    listen: bool = False
    retry_initial: float = 0.2
    retry_cap: float = 10.0

    def __post_init__(self) -> None:
        check_after_id(self.after_id)
        check_page_size(self.page_size, name="page_size")
        for name in ("poll_interval", "retry_initial", "retry_cap"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= 3600
            ):
                msg = f"{name} must be a number of seconds in (0, 3600], not {value!r}"
                raise ConfigurationError(msg)


def _backoff(options: WatchOptions, failures: int, rng: random.Random) -> float:
    ceiling = min(options.retry_cap, options.retry_initial * 2 ** min(failures - 1, 30))
    return rng.uniform(options.retry_initial / 2, max(ceiling, options.retry_initial / 2))


def watch_effects(
    options: WatchOptions, rng: random.Random | None = None
) -> Generator[WatchEffect, Any, None]:
    """The watcher: yields effects forever (until the consumer stops asking).

    Transient failures (lost connection, server restarting, HTTP 5xx) are retried with
    backoff, reconnecting first; any other error (no rights, SQL not installed, bad
    arguments) is raised to the consumer at once, so a misconfigured watcher fails at
    its first read instead of retrying forever.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    cursor = options.after_id
    listening = False
    failures = 0
    while True:
        try:
            page: EventPage = yield Fetch(cursor, options.page_size)
            if page.more and listening:
                yield Unlisten()
                listening = False
            if page.events:
                failures = 0
            for event in page.events:
                yield Deliver(event)
            cursor = max(cursor, page.last_id)
            failures = 0
            if page.more:
                continue
            if options.listen and not listening:
                yield Listen()
                listening = True
                continue  # read once more: events committed before LISTEN took effect
            yield Wait(options.poll_interval)
        except TransientError as error:
            failures += 1
            listening = False
            delay = _backoff(options, failures, rng)
            LOGGER.warning(
                "presence: watching events failed (%s); retrying in %.1fs from event %d",
                error,
                delay,
                cursor,
            )
            yield Pause(delay)
            try:
                yield Reconnect()
            except TransientError as again:
                LOGGER.warning("presence: reconnecting failed (%s)", again)


# -- what both watcher shells share ----------------------------------------------------------


class WatchSource(Protocol):
    """Where a watcher shell reads from (a direct connection, or PostgREST)."""

    listens: bool


SourceT = TypeVar("SourceT", bound=WatchSource)
RunnerT = TypeVar("RunnerT")


class WatcherBase(Generic[SourceT, RunnerT]):
    """The state both watchers keep (options, source, cursor) and how they are built.

    The shells in :mod:`presence_sdk._sync.watcher` and
    :mod:`presence_sdk._async.watcher` add the iteration and the effects.
    """

    _options: WatchOptions
    _source: SourceT
    _last_id: int
    _iterator: object
    _closed: bool

    @staticmethod
    def _check_target(supabase: object, dsn: object) -> None:
        """ConfigurationError unless exactly one of a client and a usable DSN is given."""
        if (supabase is None) == (dsn is None):
            msg = "give exactly one of a supabase client or dsn="
            raise ConfigurationError(msg)
        if dsn is not None and (not isinstance(dsn, str) or not dsn.strip()):
            msg = f"dsn must be a libpq connection string, not {dsn!r:.50}"
            raise ConfigurationError(msg)

    @classmethod
    def _polling(cls, runner: RunnerT) -> SourceT:
        """The source that reads through ``runner``."""
        raise NotImplementedError

    @classmethod
    def _over(
        cls,
        runner: RunnerT,
        *,
        after_id: int = 0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = 100,
    ) -> Self:
        """A polling watcher that reads through ``runner`` (the clients' own reads,
        which refresh an expired session): what ``watch()`` of the clients returns."""
        watcher = cls.__new__(cls)
        watcher._setup(cls._polling(runner), after_id, poll_interval, page_size)
        return watcher

    def _setup(self, source: SourceT, after_id: int, poll_interval: float, page_size: int) -> None:
        self._options = WatchOptions(
            after_id=after_id,
            poll_interval=poll_interval,
            page_size=page_size,
            listen=source.listens,
        )
        self._source = source
        self._last_id = after_id
        self._iterator = None
        self._closed = False

    @property
    def last_id(self) -> int:
        """The id of the last event yielded (or ``after_id``): pass it back to resume."""
        return self._last_id
