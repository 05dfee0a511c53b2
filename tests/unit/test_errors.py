"""The one translator from httpx / postgrest / psycopg errors into PresenceError."""

from __future__ import annotations

import email.utils
import time

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError

from presence_sdk._errors import parse_retry_after, translate
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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"code": "PGRST202", "message": "Could not find the function"}, NotInstalledError),
        ({"code": "42883", "message": "function does not exist"}, NotInstalledError),
        ({"code": "PGRST301", "message": "JWT expired"}, AuthenticationError),
        ({"code": "28000", "message": "presence: not authenticated"}, AuthenticationError),
        ({"code": "42501", "message": "permission denied"}, PermissionDeniedError),
        ({"code": "22023", "message": "presence: invalid status"}, RejectedError),
        ({"code": "PT404", "message": "no public.users row"}, RejectedError),
        ({"code": "PGRST000", "message": "db down"}, TransientError),
        ({"code": "08006", "message": "connection failure"}, TransientError),
        ({"code": "40001", "message": "serialization failure"}, TransientError),
        ({"code": "502", "message": "Bad Gateway"}, TransientError),
        ({"code": "503", "message": "Service Unavailable"}, TransientError),
        ({"code": "401", "message": "Unauthorized"}, AuthenticationError),
        ({"code": "429", "message": "Too Many Requests"}, RateLimitedError),
        ({"message": "no code at all"}, RejectedError),
    ],
)
def test_api_errors(body: dict[str, str], expected: type[RequestError]) -> None:
    error = translate(APIError(body))
    assert type(error) is expected
    assert isinstance(error, PresenceError)
    assert error.message == body["message"]


def test_not_installed_points_at_migrations_and_verify_setup() -> None:
    error = translate(APIError({"code": "PGRST202", "message": "missing"}))
    assert isinstance(error, NotInstalledError)
    assert error.hint is not None
    assert "verify_setup" in error.hint
    assert "migrate" in error.hint


def test_pt_codes_carry_their_http_status() -> None:
    error = translate(APIError({"code": "PT404", "message": "x"}))
    assert isinstance(error, RequestError)
    assert error.status == 404
    assert error.code == "PT404"


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("server hung up"),
    ],
)
def test_transport_errors_are_transient(exc: httpx.HTTPError) -> None:
    assert isinstance(translate(exc), TransientError)


def test_http_status_error_429_reads_retry_after() -> None:
    request = httpx.Request("POST", "http://x/rest/v1/rpc/f")
    response = httpx.Response(429, headers={"Retry-After": "7"}, request=request)
    error = translate(httpx.HTTPStatusError("429", request=request, response=response))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 7.0


def test_retry_after_http_date() -> None:
    now = time.time()
    header = email.utils.formatdate(now + 30, usegmt=True)
    delay = parse_retry_after(header, now=now)
    assert delay is not None
    assert 28 <= delay <= 31
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0


def test_psycopg_connection_errors() -> None:
    refused = translate(psycopg.OperationalError("connection refused"))
    assert isinstance(refused, TransientError)
    wrong_password = translate(
        psycopg.OperationalError('password authentication failed for user "postgres"')
    )
    assert isinstance(wrong_password, AuthenticationError)


def test_presence_errors_pass_through_and_unknown_errors_are_wrapped() -> None:
    original = RejectedError("already ours")
    assert translate(original) is original
    wrapped = translate(RuntimeError("boom"))
    assert isinstance(wrapped, RequestError)
    assert "boom" in str(wrapped)
