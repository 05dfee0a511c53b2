"""The HS256 tokens and the SQLSTATE -> HTTP mapping of presence_sdk.testing."""

from __future__ import annotations

import pytest

from presence_sdk.testing import JWTError, decode_jwt, encode_jwt, http_status_for, make_token


def test_round_trip_and_claims() -> None:
    token = make_token("authenticated", user_id="u-1", expires_in=60)
    claims = decode_jwt(token)
    assert claims["role"] == "authenticated"
    assert claims["sub"] == "u-1"
    assert claims["aud"] == "authenticated"


def test_expired_token_is_reported_as_expired() -> None:
    token = make_token("anon", expires_in=-5)
    with pytest.raises(JWTError, match="JWT expired") as err:
        decode_jwt(token)
    assert err.value.expired


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c", encode_jwt({"role": "anon"}, "other-secret")]
)
def test_bad_tokens_are_rejected(token: str) -> None:
    with pytest.raises(JWTError) as err:
        decode_jwt(token)
    assert not err.value.expired


@pytest.mark.parametrize(
    ("sqlstate", "authenticated", "status"),
    [
        ("42501", False, 401),
        ("42501", True, 403),
        ("28000", True, 403),
        ("22023", True, 400),
        ("P0001", True, 400),
        ("P0002", True, 500),
        ("PT404", True, 404),
        ("42883", True, 404),
        ("23505", True, 409),
        ("08006", True, 503),
        ("40001", True, 500),
    ],
)
def test_http_status_matches_postgrest_table(
    sqlstate: str, authenticated: bool, status: int
) -> None:
    assert http_status_for(sqlstate, authenticated=authenticated) == status
