"""PresenceTracker: a server's sessions kept alive from a background daemon thread.

A thin shell: the logic is :class:`presence_sdk._tracker_core.Tracker`; this module
performs its effects (blocking sends under a total deadline, waits on a
``threading.Event``) on a thread, like :class:`~presence_sdk.PresenceClient`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from supabase import Client, ClientOptions

from presence_sdk import _privacy as privacy
from presence_sdk._config import TrackerConfig
from presence_sdk._core import (
    LOGGER,
    Call,
    Driver,
    Effect,
    Effects,
    ErrorCallback,
    RunControl,
    Sleep,
    StateCallback,
    detached_context,
    holding_callbacks,
)
from presence_sdk._exceptions import PresenceError
from presence_sdk._http import OwnedClient
from presence_sdk._queries import Query, UserId
from presence_sdk._shell import ExitHooks
from presence_sdk._sync._send import send_call
from presence_sdk._tracker_core import request_effects
from presence_sdk._tracker_shell import TrackerBase

__all__ = ["PresenceTracker"]

T = TypeVar("T")


@dataclass(slots=True)
class _Run:
    control: RunControl
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class PresenceTracker(TrackerBase[Client]):
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

    def _init_shell(self) -> None:
        self._lock = threading.RLock()
        self._run: _Run | None = None
        self._stopping: _Run | None = None
        self._hooks = ExitHooks(
            self.stop if self.config.stop_at_exit else None,
            self._stop_then if self.config.handle_sigterm else None,
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
        with holding_callbacks(), self._lock:
            self._check_usable()
            if self._running():
                return self
            run = _Run(self._engine.begin_run())
            run.thread = threading.Thread(
                target=detached_context().run,
                args=(self._main, run),
                name="presence-tracker",
                daemon=True,
            )
            self._run = run
            run.thread.start()
            self._hooks.install()
        return self

    def stop(self) -> None:
        """Stop, ending every tracked session (and pending untracks) on the server;
        returns within ``config.stop_timeout``. Idempotent, thread-safe.

        The sessions stay registered: a later :meth:`start` beats them again.
        """
        with holding_callbacks(), self._lock:
            run, self._run = self._run, None
            first = run is not None
            if run is not None:
                self._hooks.uninstall()
                self._engine.request_stop(run.control)
                run.wake.set()
                self._stopping = run
            else:
                run = self._stopping
            if run is None or run.thread is None:
                return
        if run.thread is threading.current_thread():
            return  # stop() from a callback on the tracker thread
        run.thread.join(self._engine.stop_time_left(run.control))
        if not run.thread.is_alive():
            with self._lock:
                if self._stopping is run:
                    self._stopping = None
        elif first:
            LOGGER.warning(
                "presence: tracker stop() gave up waiting after %.1fs for a request in "
                "flight; the thread ends on its own within the request timeout",
                self.config.stop_timeout,
            )

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

    def close(self) -> None:
        """Stop, and release the connections of the httpx client :meth:`from_url`
        created (a later use opens new ones)."""
        self.stop()
        if self._owns_http:
            self._supabase.postgrest.session.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- effects ------------------------------------------------------------------

    def _running(self) -> bool:
        run = self._run
        return run is not None and run.thread is not None and run.thread.is_alive()

    def _main(self, run: _Run) -> None:
        try:
            self._drive(self._engine.run(run.control), run.wake)
        except BaseException:  # a bug; never let it reach the app's excepthook
            LOGGER.exception("presence: tracker thread failed")
        finally:
            if self._engine.end_run(run.control):
                self._wake()

    def _request(self, query: Query[T]) -> T:
        self._check_usable()
        return self._drive(request_effects(query, self.config.request_timeout), None)

    def _drive(self, effects: Effects[T], wake: threading.Event | None) -> T:
        driver = Driver(effects)
        try:
            for effect in driver:
                try:
                    driver.reply(self._perform(effect, wake))
                except PresenceError as exc:
                    driver.fail(exc)
        finally:
            driver.close()
        return driver.result

    def _perform(self, effect: Effect, wake: threading.Event | None) -> Any:
        if isinstance(effect, Call):
            return send_call(self._supabase, effect)
        if not isinstance(effect, Sleep) or wake is None:  # the core yields nothing else
            msg = f"unexpected effect {effect!r}"
            raise TypeError(msg)
        wake.wait(effect.seconds)
        wake.clear()
        return None

    def _wake(self) -> None:
        run = self._run
        if run is not None:
            run.wake.set()

    def _stop_then(self, pass_on: Callable[[], None]) -> None:
        self.stop()
        pass_on()

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()
        self._run = None
        self._stopping = None
