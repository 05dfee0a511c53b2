"""Translate lower-level errors into the :class:`~presence_sdk.PresenceError` tree.

The one place that knows what httpx, postgrest-py (``APIError``) and psycopg errors
mean for presence. Callers do ``raise translate(exc) from exc``.

postgrest-py turns a JSON error body into ``APIError`` with PostgREST's ``code`` but
without the HTTP status; a non-JSON body (an HTML 502 page from a proxy) becomes an
``APIError`` whose code is the status as a string. Both are handled here; transport
errors (connect, read timeouts) are not wrapped by supabase-py and arrive as httpx
exceptions.

The heartbeat clients send their RPCs through the supabase client's own httpx session
and read the response themselves, so :func:`from_response` sees what ``APIError``
loses: the HTTP status and headers (``Retry-After`` of a 429) of JSON errors too.
Errors of supabase-py's auth client (refreshing a session) are translated as well.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Mapping

import httpx
import psycopg
from postgrest.exceptions import APIError
from supabase_auth.errors import AuthError, AuthRetryableError, AuthSessionMissingError

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
    "from_auth_error",
    "from_http_status",
    "from_httpx_error",
    "from_psycopg_error",
    "from_response",
    "from_sqlstate",
    "parse_retry_after",
    "translate",
]

_NOT_INSTALLED_HINT = (
    "The presence SQL is not installed here: apply the migrations "
    "(`presence-sdk migrate` or `supabase db push`) and run presence_sdk.verify_setup()."
)


def _not_installed_hint(server_hint: str | None) -> str:
    # PostgREST's own PGRST202 hint ("try reloading the schema cache") is kept after ours.
    if not server_hint or server_hint == _NOT_INSTALLED_HINT:
        return _NOT_INSTALLED_HINT
    return f"{_NOT_INSTALLED_HINT} (server hint: {server_hint})"


# The API gateway in front of PostgREST (Kong on Supabase) answers a bad or missing API
# key with a 401 whose JSON body has a message but no code; APIError drops the status,
# so these are recognised by their message.
_GATEWAY_AUTH_MESSAGES = (
    "invalid api key",
    "no api key found",
    "invalid authentication credentials",
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
        cls, hint = NotInstalledError, _not_installed_hint(hint)
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
        cls, hint = NotInstalledError, _not_installed_hint(hint)
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
        if any(text in message.lower() for text in _GATEWAY_AUTH_MESSAGES):
            return AuthenticationError(message, hint=exc.hint, details=details)
        return RejectedError(message, hint=exc.hint, details=details)
    return from_sqlstate(code, message, hint=exc.hint, details=details)


def from_response(response: httpx.Response) -> RequestError:
    """Translate an HTTP error response from PostgREST (or a proxy in front of it).

    Unlike ``APIError``, this keeps the status and headers of JSON errors: a 429 carries
    ``Retry-After``, a 5xx with an unknown code is transient, a 401 is authentication.
    A non-JSON body (an HTML 502/503 page) is classified by its status alone.
    """
    status = response.status_code
    body: object = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if not isinstance(body, dict):
        text = response.text.strip()
        return from_http_status(
            status,
            f"HTTP {status} {response.reason_phrase}".strip(),
            details=text[:500] or None,
            headers=response.headers,
        )
    code = str(body.get("code") or "") or None
    message = str(body.get("message") or body.get("msg") or f"HTTP {status}")
    hint = body.get("hint")
    hint = None if hint is None else str(hint)
    details = body.get("details")
    details = None if details is None else str(details)
    if code is None or status in (401, 429):
        # 401: PostgREST's answer to an anonymous caller (42501 for anon, PGRST301...).
        return from_http_status(
            status, message, code=code, hint=hint, details=details, headers=response.headers
        )
    error = from_sqlstate(code, message, hint=hint, details=details, status=status)
    if type(error) is RejectedError and (status >= 500 or status in (408, 425)):
        return TransientError(message, code=code, status=status, hint=hint, details=details)
    return error


def from_auth_error(exc: AuthError) -> RequestError:
    """Translate an error of supabase-py's auth client (e.g. refreshing a session)."""
    status = getattr(exc, "status", None)
    status = status if isinstance(status, int) and status > 0 else None
    code = str(exc.code) if exc.code else None
    if isinstance(exc, AuthSessionMissingError):
        return AuthenticationError(
            "no signed-in session: sign the user in with the supabase client first",
            code=code,
            status=status,
        )
    if isinstance(exc, AuthRetryableError) or (status is not None and status >= 500):
        return TransientError(f"auth server unavailable: {exc.message}", code=code, status=status)
    if status == 429:
        return RateLimitedError(f"auth server: {exc.message}", code=code)
    return AuthenticationError(f"auth server refused: {exc.message}", code=code, status=status)


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
        if "no pg_hba.conf entry" in text or ('role "' in text and "does not exist" in text):
            return AuthenticationError(f"could not log in to PostgreSQL: {text}", code="28000")
        if 'database "' in text and "does not exist" in text:
            return RejectedError(f"could not connect to PostgreSQL: {text}", code="3D000")
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
    if isinstance(exc, AuthError):
        return from_auth_error(exc)
    return _from_builtin(exc)


def _from_builtin(exc: BaseException) -> RequestError:
    if isinstance(exc, TimeoutError):  # asyncio.timeout() or the sync deadline
        return TransientError(f"request timed out: {exc}" if str(exc) else "request timed out")
    return RequestError(f"unexpected error: {exc!r}")
