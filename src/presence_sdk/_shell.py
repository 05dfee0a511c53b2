"""What the sync and async clients and trackers share besides the core: construction,
fork safety and the atexit/SIGTERM hooks (:class:`ShellBase`, :class:`ExitHooks`), and
the clients' properties and session refresh (:class:`ClientBase`).

Nothing here performs network I/O; the subclasses in :mod:`presence_sdk._sync` and
:mod:`presence_sdk._async` only add the parts that differ (thread vs task, blocking vs
awaited sends).
"""

from __future__ import annotations

import atexit
import copy
import os
import signal
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Generic, Protocol, Self, TypeVar

from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions

from presence_sdk._config import PresenceConfig, TrackerConfig
from presence_sdk._core import (
    LOGGER,
    Effects,
    ErrorCallback,
    PresenceState,
    PresenceStats,
    Refresh,
    StateCallback,
)
from presence_sdk._engine import Engine
from presence_sdk._exceptions import ConfigurationError
from presence_sdk._heartbeat import Heartbeat
from presence_sdk._wire import refresh_effects

__all__ = [
    "ClientBase",
    "ExitHooks",
    "ForkAware",
    "ShellBase",
    "client_options",
    "forked_client_message",
    "notify_after_fork",
]

S = TypeVar("S", Client, AsyncClient)
E = TypeVar("E", bound=Engine[Any])
OptionsT = TypeVar("OptionsT", ClientOptions, AsyncClientOptions)

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def client_options(options: OptionsT, access_token: str | None) -> OptionsT:
    """``options`` for a supabase client that acts as the user of ``access_token``.

    No auth storage or refresh timer of its own: the presence client refreshes on 401.
    """
    options.auto_refresh_token = False
    options.persist_session = False
    if access_token:
        options.headers["Authorization"] = f"Bearer {access_token}"
    return options


class ExitHooks:
    """The optional atexit and SIGTERM hooks of one client, installed while it runs.

    SIGTERM is chained, never stolen: on the signal the client stops (sending its
    leave), then the handler that was installed before runs; if that was the default
    action, the signal is re-raised with it, so the process still ends as it would
    have. A SIGTERM the app ignores stays ignored.

    Args:
        at_exit: Called from ``atexit`` (None: no atexit hook).
        on_sigterm: Called from the SIGTERM handler with the continuation that passes
            the signal on (None: no SIGTERM hook). It must call the continuation once
            the client has stopped.
    """

    def __init__(
        self,
        at_exit: Callable[[], object] | None,
        on_sigterm: Callable[[Callable[[], None]], object] | None,
    ) -> None:
        self._at_exit = at_exit
        self._on_sigterm = on_sigterm
        self._handler = self._handle  # one bound method, so identity checks work
        self._previous: SignalHandler = None
        self._installed = False

    def install(self) -> None:
        """Register the hooks (call on start)."""
        if self._at_exit is not None:
            atexit.register(self._at_exit)
        if self._on_sigterm is None or self._installed:
            return
        if threading.current_thread() is not threading.main_thread():
            LOGGER.warning("presence: handle_sigterm needs start() on the main thread; ignored")
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN:
            LOGGER.info("presence: SIGTERM is ignored by this process; not handling it")
            return
        self._previous = previous
        signal.signal(signal.SIGTERM, self._handler)
        self._installed = True

    def uninstall(self) -> None:
        """Remove the hooks (call on stop); the previous SIGTERM handler comes back."""
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
        if not self._installed:
            return
        self._installed = False
        try:
            if signal.getsignal(signal.SIGTERM) is self._handler:
                signal.signal(signal.SIGTERM, self._previous)
        except ValueError:  # not on the main thread: our handler stays, chaining on
            LOGGER.debug("presence: SIGTERM handler left in place (stop() off the main thread)")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous

        def pass_on() -> None:
            if callable(previous):
                previous(signum, frame)
            elif previous in (signal.SIG_DFL, None):
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        if self._on_sigterm is None:
            pass_on()
        else:
            self._on_sigterm(pass_on)


class ForkAware(Protocol):
    """An object that must adjust itself in a forked child (clients, trackers)."""

    def _after_fork(self) -> None: ...


_LIVE_CLIENTS: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def notify_after_fork(owner: ForkAware) -> None:
    """Call ``owner._after_fork()`` in every forked child while ``owner`` lives."""
    _LIVE_CLIENTS.add(owner)


def _after_fork_in_child() -> None:
    for client in list(_LIVE_CLIENTS):
        client._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_client_message(kind: str, parent_pid: int) -> str:
    """Why a client/tracker built on the app's supabase client refuses I/O in a child."""
    return (
        f"this {kind} was built in process {parent_pid} on the app's supabase client, and "
        f"this process (pid {os.getpid()}) is a fork of it: the two would share that "
        "client's pooled connections. In the child, build a new supabase client and a "
        f"new {kind} on it, or use {kind}.from_url(...), whose connections are renewed "
        "after a fork"
    )


ConfigT = TypeVar("ConfigT", PresenceConfig, TrackerConfig)


def checked_options(
    config: ConfigT | None,
    config_type: type[ConfigT],
    on_error: ErrorCallback | None,
    on_state_change: StateCallback | None,
) -> ConfigT:
    """``config`` (None: the defaults), after checking it and the callbacks' types."""
    if config is None:
        config = config_type()
    elif not isinstance(config, config_type):
        msg = f"config must be a {config_type.__name__}, not {type(config).__name__}"
        raise ConfigurationError(msg)
    for name, callback in (("on_error", on_error), ("on_state_change", on_state_change)):
        if callback is not None and not callable(callback):
            msg = f"{name} must be callable, not {callback!r}"
            raise ConfigurationError(msg)
    return config


def build_supabase(make_supabase: Callable[[], S]) -> S:
    """``from_url``'s supabase client; ConfigurationError if it cannot be built."""
    try:
        return make_supabase()
    except Exception as exc:
        msg = f"cannot build a supabase client: {exc}"
        raise ConfigurationError(msg) from exc


class ShellBase(Generic[S, E]):
    """What every shell holds: the supabase client, the engine, and the fork rules.

    The flavour's lifecycle (:mod:`presence_sdk._sync._lifecycle`,
    :mod:`presence_sdk._async._lifecycle`) defines :meth:`_init_shell`,
    :meth:`_wake` and :meth:`_reset_after_fork`.
    """

    _supabase: S
    _engine: E

    def _attach(self, supabase: S, engine: E) -> None:
        """Hold ``supabase`` and ``engine``, set up the shell, follow forks."""
        self._supabase = supabase
        self._engine = engine
        self._owns_http = False
        self._forked_from: int | None = None  # parent's pid, in a forked child
        self._init_shell()
        notify_after_fork(self)

    def _init_shell(self) -> None:
        """Set up what the sync/async shell needs (locks, run slot, exit hooks)."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake the running loop (so it notices new work or a stop)."""
        raise NotImplementedError

    def _reset_after_fork(self) -> None:
        """Drop the references to the parent's thread/task and locks."""
        raise NotImplementedError

    def _after_fork(self) -> None:
        raise NotImplementedError

    def _note_fork(self) -> None:
        """In a forked child: remember the parent, whose supabase client is not ours."""
        if not self._owns_http and self._forked_from is None:
            self._forked_from = os.getppid()

    def _check_usable(self) -> None:
        """Refuse I/O in a forked child over a supabase client the app supplied.

        Its httpx pool may hold keep-alive connections opened by the parent; the child
        would send on the parent's sockets (garbled requests, each process reading
        the other's responses). Pools of clients built by ``from_url`` are replaced in
        the child instead (:mod:`presence_sdk._http`).
        """
        if self._forked_from is None:
            return
        raise ConfigurationError(forked_client_message(type(self).__name__, self._forked_from))


class ClientBase(ShellBase[S, Heartbeat]):
    """Construction, properties, session refresh and fork handling of both clients.

    Args:
        supabase: The app's supabase client (``Client`` or ``AsyncClient``).
        config: Timings and policies (:class:`~presence_sdk.PresenceConfig`).
        on_error: Called with the error of each failed heartbeat (after retries) or
            leave. Exceptions it raises are logged, never propagated.
        on_state_change: Called with ``(old, new)`` :class:`~presence_sdk.PresenceState`
            on every change. Exceptions it raises are logged, never propagated.
        refresh_token: Refresh token to use, once, when the access token expires and
            the supabase client has no stored session (e.g. a token passed in a header).
        session_id: The id of this client's presence session (a UUID). Default: a new
            random one per client, so each client (device, tab) is its own session.
        device: Optional label of the device or app (1 to 64 characters), stored with
            the session and shown in ``presence_my_sessions()``.
        metadata: Optional JSON object stored with the session (at most 1024 bytes).
    """

    def __init__(
        self,
        supabase: S,
        *,
        config: PresenceConfig | None = None,
        on_error: ErrorCallback | None = None,
        on_state_change: StateCallback | None = None,
        refresh_token: str | None = None,
        session_id: uuid.UUID | str | None = None,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        config = checked_options(config, PresenceConfig, on_error, on_state_change)
        engine = Heartbeat(
            config,
            on_error=on_error,
            on_state_change=on_state_change,
            session_id=session_id,
            device=device,
            metadata=metadata,
        )
        self._refresh_token = refresh_token
        self._attach(supabase, engine)

    @classmethod
    def _from_parts(
        cls,
        make_supabase: Callable[[], S],
        *,
        owns_http: bool,
        config: PresenceConfig,
        refresh_token: str | None,
        on_error: ErrorCallback | None,
        on_state_change: StateCallback | None,
        session_id: uuid.UUID | str | None = None,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Self:
        """``from_url``'s common part: build the supabase client, then the client."""
        client = cls(
            build_supabase(make_supabase),
            config=config,
            on_error=on_error,
            on_state_change=on_state_change,
            refresh_token=refresh_token,
            session_id=session_id,
            device=device,
            metadata=metadata,
        )
        client._owns_http = owns_http
        return client

    @property
    def supabase(self) -> S:
        """The supabase client used for every request."""
        return self._supabase

    @property
    def config(self) -> PresenceConfig:
        """The configuration (immutable)."""
        return self._engine.config

    @property
    def session_id(self) -> uuid.UUID:
        """The id of this client's presence session (one per client; a forked child
        gets a new one)."""
        return self._engine.session_id

    @property
    def device(self) -> str | None:
        """The device label sent with each beat (None: none)."""
        return self._engine.device

    @property
    def metadata(self) -> dict[str, Any] | None:
        """A copy of the metadata sent with each beat (None: none)."""
        metadata = self._engine.metadata
        return None if metadata is None else copy.deepcopy(metadata)

    @property
    def state(self) -> PresenceState:
        """The current :class:`PresenceState`."""
        return self._engine.state

    @property
    def status(self) -> str:
        """The status this client reports: ``online``, ``away`` or ``busy``."""
        return self._engine.status

    @property
    def stats(self) -> PresenceStats:
        """A snapshot of the counters: beats sent/failed, last success/error, state."""
        return self._engine.stats()

    def set_status(self, status: str) -> None:
        """Report ``status`` (``online``, ``away`` or ``busy``) with a heartbeat now.

        Raises InvalidInputError before any I/O for any other value (``stop()`` is how
        a client goes offline). Before ``start()``, it sets the status to start with.
        """
        if self._engine.set_status(status):
            self._wake()

    def _after_fork(self) -> None:
        was_running = self._engine.forget_run_after_fork()
        self._reset_after_fork()
        self._note_fork()
        if was_running:
            LOGGER.warning(
                "presence: process forked while the heartbeat ran; this child (pid %d) "
                "sends no heartbeats until it calls start()%s",
                os.getpid(),
                "" if self._owns_http else " on a client built in the child",
            )

    def _refresh_effects(self, effect: Refresh) -> Effects[None]:
        """The steps of a session refresh (performed as AuthCall effects)."""
        stale = effect.stale_authorization
        if (yield from refresh_effects(self._supabase, stale, self._refresh_token)):
            self._refresh_token = None  # used: the stored session has the new one

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} session={self.session_id} state={self.state} "
            f"status={self.status}>"
        )
