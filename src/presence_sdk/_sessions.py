"""Input checks for presence sessions, mirroring the limits of the sessions SQL.

A session is one connection of one user (a device, a tab, a websocket), named by a
client-generated uuid. The SQL (``presence_session_beat``, ``presence_track_beat``)
refuses a device label outside 1-64 characters and metadata that is not a JSON object
of at most 1024 bytes; the clients and the tracker check the same here, before any
I/O, so bad input raises :class:`~presence_sdk.InvalidInputError` at the call and
changes nothing.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any, Final

from presence_sdk._exceptions import InvalidInputError

__all__ = [
    "MAX_BATCH",
    "MAX_DEVICE_CHARS",
    "MAX_METADATA_BYTES",
    "Metadata",
    "metadata_size",
    "shown",
    "to_session_id",
    "validate_device",
    "validate_metadata",
]

#: Longest device label, in characters (``presence_sessions.device``).
MAX_DEVICE_CHARS: Final = 64

#: Largest metadata, in bytes of its JSON text as PostgreSQL prints a ``jsonb``.
MAX_METADATA_BYTES: Final = 1024

#: Most sessions one ``presence_track_beat``/``presence_track_end`` call may carry.
MAX_BATCH: Final = 10_000

#: Session metadata: a JSON object.
Metadata = Mapping[str, Any]


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (error messages echo input)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def to_session_id(value: object, *, name: str = "session_id") -> uuid.UUID:
    """``value`` (a UUID or its text form) as a UUID; InvalidInputError otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    msg = f"{name} must be a UUID, not {shown(value)}"
    raise InvalidInputError(msg)


def validate_device(device: object) -> str | None:
    """``device`` if it is None or a label of 1 to 64 characters; else InvalidInputError."""
    if device is None:
        return None
    if not isinstance(device, str):
        msg = f"device must be a string (or None), not {type(device).__name__}"
        raise InvalidInputError(msg)
    if not 1 <= len(device) <= MAX_DEVICE_CHARS:
        msg = f"device must be 1 to {MAX_DEVICE_CHARS} characters, not {len(device)}"
        raise InvalidInputError(msg)
    if "\x00" in device:
        msg = "device must not contain NUL characters (PostgreSQL text cannot store them)"
        raise InvalidInputError(msg)
    try:
        device.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"device must be valid Unicode text: {exc}"
        raise InvalidInputError(msg) from exc
    return device


def validate_metadata(metadata: object) -> dict[str, Any] | None:
    """A private JSON copy of ``metadata`` if it is None or a small JSON object.

    Raises InvalidInputError for anything PostgreSQL's ``jsonb`` would refuse (values
    that are not JSON, NaN, NUL characters, keys that are not strings) or the SQL's
    CHECK would (not an object, over :data:`MAX_METADATA_BYTES` as text). The copy is
    what is sent from then on, so later changes to the app's dict change nothing.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        msg = f"metadata must be a JSON object (a dict), not {type(metadata).__name__}"
        raise InvalidInputError(msg)
    _check_json(metadata, "metadata")
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        copy: dict[str, Any] = json.loads(text)
        size = metadata_size(copy)
    except (TypeError, ValueError) as exc:
        msg = f"metadata must be JSON-serialisable: {exc}"
        raise InvalidInputError(msg) from exc
    if size > MAX_METADATA_BYTES:
        msg = f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON text, not {size}"
        raise InvalidInputError(msg)
    return copy


def metadata_size(metadata: Mapping[str, Any]) -> int:
    """Bytes of ``metadata`` as JSON text the way PostgreSQL prints a ``jsonb``
    (``", "`` and ``": "`` separators, UTF-8): what the SQL's size CHECK measures."""
    text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    return len(text.encode("utf-8"))


def _check_json(value: object, where: str, depth: int = 0) -> None:
    """Refuse what JSON text could carry but ``jsonb`` cannot store."""
    if depth > 100:
        msg = f"{where} is nested too deeply"
        raise InvalidInputError(msg)
    if isinstance(value, str):
        if "\x00" in value:
            msg = f"{where} must not contain NUL characters (jsonb cannot store \\u0000)"
            raise InvalidInputError(msg)
    elif isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{where} must not contain NaN or infinity (not JSON)"
            raise InvalidInputError(msg)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                msg = f"{where} keys must be strings, not {shown(key)}"
                raise InvalidInputError(msg)
            _check_json(key, f"{where} key", depth + 1)
            _check_json(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json(item, where, depth + 1)
