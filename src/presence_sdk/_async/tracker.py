"""AsyncPresenceTracker: a server's sessions kept alive from an asyncio task.

A thin shell: the logic is :class:`presence_sdk._tracker_core.Tracker`; its task and
effects are :class:`presence_sdk._async._lifecycle.TaskShell`, as for
:class:`~presence_sdk.AsyncPresenceClient`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self, TypeVar

import httpx
from supabase import AsyncClient, AsyncClientOptions

from presence_sdk import _privacy as privacy
from presence_sdk._async._lifecycle import TaskShell
from presence_sdk._config import TrackerConfig
from presence_sdk._core import (
    Effects,
    ErrorCallback,
    RunControl,
    StateCallback,
)
from presence_sdk._http import OwnedAsyncClient
from presence_sdk._queries import Query, UserId
from presence_sdk._tracker_core import Tracker, request_effects
from presence_sdk._tracker_shell import TrackerBase

__all__ = ["AsyncPresenceTracker"]

T = TypeVar("T")


class AsyncPresenceTracker(TaskShell[Tracker], TrackerBase[AsyncClient]):
    """Keeps many users' sessions alive from one server process, in one asyncio task.

    The asyncio twin of :class:`~presence_sdk.PresenceTracker`, over a service-role
    supabase ``AsyncClient``; for ASGI servers (FastAPI, Starlette websockets)::

        async with AsyncPresenceTracker.from_url(URL, SERVICE_ROLE_KEY) as tracker:
            session = tracker.track(user_id)  # on connect
            ...
            tracker.untrack(session)  # on disconnect
        # leaving the block ends every tracked session

    :meth:`track`, :meth:`set_status` and :meth:`untrack` are plain methods (no
    ``await``): they only touch memory, from the event loop or any other thread.
    If the task is cancelled from outside (``asyncio.run()`` cancels what is left when
    the main coroutine returns), it still ends the tracked sessions, within
    ``stop_timeout``. One event loop at a time: starting it in a second loop while it
    runs in a first one raises ConfigurationError. The guarantees of
    :class:`~presence_sdk.PresenceTracker` hold here too.

    Args:
        supabase: A supabase ``AsyncClient`` built with the service role key.
        config: Timings and policies (:class:`~presence_sdk.TrackerConfig`).
        on_error: Called with each failed call's error (after retries) and each
            :class:`~presence_sdk.SessionsRejectedError`, on the event loop's thread.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`.
    """

    _task_name = "presence-tracker"
    _task_failed = "presence: tracker task failed"
    _stop_gave_up = "presence: tracker stop() gave up waiting after %.1fs (network slow?)"
    _kind = "tracker"

    @classmethod
    def from_url(
        cls,
        url: str,
        service_role_key: str,
        *,
        config: TrackerConfig | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> AsyncPresenceTracker:
        """Build the service-role supabase ``AsyncClient`` too (see
        ``PresenceTracker.from_url``)."""
        config = config or TrackerConfig()
        http = http_client or OwnedAsyncClient(timeout=config.request_timeout)
        options = AsyncClientOptions(
            httpx_client=http, auto_refresh_token=False, persist_session=False
        )
        return cls._from_parts(
            lambda: AsyncClient(url, service_role_key, options),
            owns_http=http_client is None,
            config=config,
            on_error=on_error,
            on_state_change=on_state_change,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        """Start the tracker task (the first round at once). Idempotent.

        Raises ConfigurationError in a forked child if the supabase client is the app's,
        and while the tracker runs in another event loop that is still open.
        """
        await self._start()
        return self

    async def stop(self) -> None:
        """Stop, ending every tracked session on the server; returns within
        ``config.stop_timeout`` (the task is cancelled after it). Idempotent."""
        await self._stop()

    # -- privacy ---------------------------------------------------------------------

    async def set_invisible(self, user_ids: Iterable[UserId], invisible: bool = True) -> int:
        """Turn invisible mode on (or off) for these users, in one request; returns how
        many changed. See :meth:`PresenceTracker.set_invisible
        <presence_sdk.PresenceTracker.set_invisible>` (the same arguments, answer and
        errors). Any event loop; the tracker need not be running."""
        return await self._request(privacy.set_invisible_for(user_ids, invisible))

    # -- effects ------------------------------------------------------------------

    def _last_words(self, control: RunControl) -> Effects[None]:
        return self._engine.end_all(control)

    async def _request(self, query: Query[T]) -> T:
        self._check_usable()
        return await self._drive(request_effects(query, self.config.request_timeout), None)
