"""How an RPC travels through the app's supabase client, without performing I/O.

The clients send each RPC with the httpx session, base URL and headers of the
supabase client's PostgREST client (``client.postgrest``: the app's own httpx client,
API key and current user token, re-read on every call so supabase-py's token refresh
is picked up). Doing the send ourselves, rather than through ``rpc().execute()``, lets
each request carry its own timeout and gives the error translator the HTTP status and
headers that postgrest-py's ``APIError`` drops (``Retry-After``). Only the ``send`` call
differs between the sync and async shells.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

import httpx

from presence_sdk._core import AuthCall, Call
from presence_sdk._errors import from_response
from presence_sdk._exceptions import TransientError

__all__ = [
    "RestClient",
    "SupabaseLike",
    "build_request",
    "parse_response",
    "refresh_effects",
    "token_changed",
]


class RestClient(Protocol):
    """What is used of postgrest-py's ``SyncPostgrestClient``/``AsyncPostgrestClient``."""

    @property
    def headers(self) -> httpx.Headers:
        """Default headers: ``apikey``, ``Authorization``, profile headers."""

    @property
    def base_url(self) -> Any:
        """The REST base URL (a yarl URL)."""


class SupabaseLike(Protocol):
    """What is used of a supabase ``Client``/``AsyncClient``: its options' headers."""

    @property
    def options(self) -> Any:
        """The client options (``headers`` holds the current Authorization)."""


def build_request(
    http: httpx.Client | httpx.AsyncClient, rest: RestClient, call: Call
) -> httpx.Request:
    """The ``POST /rest/v1/rpc/<fn>`` request for ``call`` (records its Authorization)."""
    headers = rest.headers
    call.authorization = headers.get("authorization")
    return http.build_request(
        "POST",
        str(rest.base_url.joinpath("rpc", call.fn)),
        json=dict(call.params),
        headers=headers,
        timeout=call.timeout,
    )


def parse_response(response: httpx.Response) -> Any:
    """The JSON result of a 2xx response; raise the translated error otherwise.

    A 2xx whose body is not JSON (a captive portal's or proxy's HTML page) did not come
    from PostgREST: a :class:`TransientError`, retried and reported like a 502 page.
    """
    if not response.is_success:
        raise from_response(response)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        msg = (
            f"the server answered {response.status_code} with a body that is not JSON "
            f"({response.headers.get('content-type') or 'no content-type'}): "
            "is a proxy or another service answering in PostgREST's place?"
        )
        raise TransientError(msg, status=response.status_code) from exc


def token_changed(supabase: SupabaseLike, stale_authorization: str | None) -> bool:
    """Whether the client's Authorization header differs from the one sent earlier."""
    current = supabase.options.headers.get("Authorization")
    return stale_authorization is not None and current != stale_authorization


def refresh_effects(
    supabase: SupabaseLike, stale_authorization: str | None, refresh_token: str | None
) -> Generator[AuthCall, Any, bool]:
    """Refresh the session once, unless that already happened; True if this did it.

    Nothing to do when the Authorization header changed since the failed request
    (supabase-py's own refresh timer, or the app, was faster). Otherwise refresh with
    ``refresh_token`` if one was given at construction, else with the stored session's:
    ``get_session()`` first, since it refreshes an expiring session by itself, and a
    second refresh right after would waste the new refresh token.
    """
    if token_changed(supabase, stale_authorization):
        return False
    if refresh_token is None:
        session = yield AuthCall("get_session")
        if token_changed(supabase, stale_authorization):
            return False
        refresh_token = getattr(session, "refresh_token", None)
    yield AuthCall("refresh_session", (refresh_token,))
    return True
