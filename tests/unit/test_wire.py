"""How RPCs travel through the supabase client, and how answers become errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from client_support import ANON_KEY, html_error, pgrst_error, sync_supabase, user_token
from supabase_auth.errors import AuthApiError, AuthRetryableError, AuthSessionMissingError

from presence_sdk._core import AuthCall, Call, Driver
from presence_sdk._errors import from_auth_error, from_response, translate
from presence_sdk._exceptions import (
    AuthenticationError,
    NotInstalledError,
    PermissionDeniedError,
    RateLimitedError,
    RejectedError,
    RequestError,
    TransientError,
)
from presence_sdk._wire import build_request, parse_response, refresh_effects


def test_build_request_uses_the_supabase_clients_session_and_headers() -> None:
    supabase = sync_supabase(user_token())
    rest = supabase.postgrest
    call = Call("presence_heartbeat", {"new_status": "away"}, 1.5)
    request = build_request(rest.session, rest, call)
    assert request.method == "POST"
    assert str(request.url) == "http://presence.test/rest/v1/rpc/presence_heartbeat"
    assert request.content == b'{"new_status":"away"}'
    assert request.headers["apikey"] == ANON_KEY
    assert request.headers["content-profile"] == "public"
    assert request.extensions["timeout"]["read"] == 1.5
    assert call.authorization == f"Bearer {user_token()}"
    rest.session.close()


def test_parse_response() -> None:
    assert parse_response(httpx.Response(200, json=[1, 2])) == [1, 2]
    assert parse_response(httpx.Response(204)) is None
    with pytest.raises(RequestError, match="not JSON"):
        parse_response(httpx.Response(200, text="<html>"))
    with pytest.raises(NotInstalledError):
        parse_response(pgrst_error(404, "PGRST202", "Could not find the function"))


@pytest.mark.parametrize(
    ("response", "kind", "status", "code"),
    [
        (pgrst_error(404, "PGRST202", "missing"), NotInstalledError, 404, "PGRST202"),
        (pgrst_error(401, "PGRST301", "JWT expired"), AuthenticationError, 401, "PGRST301"),
        (pgrst_error(401, "42501", "permission denied"), AuthenticationError, 401, "42501"),
        (pgrst_error(403, "42501", "permission denied"), PermissionDeniedError, 403, "42501"),
        (pgrst_error(403, "28000", "not authenticated"), AuthenticationError, 403, "28000"),
        (pgrst_error(400, "22023", "bad status"), RejectedError, 400, "22023"),
        (pgrst_error(404, "PT404", "no users row"), RejectedError, 404, "PT404"),
        (pgrst_error(500, "XX000", "internal"), TransientError, 500, "XX000"),
        (pgrst_error(503, "PGRST001", "no connection"), TransientError, 503, "PGRST001"),
        (html_error(502), TransientError, 502, None),
        (html_error(503), TransientError, 503, None),
        (httpx.Response(401, json={"message": "Invalid API key"}), AuthenticationError, 401, None),
    ],
)
def test_from_response_keeps_status_and_code(
    response: httpx.Response, kind: type[RequestError], status: int, code: str | None
) -> None:
    error = from_response(response)
    assert type(error) is kind
    assert (error.status, error.code) == (status, code)


def test_429_carries_retry_after_even_for_json_errors() -> None:
    error = from_response(pgrst_error(429, "", "slow down", **{"Retry-After": "2.5"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 2.5
    html = httpx.Response(429, text="<h1>429</h1>", headers={"Retry-After": "7"})
    error = from_response(html)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 7.0


def test_not_installed_hint_points_at_migrations_and_keeps_the_servers() -> None:
    body = {
        "code": "PGRST202",
        "message": "Could not find the function public.presence_heartbeat",
        "hint": "try reloading the schema cache",
    }
    error = from_response(httpx.Response(404, json=body))
    assert error.hint is not None
    assert "verify_setup" in error.hint
    assert "migrate" in error.hint
    assert "reloading the schema cache" in error.hint


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (AuthSessionMissingError(), AuthenticationError),
        (
            AuthApiError("Invalid Refresh Token", 400, "refresh_token_not_found"),
            AuthenticationError,
        ),
        (AuthRetryableError("connection refused", 0), TransientError),
        (AuthApiError("upstream", 502, None), TransientError),
        (AuthApiError("too many", 429, None), RateLimitedError),
    ],
)
def test_auth_errors_are_translated(exc: Any, kind: type[RequestError]) -> None:
    assert type(from_auth_error(exc)) is kind
    assert type(translate(exc)) is kind


def test_timeouts_from_asyncio_are_transient() -> None:
    assert isinstance(translate(TimeoutError()), TransientError)


def _run_refresh(
    supabase: Any, stale: str | None, token: str | None, replies: dict[str, Any]
) -> tuple[bool, list[AuthCall]]:
    calls: list[AuthCall] = []
    driver = Driver(refresh_effects(supabase, stale, token))
    for effect in driver:
        assert isinstance(effect, AuthCall)
        calls.append(effect)
        driver.reply(replies.get(effect.method))
    return driver.result, calls


def _supabase(authorization: str) -> Any:
    return SimpleNamespace(options=SimpleNamespace(headers={"Authorization": authorization}))


def test_refresh_uses_the_stored_session_once() -> None:
    session = SimpleNamespace(refresh_token="stored")
    done, calls = _run_refresh(_supabase("Bearer a"), "Bearer a", None, {"get_session": session})
    assert done is True
    assert calls == [AuthCall("get_session"), AuthCall("refresh_session", ("stored",))]


def test_refresh_skipped_when_the_token_already_changed() -> None:
    done, calls = _run_refresh(_supabase("Bearer new"), "Bearer old", None, {})
    assert (done, calls) == (False, [])


def test_refresh_skipped_when_get_session_refreshed_by_itself() -> None:
    supabase = _supabase("Bearer old")

    def get_session_refreshes() -> None:
        supabase.options.headers["Authorization"] = "Bearer new"

    driver = Driver(refresh_effects(supabase, "Bearer old", None))
    effects = []
    for effect in driver:
        effects.append(effect)
        get_session_refreshes()
        driver.reply(SimpleNamespace(refresh_token="r"))
    assert driver.result is False
    assert effects == [AuthCall("get_session")]


def test_refresh_with_the_token_given_at_construction() -> None:
    done, calls = _run_refresh(_supabase("Bearer a"), "Bearer a", "given", {})
    assert done is True
    assert calls == [AuthCall("refresh_session", ("given",))]
