"""What the sync and async trackers share: construction, the tracking API, properties
and fork handling. No network I/O here (see :mod:`presence_sdk._tracker_core` for the
logic, :mod:`presence_sdk._sync.tracker` and :mod:`presence_sdk._async.tracker` for
the thread and the task).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

from supabase import AsyncClient, Client

from presence_sdk._config import TrackerConfig
from presence_sdk._core import LOGGER, ErrorCallback, PresenceState, StateCallback
from presence_sdk._queries import UserId
from presence_sdk._shell import ShellBase, build_supabase, checked_options
from presence_sdk._tracker_core import Tracker, TrackerStats

__all__ = ["TrackerBase"]

S = TypeVar("S", Client, AsyncClient)


class TrackerBase(ShellBase[S, Tracker]):
    """Construction, tracking API, properties and fork handling of both trackers.

    Args:
        supabase: A supabase ``Client``/``AsyncClient`` built with the project's
            **service role** key (the batch RPCs refuse every other role).
        config: Timings and policies (:class:`~presence_sdk.TrackerConfig`).
        on_error: Called with the error of each failed batch call (after retries),
            failed end, and :class:`~presence_sdk.SessionsRejectedError` for sessions
            the server refused (dropped). Exceptions it raises are logged.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`
            on every change. Exceptions it raises are logged.
    """

    def __init__(
        self,
        supabase: S,
        *,
        config: TrackerConfig | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> None:
        config = checked_options(config, TrackerConfig, on_error, on_state_change)
        engine = Tracker(config, on_error=on_error, on_state_change=on_state_change)
        self._attach(supabase, engine)

    @classmethod
    def _from_parts(
        cls,
        make_supabase: Callable[[], S],
        *,
        owns_http: bool,
        config: TrackerConfig,
        on_error: ErrorCallback | None,
        on_state_change: StateCallback | None,
    ) -> Self:
        supabase = build_supabase(make_supabase)
        tracker = cls(supabase, config=config, on_error=on_error, on_state_change=on_state_change)
        tracker._owns_http = owns_http
        return tracker

    # -- tracking (any thread, never blocks on I/O) ------------------------------------

    def track(
        self,
        user_id: UserId,
        *,
        session_id: uuid.UUID | str | None = None,
        status: str = "online",
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> uuid.UUID:
        """Track one session (a connection) of ``user_id``; return its session id.

        The session is beaten at the next prompt flush (within ``config.linger`` while
        running, batched with other changes), then every interval. Pass
        ``session_id`` to choose the id (e.g. one the client sent); by default a new
        random one. Tracking a tracked session again (same user) updates its status,
        device and metadata (None keeps them).

        Raises InvalidInputError at once, changing nothing, for a malformed user or
        session id, a status other than online/away/busy, a device label outside 1-64
        characters, metadata that is not a JSON object of at most 1024 bytes, or a
        session id tracked for another user.
        """
        sid, flush = self._engine.track(
            user_id, session_id=session_id, status=status, device=device, metadata=metadata
        )
        if flush:
            self._wake()
        return sid

    def set_status(self, session_id: uuid.UUID | str, status: str) -> bool:
        """Report ``status`` (online, away or busy) for a tracked session, promptly.

        Returns False if the session is not tracked (never was, untracked, or dropped
        after the server refused it). Raises InvalidInputError for a malformed id or
        status.
        """
        tracked, flush = self._engine.set_status(session_id, status)
        if flush:
            self._wake()
        return tracked

    def untrack(self, session_id: uuid.UUID | str) -> bool:
        """Stop tracking a session and end it on the server promptly (offline now if it
        was the user's last one). Returns False if it was not tracked. Raises
        InvalidInputError for a malformed id."""
        tracked, flush = self._engine.untrack(session_id)
        if flush:
            self._wake()
        return tracked

    def tracked(self) -> dict[uuid.UUID, uuid.UUID]:
        """A snapshot of the tracked sessions: session id -> user id."""
        return self._engine.tracked()

    # -- properties ----------------------------------------------------------------------

    @property
    def supabase(self) -> S:
        """The (service role) supabase client used for every request."""
        return self._supabase

    @property
    def config(self) -> TrackerConfig:
        """The configuration (immutable)."""
        return self._engine.config

    @property
    def state(self) -> PresenceState:
        """The current :class:`~presence_sdk.PresenceState`."""
        return self._engine.state

    @property
    def stats(self) -> TrackerStats:
        """A snapshot of the counters (:class:`~presence_sdk.TrackerStats`)."""
        return self._engine.stats()

    # -- fork ----------------------------------------------------------------------------

    def _after_fork(self) -> None:
        was_running, dropped = self._engine.forget_after_fork()
        self._reset_after_fork()
        self._note_fork()
        if was_running or dropped:
            LOGGER.warning(
                "presence: process forked while the tracker held %d sessions; they stay "
                "the parent's: this child (pid %d) tracks nothing until it tracks its own%s",
                dropped,
                os.getpid(),
                "" if self._owns_http else " (on a tracker built in the child)",
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self.state} sessions={self.stats.sessions}>"
