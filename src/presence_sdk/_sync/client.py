"""PresenceClient: heartbeats from a background daemon thread, over a supabase ``Client``.

A thin shell: the logic is :class:`presence_sdk._heartbeat.Heartbeat`; the thread,
its start and stop and the effects both sync shells perform are
:class:`presence_sdk._sync._lifecycle.ThreadShell`; this module adds the session
refresh and the presence queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Self, TypeVar

import httpx
from supabase import Client, ClientOptions

from presence_sdk import _events as events
from presence_sdk import _privacy as privacy
from presence_sdk import _queries as queries
from presence_sdk._config import PresenceConfig
from presence_sdk._core import (
    AuthCall,
    Effect,
    ErrorCallback,
    Refresh,
    StateCallback,
    holding_callbacks,
    query_effects,
)
from presence_sdk._errors import translate
from presence_sdk._events import EventPage, OnlineDay, SessionRecord
from presence_sdk._heartbeat import Heartbeat
from presence_sdk._http import OwnedClient
from presence_sdk._models import OnlinePage, Presence, StatusCounts
from presence_sdk._shell import ClientBase, client_options
from presence_sdk._sync._deadline import run_with_deadline
from presence_sdk._sync._lifecycle import ThreadShell
from presence_sdk._sync.watcher import PresenceWatcher
from presence_sdk._watch import DEFAULT_POLL_INTERVAL

__all__ = ["PresenceClient"]

T = TypeVar("T")


class PresenceClient(ThreadShell[Heartbeat], ClientBase[Client]):
    """Keeps a signed-in user's presence alive from a background thread.

    Build it from the app's supabase ``Client`` (the user already signed in), start it,
    and forget it: it beats at once and then every interval, retries transient
    failures, refreshes an expired session once, and never raises into the app::

        presence = PresenceClient(supabase)
        presence.start()
        presence.set_status("away")
        presence.stop()  # sends the leave: offline now

    or ``with PresenceClient(supabase):``. The same object answers presence queries
    (:meth:`get`, :meth:`lookup`, :meth:`online_users`...), running or not.

    With ``filterwarnings = error`` build the supabase client with an explicit httpx
    client, e.g. ``create_client(url, key, ClientOptions(httpx_client=httpx.Client()))``:
    supabase-py's default builds one with a deprecated ``timeout`` argument.

    Guarantees (see also the guide's "Client guarantees" page):

    * Every request, including the time to read its whole response, ends within
      ``config.request_timeout``; :meth:`stop` returns within ``config.stop_timeout``.
    * Callbacks run one at a time, in order, outside the client's locks: they may call
      any method of the client (``stop()``, ``start()``, ``beat()``, ``set_status()``).
    * A run that outlived its :meth:`stop` (a request hung) can never undo a newer
      run: it sends no leave, and the newer run beats again when it ends.
    * After ``os.fork()``, a client built by :meth:`from_url` gets new connections in
      the child. One built on the app's supabase client raises ConfigurationError
      there: build a new supabase client and presence client in the child.

    Args:
        supabase: The app's supabase ``Client``.
        config: Timings and policies (:class:`~presence_sdk.PresenceConfig`).
        on_error: Called with the error of each failed heartbeat (after retries) or
            leave, usually on the heartbeat thread. Exceptions it raises are logged.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`
            on each change, usually on the thread that caused it. Exceptions it raises
            are logged.
        refresh_token: Used once when the token expires and the supabase client has
            no stored session (see :meth:`from_url`).
        session_id: This client's presence session id (default: a new random uuid, so
            every client, e.g. every device or tab, is a session of its own; the user
            is online while any of them beats). Exposed as :attr:`session_id`.
        device: Optional device/app label stored with the session (1-64 characters).
        metadata: Optional JSON object stored with the session (at most 1024 bytes).

    Raises InvalidInputError for a malformed ``session_id``, ``device`` or
    ``metadata``. On a database without the sessions migration (0.1 schema) the client
    falls back to the per-user ``presence_heartbeat``/``presence_leave``, with one
    warning.
    """

    _thread_name = "presence-heartbeat"
    _thread_failed = "presence: heartbeat thread failed"
    _stop_gave_up = (
        "presence: stop() gave up waiting after %.1fs for a request in flight; "
        "the heartbeat thread ends on its own within the request timeout"
    )

    @classmethod
    def from_url(
        cls,
        url: str,
        key: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        config: PresenceConfig | None = None,
        http_client: httpx.Client | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
        session_id: uuid.UUID | str | None = None,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PresenceClient:
        """Build the supabase client too: project ``url``, API ``key`` and a session.

        Args:
            access_token: The signed-in user's JWT (sent as ``Authorization``).
            refresh_token: Used once to refresh the session when the token expires.
            http_client: The httpx client to send with. Default: one this client owns,
                with connections of its own in a forked child, released by
                :meth:`close` and when a ``with`` block ends.
            session_id: As for the constructor.
            device: As for the constructor.
            metadata: As for the constructor.
        """
        config = config or PresenceConfig()
        http = http_client or OwnedClient(timeout=config.request_timeout)
        options = client_options(ClientOptions(httpx_client=http), access_token)
        return cls._from_parts(
            lambda: Client(url, key, options),
            owns_http=http_client is None,
            config=config,
            refresh_token=refresh_token,
            on_error=on_error,
            on_state_change=on_state_change,
            session_id=session_id,
            device=device,
            metadata=metadata,
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start the heartbeat thread (first beat at once). Idempotent, thread-safe.

        Raises ConfigurationError in a forked child if the supabase client is the
        app's (see the class docstring).
        """
        self._start()
        return self

    def stop(self) -> None:
        """Stop beating and send the leave; returns within ``config.stop_timeout``.

        Idempotent and thread-safe, also from a callback. If a request hangs, returns
        after the bound anyway; the thread then ends on its own, within
        ``request_timeout``, and a later :meth:`start` cannot be undone by it.
        """
        self._stop()

    def beat(self) -> datetime | None:
        """Send one heartbeat now, in this thread; return the server's time of it.

        For apps that keep no background thread (serverless, cron): same retries and
        session refresh as the thread, and ``stats`` are updated. Raises the
        :class:`~presence_sdk.PresenceError` of a failed heartbeat, and RuntimeError
        while the heartbeat thread runs (use :meth:`set_status` to beat at once).
        """
        with holding_callbacks(), self._lock:
            self._check_usable()
            if self._running():
                msg = "the heartbeat thread is running; use set_status() for a beat now"
                raise RuntimeError(msg)
            return self._drive(self._engine.beat_once(), None)

    # -- presence queries ---------------------------------------------------------

    def get(self, user_id: queries.UserId) -> Presence:
        """The presence of one user (see :func:`presence_sdk._queries.get`)."""
        return self._query(queries.get(user_id))

    def is_online(self, user_id: queries.UserId) -> bool:
        """Whether one user is online now (false for unknown or invisible users)."""
        return self._query(queries.is_online(user_id))

    def lookup(self, user_ids: Iterable[queries.UserId]) -> dict[uuid.UUID, Presence]:
        """Many users' presence in one round trip (see :func:`presence_sdk._queries.lookup`)."""
        return self._query(queries.lookup(user_ids))

    def online_users(self, limit: int = 100, after: queries.UserId | None = None) -> OnlinePage:
        """One page of online users by id; pass ``page.next_after`` as ``after``."""
        return self._query(queries.online_users(limit, after))

    def counts(self) -> StatusCounts:
        """Number of visible users per effective status."""
        return self._query(queries.counts())

    # -- events and history --------------------------------------------------------

    def watch(
        self,
        after_id: int = 0,
        *,
        dsn: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = 100,
    ) -> PresenceWatcher:
        """Presence events as they happen: ``for event in presence.watch(saved_id):``.

        Polls ``presence_events_since`` through this client (as its user: the events
        of the users they may see, and their own sessions) every ``poll_interval``
        seconds, or LISTENs on a direct connection when ``dsn`` is given. Resumes after
        ``after_id`` with no event lost or repeated. See
        :class:`~presence_sdk.PresenceWatcher`.
        """
        if dsn is not None:
            return PresenceWatcher(
                dsn=dsn,
                after_id=after_id,
                poll_interval=poll_interval,
                page_size=page_size,
                request_timeout=self.config.request_timeout,
            )
        return PresenceWatcher._over(
            self._query, after_id=after_id, poll_interval=poll_interval, page_size=page_size
        )

    def events_since(self, after_id: int = 0, limit: int = 100) -> EventPage:
        """One page of the event log after ``after_id``; resume from ``page.last_id``."""
        return self._query(events.events_since(after_id, limit))

    def session_history(
        self,
        user_id: queries.UserId,
        start: datetime,
        end: datetime | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]:
        """A user's sessions overlapping ``[start, end)`` (your own; service key: anyone's)."""
        return self._query(events.session_history(user_id, start, end, limit))

    def online_per_day(
        self,
        user_id: queries.UserId,
        first_day: date,
        last_day: date,
        time_zone: str = "UTC",
    ) -> list[OnlineDay]:
        """Time a user was online on each day (calendar days in ``time_zone``)."""
        return self._query(events.online_per_day(user_id, first_day, last_day, time_zone))

    # -- privacy (the signed-in user's own settings) -----------------------------------

    def set_invisible(self, invisible: bool = True) -> privacy.PrivacySettings:
        """Turn invisible mode on (or off): others see this user offline, with last
        seen frozen at this moment; heartbeats go on, so turning it off is instant."""
        return self._query(privacy.set_invisible(invisible))

    def set_visibility(
        self,
        *,
        presence: privacy.Visibility | None = None,
        last_seen: privacy.Visibility | None = None,
    ) -> privacy.PrivacySettings:
        """Who may see this user's presence and last seen: ``"everyone"``,
        ``"contacts"`` (the app's hook decides) or ``"nobody"``; None keeps a setting."""
        return self._query(privacy.set_visibility(presence=presence, last_seen=last_seen))

    def privacy(self) -> privacy.PrivacySettings:
        """This user's privacy settings (whether they are invisible, and since when)."""
        return self._query(privacy.my_privacy())

    # -- effects ------------------------------------------------------------------

    def _query(self, query: queries.Query[T]) -> T:
        self._check_usable()
        return self._drive(query_effects(query, self.config.request_timeout), None)

    def _perform_other(self, effect: Effect) -> Any:
        if isinstance(effect, Refresh):
            return self._drive(self._refresh_effects(effect), None)
        if isinstance(effect, AuthCall):
            return self._auth(effect)
        return super()._perform_other(effect)

    def _auth(self, call: AuthCall) -> Any:
        try:
            method = getattr(self._supabase.auth, call.method)
            return run_with_deadline(lambda job: method(*call.args), self.config.request_timeout)
        except Exception as exc:
            raise translate(exc) from exc
