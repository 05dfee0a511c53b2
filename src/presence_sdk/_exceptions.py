"""The exceptions presence_sdk raises, all rooted at :class:`PresenceError`.

Tree::

    PresenceError
    ├── ConfigurationError          (also ValueError) invalid client configuration
    ├── InvalidInputError           (also ValueError) bad argument, raised before any I/O
    ├── RequestError                a call to Supabase/PostgreSQL failed
    │   ├── TransientError          worth retrying: network, timeouts, 5xx, 429
    │   │   └── RateLimitedError    HTTP 429 (``retry_after`` seconds, if the server said)
    │   ├── AuthenticationError     no/expired/invalid credentials (401, 28000, PGRST301)
    │   ├── PermissionDeniedError   the role may not do this (403 / 42501)
    │   ├── NotInstalledError       presence SQL missing (PGRST202, 42883): run migrations
    │   └── RejectedError           the server refused the request (other 4xx, e.g. 22023)
    │       └── SessionsRejectedError   a tracker dropped sessions the server refused
    ├── SetupError                  verify_setup() found problems (``report`` attribute)
    └── MigrationError              applying or rolling back migrations failed

Lower-level errors (httpx transport errors, postgrest ``APIError``, psycopg errors) are
translated into this tree in one place, :mod:`presence_sdk._errors`; the original is
kept as ``__cause__``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from presence_sdk._models import SetupReport

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "InvalidInputError",
    "MigrationError",
    "NotInstalledError",
    "PermissionDeniedError",
    "PresenceError",
    "RateLimitedError",
    "RejectedError",
    "RequestError",
    "SessionsRejectedError",
    "SetupError",
    "TransientError",
]


class PresenceError(Exception):
    """Base class of every exception presence_sdk raises on purpose."""


class ConfigurationError(PresenceError, ValueError):
    """A client or CLI setting is invalid (raised at construction, before any I/O)."""


class InvalidInputError(PresenceError, ValueError):
    """An argument is invalid (status, user id, limit...); nothing was sent or changed."""


class RequestError(PresenceError):
    """A request to Supabase (HTTP) or PostgreSQL (direct) failed.

    Attributes:
        code: PostgREST/PostgreSQL error code (``"PGRST202"``, ``"22023"``...) or
            None for transport errors.
        status: HTTP status, or None when no HTTP response was received.
        hint: The server's hint, if any.
        details: The server's details, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        parts = [self.message]
        if self.code or self.status:
            parts.append(f"({', '.join(str(p) for p in (self.status, self.code) if p)})")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return " ".join(parts)


class TransientError(RequestError):
    """A failure that may go away on retry: connection errors, timeouts, HTTP 5xx/429."""


class RateLimitedError(TransientError):
    """HTTP 429. ``retry_after`` is the delay the server asked for, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = 429,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, hint=hint, details=details)
        self.retry_after = retry_after


class AuthenticationError(RequestError):
    """Missing, expired or invalid credentials (HTTP 401, SQLSTATE 28000, PGRST301)."""


class PermissionDeniedError(RequestError):
    """The caller's role may not do this (HTTP 403, SQLSTATE 42501)."""


class NotInstalledError(RequestError):
    """The presence SQL is not installed where the client points (PGRST202, 42883).

    Apply the migrations (``presence-sdk migrate`` or ``supabase db push``) and run
    :func:`presence_sdk.verify_setup` to check the whole setup.
    """


class RejectedError(RequestError):
    """The server refused the request for another reason (e.g. 22023 invalid value)."""


class SessionsRejectedError(RejectedError):
    """The server refused some sessions a tracker beats, so the tracker dropped them.

    Reported through the tracker's ``on_error`` (never raised into the app): a batch
    call named sessions that belong to another user (``PT409``), users without a
    ``public.users`` row (``23503``) or entries the server found invalid (``22023``).
    The tracker stops tracking exactly those sessions and beats the others at once.

    Attributes:
        session_ids: The sessions dropped (no longer tracked).
        user_ids: Their users.
    """

    def __init__(
        self,
        message: str,
        *,
        session_ids: tuple[uuid.UUID, ...],
        user_ids: tuple[uuid.UUID, ...],
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, hint=hint, details=details)
        self.session_ids = session_ids
        self.user_ids = user_ids


class SetupError(PresenceError):
    """:func:`presence_sdk.verify_setup` found problems; ``report`` lists them."""

    def __init__(self, report: SetupReport) -> None:
        super().__init__(str(report))
        self.report = report


class MigrationError(PresenceError):
    """Applying or rolling back the presence migrations failed."""
