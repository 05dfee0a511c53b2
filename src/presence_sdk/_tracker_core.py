"""The logic of the server-side tracker, free of I/O (the sans-I/O pattern of _core).

A :class:`Tracker` holds the presence sessions a server speaks for (one per websocket,
say) and keeps them alive with the service-role batch RPCs: every interval one
*round* beats every tracked session with ``presence_track_beat``, ``batch_size``
sessions per call; ``untrack`` ends sessions with ``presence_track_end``; ``stop``
ends everything. ``track``/``set_status``/``untrack`` also ask for a *prompt flush*
(a new connection should show online now, not at the next round): the loop wakes,
lingers a moment to collect a burst, then sends only what changed.

Like :class:`presence_sdk._heartbeat.Heartbeat` it is an
:class:`presence_sdk._engine.Engine` (the same timings, runs, schedule, retries and
state): it yields effects (:class:`Call`, :class:`Sleep`) that the shells in
:mod:`presence_sdk._sync.tracker` and :mod:`presence_sdk._async.tracker` perform,
reports through a :class:`Notifier` outside locks, and never lets an error out of
:meth:`Tracker.run`.

Entries the server refuses: a batch call is all or nothing, so one bad entry (a
session of another user: ``PT409``; a user without a ``public.users`` row:
``23503``; an entry the server finds invalid: ``22023``) would fail every call that
carries it, round after round. The error's DETAIL names up to five offenders and its
message counts them all: the tracker drops the named sessions (reporting them with
:class:`~presence_sdk.SessionsRejectedError`) and re-sends the rest at once; when
more offenders remain unnamed, it splits the rest in halves, so the good sessions
get through within a few calls (about ``2 * log2(n)`` per offender) instead of one
call per five offenders.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from presence_sdk._config import TrackerConfig
from presence_sdk._core import (
    LOGGER,
    Call,
    Effects,
    ErrorCallback,
    PresenceState,
    RunControl,
    StateCallback,
    StopRequestedError,
    validate_status,
)
from presence_sdk._engine import Counters, Engine, state_for
from presence_sdk._exceptions import (
    AuthenticationError,
    InvalidInputError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    RejectedError,
    SessionsRejectedError,
    TransientError,
)
from presence_sdk._queries import Query, to_user_id
from presence_sdk._sessions import to_session_id, validate_device, validate_metadata
from presence_sdk._track_replies import (
    Offenders,
    TrackResult,
    batch_limit,
    offenders,
    parse_track_result,
)

__all__ = ["Tracker", "TrackerStats", "request_effects"]

T = TypeVar("T")

_QUIET_STATES = frozenset(
    {PresenceState.NOT_INSTALLED, PresenceState.FAILED, PresenceState.UNAUTHENTICATED}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackerStats:
    """A consistent snapshot of a tracker's counters.

    Attributes:
        state: The tracker's :class:`~presence_sdk.PresenceState`: ONLINE when the
            last round's calls all succeeded, DEGRADED after a transient failure,
            UNAUTHENTICATED / NOT_INSTALLED / FAILED when the server refuses the key,
            lacks the SQL or refuses the calls.
        sessions: Sessions tracked now.
        pending_ends: Untracked sessions whose end has not been confirmed yet.
        rounds: Rounds completed (every tracked session beaten once, or tried).
        batches_sent: Batch calls the server accepted (beats and ends).
        batches_failed: Batch calls given up after their retries.
        sessions_beaten: Session beats the server accepted, in all.
        sessions_ended: Sessions the server ended on ``untrack``/``stop``.
        sessions_dropped: Sessions dropped because the server refused them (each
            reported to ``on_error`` as :class:`~presence_sdk.SessionsRejectedError`).
        retries: Retry calls sent.
        consecutive_failures: Rounds failed since the last fully successful one.
        last_success: Server time of the last accepted beat call (None: none yet).
        last_error: The last error (None: none yet).
        interval: The interval in use, in seconds.
        timeout: The session timeout the server applies, in seconds.
    """

    state: PresenceState
    sessions: int
    pending_ends: int
    rounds: int
    batches_sent: int
    batches_failed: int
    sessions_beaten: int
    sessions_ended: int
    sessions_dropped: int
    retries: int
    consecutive_failures: int
    last_success: datetime | None
    last_error: PresenceError | None
    interval: float
    timeout: float


@dataclass(slots=True)
class _Session:
    """One tracked session; ``entry`` is its element of ``presence_track_beat``."""

    user_id: uuid.UUID
    status: str
    device: str | None
    metadata: dict[str, Any] | None
    entry: dict[str, Any]


def _entry(sid: uuid.UUID, session: _Session) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "session_id": str(sid),
        "user_id": str(session.user_id),
        "status": session.status,
    }
    if session.device is not None:
        entry["device"] = session.device
    if session.metadata is not None:
        entry["metadata"] = session.metadata
    return entry


@dataclass(slots=True)
class _Counters(Counters):
    rounds: int = 0
    batches_sent: int = 0
    batches_failed: int = 0
    sessions_beaten: int = 0
    sessions_ended: int = 0
    sessions_dropped: int = 0


def _chunks(items: Sequence[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class Tracker(Engine[TrackerConfig]):
    """The tracker's logic: tracked sessions, schedule, batching, retries, state.

    Thread-safe: :meth:`track`, :meth:`set_status`, :meth:`untrack` and :meth:`stats`
    may be called from any thread while a shell drives :meth:`run`.

    Args:
        config: The tracker configuration.
        on_error: Called with the error of each failed batch call (after retries),
            failed end, and each :class:`~presence_sdk.SessionsRejectedError`.
        on_state_change: Called with ``(old, new)`` on every state change.
        clock: Monotonic clock (seconds); tests pass a fake one.
        rng: Random source for jitter and backoff.
    """

    _quiet_states = _QUIET_STATES
    _state_log = "presence: tracker state %s -> %s"
    _counters: _Counters

    def __init__(
        self,
        config: TrackerConfig,
        *,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            config, on_error=on_error, on_state_change=on_state_change, clock=clock, rng=rng
        )
        self._sessions: dict[uuid.UUID, _Session] = {}
        self._dirty: set[uuid.UUID] = set()  # to beat at the next flush (new, changed)
        self._ending: dict[uuid.UUID, float] = {}  # untracked: clock() of the untrack
        self._flush_due = False
        self._round_due = False  # a full round at once (a superseded run ended)
        self._counters = _Counters()
        self._batch_size = config.batch_size  # lowered if the server says so

    # -- the app's side (any thread) ---------------------------------------------------

    def track(
        self,
        user_id: object,
        *,
        session_id: object = None,
        status: object = "online",
        device: object = None,
        metadata: object = None,
    ) -> tuple[uuid.UUID, bool]:
        """Track a session of ``user_id``; returns its id and whether a flush is due.

        A new session (or one whose status, device or metadata changed) is beaten at
        the next prompt flush. Re-tracking a tracked session with the same user
        updates it. Raises InvalidInputError, changing nothing, for a malformed id,
        status, device or metadata, and for a session id tracked for another user.
        """
        uid = to_user_id(user_id)
        sid = uuid.uuid4() if session_id is None else to_session_id(session_id)
        status = validate_status(status)
        device = validate_device(device)
        meta = validate_metadata(metadata)
        with self._lock:
            current = self._sessions.get(sid)
            if current is not None and current.user_id != uid:
                msg = (
                    f"session {sid} is tracked for user {current.user_id}, not {uid}: "
                    "use a new session id per connection"
                )
                raise InvalidInputError(msg)
            session = _Session(uid, status, device, meta, {})
            if current is not None:  # None keeps what the session had, as the SQL does
                session.device = device if device is not None else current.device
                session.metadata = meta if meta is not None else current.metadata
            session.entry = _entry(sid, session)
            if current is not None and current.entry == session.entry:
                return sid, False
            self._sessions[sid] = session
            self._ending.pop(sid, None)  # re-tracked before its end went out: keep it
            self._dirty.add(sid)
            self._flush_due = True
        return sid, True

    def set_status(self, session_id: object, status: object) -> tuple[bool, bool]:
        """Report ``status`` for a tracked session from the next flush on.

        Returns (whether the session is tracked, whether a flush is due). Raises
        InvalidInputError for a malformed id or a status other than
        online/away/busy (``untrack`` ends a session).
        """
        sid = to_session_id(session_id)
        status = validate_status(status)
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return False, False
            if session.status == status:
                return True, False
            session.status = status
            session.entry = _entry(sid, session)
            self._dirty.add(sid)
            self._flush_due = True
        return True, True

    def untrack(self, session_id: object) -> tuple[bool, bool]:
        """Stop tracking a session and end it on the server at the next flush.

        Returns (whether it was tracked, whether a flush is due). Raises
        InvalidInputError for a malformed id.
        """
        sid = to_session_id(session_id)
        with self._lock:
            if self._sessions.pop(sid, None) is None:
                return False, False
            self._dirty.discard(sid)
            self._ending[sid] = self._clock()
            self._flush_due = True
        return True, True

    def tracked(self) -> dict[uuid.UUID, uuid.UUID]:
        """The tracked sessions: session id -> user id (a snapshot)."""
        with self._lock:
            return {sid: session.user_id for sid, session in self._sessions.items()}

    def stats(self) -> TrackerStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counters
            return TrackerStats(
                state=self._state,
                sessions=len(self._sessions),
                pending_ends=len(self._ending),
                rounds=c.rounds,
                batches_sent=c.batches_sent,
                batches_failed=c.batches_failed,
                sessions_beaten=c.sessions_beaten,
                sessions_ended=c.sessions_ended,
                sessions_dropped=c.sessions_dropped,
                retries=c.retries,
                consecutive_failures=c.consecutive_failures,
                last_success=c.last_success,
                last_error=c.last_error,
                interval=self.interval,
                timeout=self.timeout,
            )

    # -- runs (the rules are Engine's) ----------------------------------------------------

    def _reset_for_run(self) -> None:
        self._round_due = False

    def _due_again(self) -> None:
        self._round_due = True

    def _woken(self) -> bool:
        return self._round_due or (self._flush_due and self._state not in _QUIET_STATES)

    def forget_after_fork(self) -> tuple[bool, int]:
        """In a forked child: end the inherited run quietly and drop the inherited
        sessions (they are the parent's connections, which the parent keeps beating).

        Returns whether a run was active and how many sessions were dropped.
        """
        was_running = self._forget_run_after_fork()
        dropped = len(self._sessions)
        self._sessions.clear()
        self._dirty.clear()
        self._ending.clear()
        self._flush_due = False
        return was_running, dropped

    # -- the loop ----------------------------------------------------------------------

    def run(self, control: RunControl) -> Effects[None]:
        """Rounds every interval and prompt flushes in between, until stopped; then
        the end of every tracked session. Never raises PresenceError."""
        next_round = self._clock()
        while not control.stop_requested:
            try:
                if self._round_due or self._clock() >= next_round:
                    started = self._clock()
                    with self._lock:
                        self._round_due = False
                    yield from self._round(control, full=True)
                    if not self._settings_known and self._last_success_at is not None:
                        yield from self._load_settings()
                    next_round = started + self._next_delay(started)
                elif self._flush_due and self._state not in _QUIET_STATES:
                    yield from self._pause(self.config.linger, control, wake=False)
                    yield from self._round(control, full=False)
                yield from self._pause(next_round - self._clock(), control, wake=True)
            except StopRequestedError:
                break
        if not control.quiet:
            yield from self.end_all(control)

    def end_all(self, control: RunControl) -> Effects[None]:
        """End every tracked and untracked-but-not-ended session, within the stop
        deadline, one attempt per call; never raises. Nothing for a superseded run."""
        with self._lock:
            superseded = control.superseded
            ids = list(dict.fromkeys([*self._ending, *self._sessions]))
            failures = self._counters.consecutive_failures
            last_error = self._counters.last_error
        if superseded or not ids or not self.config.end_on_stop:
            return
        if failures and isinstance(
            last_error, AuthenticationError | NotInstalledError | PermissionDeniedError
        ):
            LOGGER.debug("presence: tracker ends nothing after %s", type(last_error).__name__)
            return
        unsent = len(ids)
        for chunk in _chunks(ids, self._batch_size):
            remaining = control.stop_deadline - self._clock()
            if remaining <= 0:
                break
            timeout = min(self.config.request_timeout, remaining)
            try:
                reply = yield Call("presence_track_end", _end_params(chunk), timeout)
                result = parse_track_result(reply, "ended_at")
            except PresenceError as exc:
                self._record_batch_failure(exc)
                LOGGER.warning(
                    "presence: ending %d sessions failed; they go offline after the timeout: %s",
                    len(chunk),
                    exc,
                )
                self._report(exc)
            else:
                self._record_ended(chunk, result)
            unsent -= len(chunk)
        if unsent:
            LOGGER.warning(
                "presence: stop_timeout (%gs) passed with %d sessions not ended; they "
                "go offline after the timeout",
                self.config.stop_timeout,
                unsent,
            )
        else:
            LOGGER.info("presence: tracker ended its sessions")

    # -- rounds and flushes --------------------------------------------------------------

    def _round(self, control: RunControl, *, full: bool) -> Effects[None]:
        """Send the pending ends, then beat every session (``full``) or the changed ones,
        ``batch_size`` per call. Retries of all calls end one interval after the start."""
        deadline = self._clock() + self.interval
        with self._lock:
            self._flush_due = False
            if full:
                ids = list(self._sessions)
                self._dirty.clear()
            else:
                ids = [sid for sid in self._dirty if sid in self._sessions]
                self._dirty.clear()
            sent_before = self._counters.batches_sent
        errors: list[PresenceError] = []
        yield from self._send_ends(control, deadline, errors)
        for chunk in _chunks(ids, self._batch_size):
            try:
                yield from self._beat_part(chunk, control, deadline)
            except PresenceError as exc:
                self._record_batch_failure(exc)
                errors.append(exc)
        sent = self._counters.batches_sent > sent_before
        self._record_round(control, errors, counted=full, sent=sent)

    def _send_ends(
        self, control: RunControl, deadline: float, errors: list[PresenceError]
    ) -> Effects[None]:
        now = self._clock()
        with self._lock:
            expired = [sid for sid, at in self._ending.items() if now - at > self.timeout]
            for sid in expired:  # offline by now anyway: stop trying
                del self._ending[sid]
            ids = list(self._ending)
        if expired:
            LOGGER.debug("presence: gave up ending %d sessions (timed out)", len(expired))
        for chunk in _chunks(ids, self._batch_size):
            try:
                result = yield from self._retry(
                    Call("presence_track_end", _end_params(chunk), self.config.request_timeout),
                    lambda reply: parse_track_result(reply, "ended_at"),
                    control,
                    deadline,
                )
            except PresenceError as exc:
                self._record_batch_failure(exc)
                errors.append(exc)
                if not isinstance(exc, TransientError):
                    with self._lock:  # retrying cannot help: they time out instead
                        for sid in chunk:
                            self._ending.pop(sid, None)
            else:
                self._record_ended(chunk, result)

    def _beat_part(
        self, chunk: list[uuid.UUID], control: RunControl, deadline: float
    ) -> Effects[None]:
        """Beat ``chunk``; on a rejection that names entries, drop them and send the rest
        at once (split in halves while unnamed offenders remain)."""
        parts: deque[list[uuid.UUID]] = deque([chunk])
        while parts:
            part = parts.popleft()
            with self._lock:
                sent = [(sid, self._sessions[sid]) for sid in part if sid in self._sessions]
            if not sent:
                continue
            if len(sent) > self._batch_size:  # the server lowered the limit meanwhile
                ids = [sid for sid, _ in sent]
                parts.extendleft(reversed(list(_chunks(ids, self._batch_size))))
                continue
            call = Call(
                "presence_track_beat",
                {"sessions": [session.entry for _, session in sent]},
                self.config.request_timeout,
            )
            try:
                result = yield from self._retry(
                    call, lambda reply: parse_track_result(reply, "beat_at"), control, deadline
                )
            except RejectedError as exc:
                rest = self._after_rejection(exc, sent)
                if rest is None:
                    raise
                parts.extendleft(reversed(rest))
            else:
                self._record_beats(control, len(sent), result)

    def _after_rejection(
        self, error: RejectedError, sent: list[tuple[uuid.UUID, _Session]]
    ) -> list[list[uuid.UUID]] | None:
        """What to send next after ``error`` rejected ``sent``; None: not about entries."""
        limit = batch_limit(error)
        if limit is not None and limit < len(sent):
            self._batch_size = limit
            LOGGER.warning(
                "presence: the server takes at most %d sessions per call; sending that many",
                self._batch_size,
            )
            return list(_chunks([sid for sid, _ in sent], self._batch_size))
        named = offenders(error, [(sid, session.user_id) for sid, session in sent])
        if named is None:
            return None
        dropped = self._drop(error, named, sent)
        rest = [sid for sid, _ in sent if sid not in dropped]
        if not rest:
            return []
        if named.all_named or len(rest) == 1:
            return [rest]
        half = len(rest) // 2
        return [rest[:half], rest[half:]]

    def _drop(
        self,
        error: RejectedError,
        refused: Offenders,
        sent: list[tuple[uuid.UUID, _Session]],
    ) -> set[uuid.UUID]:
        """Stop tracking what ``error`` refused (every session of an unknown user, not
        only the ones in this call) and report it; returns the ids dropped from ``sent``."""
        in_call = {sid for sid, s in sent if sid in refused.sessions or s.user_id in refused.users}
        sent_as = dict(sent)
        removed: dict[uuid.UUID, uuid.UUID] = {}
        with self._lock:
            for sid, session in list(self._sessions.items()):
                as_sent = sid in in_call and sent_as.get(sid) is session  # not re-tracked since
                if as_sent or session.user_id in refused.users:
                    del self._sessions[sid]
                    self._dirty.discard(sid)
                    removed[sid] = session.user_id
            self._counters.sessions_dropped += len(removed)
        if removed:
            users = tuple(dict.fromkeys(removed.values()))
            reason = error.message.removeprefix("presence: ")
            msg = (
                f"presence: dropped {len(removed)} tracked session(s) the server refused "
                f"({reason}): {', '.join(str(sid) for sid in list(removed)[:5])}"
                f"{', ...' if len(removed) > 5 else ''}"
            )
            report = SessionsRejectedError(
                msg,
                session_ids=tuple(removed),
                user_ids=users,
                code=error.code,
                status=error.status,
                hint=error.hint,
                details=error.details,
            )
            with self._lock:
                self._counters.last_error = report
            LOGGER.warning("%s", report)
            self._report(report)
        return in_call

    # -- bookkeeping ---------------------------------------------------------------------

    def _record_beats(self, control: RunControl, count: int, result: TrackResult) -> None:
        with self._lock:
            c = self._counters
            c.batches_sent += 1
            c.sessions_beaten += count
            c.last_success = result.at
            if not control.superseded:
                self._last_success_at = self._clock()

    def _record_ended(self, chunk: Iterable[uuid.UUID], result: TrackResult) -> None:
        with self._lock:
            for sid in chunk:
                self._ending.pop(sid, None)
            self._counters.batches_sent += 1
            self._counters.sessions_ended += result.count

    def _record_batch_failure(self, error: PresenceError) -> None:
        with self._lock:
            self._counters.batches_failed += 1
            self._counters.last_error = error
            capped = self._hold_off(error)
        if capped is not None:
            LOGGER.warning(
                "presence: the server asked to wait %gs (Retry-After); waiting %.1fs, "
                "the longest wait that keeps the tracked sessions alive",
                *capped,
            )

    def _record_round(
        self, control: RunControl, errors: list[PresenceError], *, counted: bool, sent: bool
    ) -> None:
        """The outcome of a round (``counted``) or a flush: state, counters, reports.

        A flush that sent nothing and failed nothing changes nothing.
        """
        new = state_for(errors[0]) if errors else PresenceState.ONLINE
        with self._lock:
            c = self._counters
            if counted:
                c.rounds += 1
            if errors:
                c.consecutive_failures += 1
            elif counted or sent:
                c.consecutive_failures = 0
                self._not_before = -math.inf
            else:
                return
            current = self._is_current(control)
            nothing_sent = not errors and c.batches_sent == 0  # still STARTING
            old = None if not current or nothing_sent else self._move(new)
        if old is not None and old is not new:
            if errors:
                level = logging.WARNING if new is PresenceState.DEGRADED else logging.ERROR
                LOGGER.log(level, "presence: tracker %s: %s", new, errors[0])
            self._announce(old, new)
        for error in errors:
            self._report(error)


def _end_params(chunk: Iterable[uuid.UUID]) -> dict[str, Any]:
    return {"session_ids": [str(sid) for sid in chunk]}


def request_effects(query: Query[T], timeout: float) -> Effects[T]:
    """One request the app makes through a tracker (e.g. invisible mode for many users):
    one call with the service role, its answer parsed; its error goes to the caller.

    Not retried and no session refresh, unlike the rounds: the app is waiting for the
    answer, and a service role key has no session to refresh. A query without ``fn``
    (nothing to ask) is answered without any I/O.
    """
    if query.fn is None:
        return query.parse(None)
    return query.parse((yield Call(query.fn, query.params, timeout)))
