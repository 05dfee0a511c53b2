"""Translate lower-level errors into the :class:`~presence_sdk.PresenceError` tree.

The one place that knows what httpx, postgrest-py (``APIError``) and psycopg errors
mean for presence. Callers do ``raise translate(exc) from exc``.

postgrest-py turns a JSON error body into ``APIError`` with PostgREST's ``code`` but
without the HTTP status; a non-JSON body (an HTML 502 page from a proxy) becomes an
``APIError`` whose code is the status as a string. Both are handled here; transport
errors (connect, read timeouts) are not wrapped by supabase-py and arrive as httpx
exceptions.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Mapping

import httpx
import psycopg
from postgrest.exceptions import APIError

from presence_sdk._exceptions import (
    AuthenticationError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    RateLimitedError,
    RejectedError,
    RequestError,
    TransientError,
)

__all__ = [
    "from_api_error",
    "from_http_status",
    "from_httpx_error",
    "from_psycopg_error",
    "from_sqlstate",
    "parse_retry_after",
    "translate",
]

_NOT_INSTALLED_HINT = (
    "The presence SQL is not installed here: apply the migrations "
    "(`presence-sdk migrate` or `supabase db push`) and run presence_sdk.verify_setup()."
)

# SQLSTATE classes that describe the server's state, not the request: retrying helps.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def from_http_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    hint: str | None = None,
    details: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> RequestError:
    """Classify an HTTP error response by its status (and code, when there is one)."""
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        return RateLimitedError(
            message, retry_after=retry_after, code=code, status=status, hint=hint, details=details
        )
    cls: type[RequestError]
    if status >= 500 or status in (408, 425):
        cls = TransientError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404 and code in (None, "PGRST202", "42883"):
        cls, hint = NotInstalledError, hint or _NOT_INSTALLED_HINT
    else:
        cls = RejectedError
    return cls(message, code=code, status=status, hint=hint, details=details)


def from_sqlstate(
    sqlstate: str,
    message: str,
    *,
    hint: str | None = None,
    details: str | None = None,
    status: int | None = None,
) -> RequestError:
    """Classify a PostgreSQL/PostgREST error code (``22023``, ``PGRST301``...)."""
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return from_http_status(
            int(sqlstate[2:]), message, code=sqlstate, hint=hint, details=details
        )
    cls: type[RequestError]
    if sqlstate in ("PGRST202", "42883"):
        cls, hint = NotInstalledError, hint or _NOT_INSTALLED_HINT
    elif sqlstate.startswith(("PGRST3", "28")):
        cls = AuthenticationError
    elif sqlstate == "42501":
        cls = PermissionDeniedError
    elif sqlstate.startswith("PGRST0") or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
        cls = TransientError
    else:
        cls = RejectedError
    return cls(message, code=sqlstate, status=status, hint=hint, details=details)


def from_api_error(exc: APIError) -> RequestError:
    """Translate a postgrest-py ``APIError`` (JSON error or non-JSON HTTP error)."""
    code = exc.code or ""
    message = exc.message or "request failed"
    details = (
        exc.details if isinstance(exc.details, str) or exc.details is None else str(exc.details)
    )
    if code.isdigit() and len(code) == 3:
        # Non-JSON body: postgrest-py put the HTTP status in `code`.
        return from_http_status(int(code), message, hint=exc.hint, details=details)
    if not code:
        return RejectedError(message, hint=exc.hint, details=details)
    return from_sqlstate(code, message, hint=exc.hint, details=details)


def from_httpx_error(exc: httpx.HTTPError) -> RequestError:
    """Translate an httpx exception (transport failure or HTTP status error)."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return from_http_status(
            response.status_code,
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            headers=response.headers,
        )
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"request timed out: {exc!r}")
    if isinstance(exc, httpx.TransportError):
        url = ""
        with contextlib.suppress(RuntimeError):  # no request attached
            url = f" to {exc.request.url}"
        return TransientError(f"could not reach the server{url}: {exc}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return RejectedError(f"invalid URL: {exc}")
    return RequestError(f"HTTP request failed: {exc!r}")


def from_psycopg_error(exc: psycopg.Error) -> RequestError:
    """Translate a psycopg error from a direct database connection."""
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if "password authentication failed" in text or "no password supplied" in text:
            return AuthenticationError(f"could not log in to PostgreSQL: {text}", code="28P01")
        return TransientError(f"could not connect to PostgreSQL: {text}")
    diag = exc.diag
    return from_sqlstate(
        exc.sqlstate or "XX000",
        diag.message_primary or str(exc),
        hint=diag.message_hint,
        details=diag.message_detail,
    )


def translate(exc: BaseException) -> PresenceError:
    """Map any error from the layers below into the presence exception tree."""
    if isinstance(exc, PresenceError):
        return exc
    if isinstance(exc, APIError):
        return from_api_error(exc)
    if isinstance(exc, httpx.HTTPError):
        return from_httpx_error(exc)
    if isinstance(exc, psycopg.Error):
        return from_psycopg_error(exc)
    return RequestError(f"unexpected error: {exc!r}")
