"""Blocking calls under a total deadline, for the sync client.

httpx's timeouts bound each network operation (connect, every read, every write), not
a whole request: a server that trickles its response a byte a second never trips them
and would hold the heartbeat thread for minutes. (The async client wraps its sends in
``asyncio.timeout``; threads have no such thing.) So the sync client runs each request
on a pooled daemon *sender* thread and waits for it at most until its deadline.

A request given up on is aborted: :meth:`Job.watch` learns the socket the request
uses (from httpcore's ``trace`` hook when it opens a connection, and from the
response's ``network_stream`` once the headers arrived), and :meth:`Job.abandon`
shuts that socket down, which ends a blocked read at once, so the sender is free
again and the connection is dropped, never reused. The one case it cannot abort is a
reused keep-alive connection whose response *headers* trickle; its sender stays busy
until the server lets go (each read is still bounded by httpx's read timeout), and
after :data:`MAX_STUCK` of those new requests fail fast instead of piling up threads.

Idle senders exit after :data:`IDLE_SECONDS`; a forked child starts with none.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import queue
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from presence_sdk._exceptions import TransientError

__all__ = ["IDLE_SECONDS", "MAX_STUCK", "Job", "run_with_deadline"]

T = TypeVar("T")

#: A sender thread with nothing to do for this long exits.
IDLE_SECONDS = 30.0

#: Given-up requests that may still occupy a sender before new requests fail fast.
MAX_STUCK = 8

# httpcore's trace events whose return value is the network stream just opened.
_STREAM_EVENTS = frozenset(
    {
        "connection.connect_tcp.complete",
        "connection.connect_unix_socket.complete",
        "connection.start_tls.complete",
    }
)


class Job(Generic[T]):
    """One call running on a sender thread, which the caller may abandon."""

    __slots__ = ("_abandoned", "_ctx", "_finished", "_fn", "_lock", "_outbox", "_stream")

    def __init__(self, fn: Callable[[Job[T]], T]) -> None:
        self._fn = fn
        self._ctx = contextvars.copy_context()  # the caller's context (tracing, ...)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._abandoned = False
        self._finished = False
        # The outcome travels in a SimpleQueue: its C-level get() wakes the waiting
        # caller several times faster than a threading.Event.
        self._outbox: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def watch(self, stream: Any) -> None:
        """The httpcore network stream the call uses (shut at once if abandoned)."""
        if stream is None:
            return
        with self._lock:
            self._stream = stream
            abandoned = self._abandoned
        if abandoned:
            _shut(stream)

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore ``trace`` extension: watch each connection the request opens."""
        if event in _STREAM_EVENTS:
            self.watch(info.get("return_value"))

    def run(self) -> bool:
        """Run the call (on a sender); True if the caller had abandoned it."""
        try:
            outcome: tuple[bool, Any] = (True, self._ctx.run(self._fn, self))
        except BaseException as exc:  # handed to the caller, who re-raises it
            outcome = (False, exc)
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
        self._outbox.put(outcome)
        return abandoned

    def result(self, timeout: float) -> T:
        """Wait for the call's result (or error) at most ``timeout`` seconds; then
        abort it and raise TimeoutError."""
        try:
            ok, value = self._outbox.get(timeout=timeout)
        except queue.Empty:
            if self._abandon():
                msg = f"no complete response within {timeout:g}s"
                raise TimeoutError(msg) from None
            ok, value = self._outbox.get()  # it finished just now
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _abandon(self) -> bool:
        """Give up on the call and abort it; False if it had finished already."""
        with self._lock:
            if self._finished:
                return False
            self._abandoned = True
            stream = self._stream
        _SENDERS.stuck(+1)
        if stream is not None:
            _shut(stream)
        return True


def run_with_deadline(fn: Callable[[Job[T]], T], timeout: float) -> T:
    """Run ``fn(job)`` on a sender thread; return its result or raise its error.

    Raises TimeoutError after ``timeout`` seconds (the call is aborted, see the module
    docstring), and TransientError while too many given-up calls still hang.
    """
    job: Job[T] = Job(fn)
    if not _SENDERS.submit(job):  # no thread can be started (interpreter shutdown)
        return fn(job)
    return job.result(timeout)


class _Sender:
    """One daemon thread running jobs; parks in the pool's idle list between them."""

    def __init__(self, pool: _Senders) -> None:
        self.pool = pool
        self.inbox: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()

    def main(self, job: Job[Any] | None) -> None:
        while job is not None:
            if job.run():
                self.pool.stuck(-1)
            job = None  # drop the finished job (its client, its response) while idle
            job = self.pool.next_job(self)


class _Senders:
    """The process's sender threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Sender] = []
        self._stuck = 0

    def submit(self, job: Job[Any]) -> bool:
        """Hand ``job`` to an idle sender or a new one; False if none can be started."""
        with self._lock:
            if self._stuck >= MAX_STUCK:
                msg = (
                    f"{self._stuck} earlier requests to the server still hang after their "
                    "timeout; not sending more until they end"
                )
                raise TransientError(msg)
            sender = self._idle.pop() if self._idle else None
        if sender is not None:
            sender.inbox.put(job)
            return True
        sender = _Sender(self)
        thread = threading.Thread(
            target=sender.main, args=(job,), name="presence-sender", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            return False
        return True

    def next_job(self, sender: _Sender) -> Job[Any] | None:
        """Park ``sender`` until a job comes; None: idle too long, the thread ends."""
        with self._lock:
            self._idle.append(sender)
        try:
            return sender.inbox.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with self._lock:
                if sender in self._idle:
                    self._idle.remove(sender)
                    return None
            return sender.inbox.get()  # picked just now: its job is on the way

    def stuck(self, delta: int) -> None:
        with self._lock:
            self._stuck += delta

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's senders do not exist here."""
        self._lock = threading.Lock()
        self._idle = []
        self._stuck = 0


def _shut(stream: Any) -> None:
    """Shut down the socket under an httpcore network stream (ends a blocked read)."""
    try:
        sock = stream.get_extra_info("socket")
    except Exception:  # a stream without the extra info (a test double)
        return
    if isinstance(sock, socket.socket):
        # socket.socket's own shutdown, not SSLSocket's (which would also drop the TLS
        # object under the feet of the thread reading from it). OSError: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_SENDERS = _Senders()
os.register_at_fork(after_in_child=_SENDERS.reset_after_fork)
