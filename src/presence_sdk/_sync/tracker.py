"""PresenceTracker: a server's sessions kept alive from a background daemon thread.

A thin shell: the logic is :class:`presence_sdk._tracker_core.Tracker`; its thread
and effects are :class:`presence_sdk._sync._lifecycle.ThreadShell`, as for
:class:`~presence_sdk.PresenceClient`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self, TypeVar

import httpx
from supabase import Client, ClientOptions

from presence_sdk import _privacy as privacy
from presence_sdk._config import TrackerConfig
from presence_sdk._core import (
    ErrorCallback,
    StateCallback,
)
from presence_sdk._http import OwnedClient
from presence_sdk._queries import Query, UserId
from presence_sdk._sync._lifecycle import ThreadShell
from presence_sdk._tracker_core import Tracker, request_effects
from presence_sdk._tracker_shell import TrackerBase

__all__ = ["PresenceTracker"]

T = TypeVar("T")


class PresenceTracker(ThreadShell[Tracker], TrackerBase[Client]):
    """Keeps many users' sessions alive from one server process, in one thread.

    For servers that hold the connections of many users (websockets, chat, games,
    bots): instead of one request per user, every interval one ``presence_track_beat``
    call per ``config.batch_size`` sessions beats everything tracked, with the
    project's **service role** key::

        tracker = PresenceTracker.from_url(SUPABASE_URL, SERVICE_ROLE_KEY).start()
        session = tracker.track(user_id, device="ws")  # on connect: online now
        tracker.set_status(session, "away")
        tracker.untrack(session)  # on disconnect: ended now (offline if it was the last)
        tracker.stop()  # ends every tracked session

    or ``with PresenceTracker.from_url(...) as tracker:``. :meth:`track`,
    :meth:`set_status` and :meth:`untrack` only touch memory (any thread, never
    blocking); the thread sends the changes within ``config.linger``, batched.

    Guarantees, as for :class:`~presence_sdk.PresenceClient`: transient failures are
    retried with backoff; nothing raises into the app from the thread (failures go
    to ``on_error`` and ``stats``); :meth:`stop` returns within
    ``config.stop_timeout``, ending every tracked session first (also from atexit or
    SIGTERM when configured); callbacks run outside locks; a run that outlived its
    ``stop()`` never undoes a newer one; after ``os.fork()`` the child forgets the
    parent's sessions, and a tracker built on the app's supabase client refuses to
    send there (use :meth:`from_url` in pre-fork servers). Sessions the server
    refuses (another user's session id, a user without a ``public.users`` row) are
    dropped and reported as :class:`~presence_sdk.SessionsRejectedError`, so one bad
    entry never stalls the others.

    Args:
        supabase: A supabase ``Client`` built with the service role key.
        config: Timings and policies (:class:`~presence_sdk.TrackerConfig`).
        on_error: Called with each failed call's error (after retries) and each
            :class:`~presence_sdk.SessionsRejectedError`, usually on the tracker
            thread. Exceptions it raises are logged.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`.
    """

    _thread_name = "presence-tracker"
    _thread_failed = "presence: tracker thread failed"
    _stop_gave_up = (
        "presence: tracker stop() gave up waiting after %.1fs for a request in "
        "flight; the thread ends on its own within the request timeout"
    )

    @classmethod
    def from_url(
        cls,
        url: str,
        service_role_key: str,
        *,
        config: TrackerConfig | None = None,
        http_client: httpx.Client | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> PresenceTracker:
        """Build the service-role supabase client too.

        Args:
            url: The project URL.
            service_role_key: The project's service role key (keep it on the server).
            http_client: The httpx client to send with. Default: one the tracker owns,
                with connections of its own in a forked child, released by
                :meth:`close` and when a ``with`` block ends.
        """
        config = config or TrackerConfig()
        http = http_client or OwnedClient(timeout=config.request_timeout)
        options = ClientOptions(httpx_client=http, auto_refresh_token=False, persist_session=False)
        return cls._from_parts(
            lambda: Client(url, service_role_key, options),
            owns_http=http_client is None,
            config=config,
            on_error=on_error,
            on_state_change=on_state_change,
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start the tracker thread (the first round at once). Idempotent, thread-safe.

        Raises ConfigurationError in a forked child if the supabase client is the app's.
        """
        self._start()
        return self

    def stop(self) -> None:
        """Stop, ending every tracked session (and pending untracks) on the server;
        returns within ``config.stop_timeout``. Idempotent, thread-safe.

        The sessions stay registered: a later :meth:`start` beats them again.
        """
        self._stop()

    # -- privacy ---------------------------------------------------------------------

    def set_invisible(self, user_ids: Iterable[UserId], invisible: bool = True) -> int:
        """Turn invisible mode on (or off) for these users, at once, in one request.

        Invisible users show offline to everyone else, with their last seen frozen at
        the moment they went invisible; they and the service role see the truth. It
        applies to the user (all their sessions, tracked here or not), and their
        sessions stay alive, so turning it off is instant. Blocks the calling thread
        (any thread; the tracker need not be running) for up to
        ``config.request_timeout``.

        Args:
            user_ids: The users (UUIDs or their text), at most 10,000 distinct ones.
                An empty iterable asks nothing and returns 0.
            invisible: True to hide them, False to show them again.

        Returns:
            How many users changed (already invisible users, turned invisible again,
            do not count).

        Raises:
            InvalidInputError: at once, sending nothing, for a single id instead of an
                iterable, a malformed id, more than 10,000 users, or a non-bool
                ``invisible``.
            RejectedError: the server refused them (a user without a ``public.users``
                row: code ``23503``); nothing changed.
            PresenceError: the request failed (permission denied without the service
                role key, not installed, timeout, ...); not retried.
        """
        return self._request(privacy.set_invisible_for(user_ids, invisible))

    # -- effects ------------------------------------------------------------------

    def _request(self, query: Query[T]) -> T:
        self._check_usable()
        return self._drive(request_effects(query, self.config.request_timeout), None)
