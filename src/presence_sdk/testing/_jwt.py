"""Minimal HS256 JWTs, as Supabase issues them (anon, service_role, user tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

__all__ = ["JWTError", "decode_jwt", "encode_jwt", "make_token"]

#: The secret the local emulation signs with (never use it anywhere real).
DEFAULT_JWT_SECRET = "presence-sdk-local-testing-secret-at-least-32-chars"  # noqa: S105


class JWTError(ValueError):
    """The token is malformed, badly signed or expired (``expired`` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], secret: str = DEFAULT_JWT_SECRET) -> str:
    """Sign ``claims`` with HS256."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def decode_jwt(
    token: str, secret: str = DEFAULT_JWT_SECRET, *, now: float | None = None
) -> dict[str, Any]:
    """Verify an HS256 token and return its claims (raises :class:`JWTError`)."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(
            secret.encode(), f"{header}.{payload}".encode("ascii"), hashlib.sha256
        ).digest()
        valid = hmac.compare_digest(expected, _unb64(signature))
        claims: dict[str, Any] = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise JWTError("JWT could not be decoded") from exc
    if not valid:
        raise JWTError("JWT signature verification failed")
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= (time.time() if now is None else now):
        raise JWTError("JWT expired", expired=True)
    return claims


def make_token(
    role: str,
    *,
    user_id: str | None = None,
    expires_in: float = 3600,
    secret: str = DEFAULT_JWT_SECRET,
    **claims: Any,
) -> str:
    """Return a token like Supabase's: ``role`` plus ``sub`` for a signed-in user."""
    now = int(time.time())
    body: dict[str, Any] = {"role": role, "iat": now, "exp": int(now + expires_in)}
    if user_id is not None:
        body |= {"sub": user_id, "aud": "authenticated"}
    body |= claims
    return encode_jwt(body, secret)
