"""Presence privacy without I/O: the settings model and the queries that change them.

Each builder raises :class:`~presence_sdk.InvalidInputError` for bad input before
anything is sent and returns a :class:`~presence_sdk._queries.Query` that the sync and
async clients (and a server-side tracker) run the same way. The SQL behind them
(migration ``20240000000007_privacy``) applies the settings on every read path; this
module only asks for changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from presence_sdk._exceptions import InvalidInputError, RequestError
from presence_sdk._queries import Query, UserId, to_user_id

__all__ = [
    "MAX_INVISIBLE_BATCH",
    "VISIBILITIES",
    "PrivacySettings",
    "Visibility",
    "my_privacy",
    "set_invisible",
    "set_invisible_for",
    "set_visibility",
]

#: Who may see a user's presence or last seen.
Visibility = Literal["everyone", "contacts", "nobody"]

#: The accepted :data:`Visibility` values.
VISIBILITIES: Final[tuple[str, ...]] = get_args(Visibility)

#: Most users one :func:`set_invisible_for` call may name (the SQL refuses more).
MAX_INVISIBLE_BATCH: Final = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class PrivacySettings:
    """A user's presence privacy settings, as the server stored them.

    Attributes:
        user_id: The user.
        invisible: Invisible mode: others see the user offline, with last seen frozen
            at the moment they went invisible; the user and the service role see the
            truth. Their sessions stay alive, so turning it off is instant.
        invisible_since: When invisible mode was turned on (None while visible).
        presence: Who may see the user's presence (online, status, online since).
        last_seen: Who may see the user's last seen. It is never shown to someone who
            may not see the presence (a moving last seen would show it).
    """

    user_id: uuid.UUID
    invisible: bool
    invisible_since: datetime | None
    presence: Visibility
    last_seen: Visibility

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrivacySettings:
        """Build from the JSON the privacy RPCs return."""
        since = data.get("invisible_since")
        presence, last_seen = data["presence"], data["last_seen"]
        if presence not in VISIBILITIES or last_seen not in VISIBILITIES:
            raise ValueError(data)
        return cls(
            user_id=uuid.UUID(str(data["user_id"])),
            invisible=bool(data["invisible"]),
            invisible_since=None if since is None else datetime.fromisoformat(str(since)),
            presence=presence,
            last_seen=last_seen,
        )


def _settings(data: Any) -> PrivacySettings:
    try:
        return PrivacySettings.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        msg = f"unexpected response from the presence SQL: {data!r:.200}"
        raise RequestError(msg) from exc


def _visibility(value: object, name: str) -> str:
    if not isinstance(value, str) or value not in VISIBILITIES:
        msg = f"{name} must be one of {', '.join(VISIBILITIES)}, not {value!r:.100}"
        raise InvalidInputError(msg)
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"invisible must be True or False, not {value!r:.100}"
        raise InvalidInputError(msg)
    return value


def set_invisible(invisible: bool) -> Query[PrivacySettings]:
    """Turn invisible mode on or off for the signed-in user."""
    return Query("presence_set_invisible", {"invisible": _flag(invisible)}, _settings)


def set_visibility(
    *, presence: Visibility | None = None, last_seen: Visibility | None = None
) -> Query[PrivacySettings]:
    """Who may see the signed-in user's presence and last seen (None keeps a setting)."""
    params: dict[str, str] = {}
    if presence is not None:
        params["presence"] = _visibility(presence, "presence")
    if last_seen is not None:
        params["last_seen"] = _visibility(last_seen, "last_seen")
    if not params:
        msg = "set_visibility() needs presence= and/or last_seen="
        raise InvalidInputError(msg)
    return Query("presence_set_visibility", params, _settings)


def my_privacy() -> Query[PrivacySettings]:
    """The signed-in user's privacy settings."""
    return Query("presence_my_privacy", {}, _settings)


def set_invisible_for(user_ids: Iterable[UserId], invisible: bool) -> Query[int]:
    """Invisible mode on or off for many users at once: the service role only (a
    server-side tracker). Answers how many users changed; at most
    :data:`MAX_INVISIBLE_BATCH` distinct ids (an empty input asks nothing)."""
    flag = _flag(invisible)
    if isinstance(user_ids, str | bytes | uuid.UUID) or not isinstance(user_ids, Iterable):
        msg = f"user_ids must be an iterable of UUIDs, not {user_ids!r:.100}"
        raise InvalidInputError(msg)
    wanted: dict[uuid.UUID, None] = {}
    for value in user_ids:
        wanted[to_user_id(value, name="each of user_ids")] = None
        if len(wanted) > MAX_INVISIBLE_BATCH:
            msg = f"at most {MAX_INVISIBLE_BATCH} users per call (split the list)"
            raise InvalidInputError(msg)
    if not wanted:
        return Query(None, {}, lambda _: 0)

    def parse(data: Any) -> int:
        try:
            return int(data["changed"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"unexpected response from the presence SQL: {data!r:.200}"
            raise RequestError(msg) from exc

    params = {"user_ids": [str(u) for u in wanted], "invisible": flag}
    return Query("presence_set_invisible_for", params, parse)
