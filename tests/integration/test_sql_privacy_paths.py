"""Presence privacy on every read path (migration 20240000000007_privacy), real PostgreSQL.

For each setting (invisible; everyone / contacts / nobody, for presence and for last
seen), every read path (the view, presence_get, presence_is_online,
presence_list_online, presence_counts, a direct table read through PostgREST, the event
log's seam) is read as: the user, a contact, a stranger, anon and the service role.
"Contacts" come from the shipped example hook (examples/privacy_friendships.sql).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from privacy_support import (
    Observation,
    install_friendships,
    observe,
    set_invisible,
    set_visibility,
)
from sessions_support import advance, beat, new_id, presence

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

VIEWERS = ("self", "contact", "stranger", "anon", "service")
# Paths the API roles are refused outright (anon has no grants on the reads; nobody but
# service_role and the owner selects the presence columns of public.users).
REFUSED = {"anon": {"view", "get", "is_online", "list_online", "counts", "table", "events"}}
ALWAYS_REFUSED_FOR_USERS = {"table"}


@pytest.fixture
def people(presence_db: PresenceDatabase) -> dict[str, str]:
    """target (online, beating), contact (a friend of target's), stranger."""
    ids = {name: presence_db.create_user() for name in ("target", "contact", "stranger")}
    install_friendships(presence_db, (ids["target"], ids["contact"]))
    beat(presence_db, ids["target"], new_id(), "busy")
    return ids


def role_of(viewer: str) -> str:
    return {"anon": "anon", "service": "service_role"}.get(viewer, "authenticated")


def look(db: PresenceDatabase, people: dict[str, str], viewer: str) -> Observation:
    user = {"self": people["target"], "contact": people["contact"]}.get(viewer)
    if viewer == "stranger":
        user = people["stranger"]
    return observe(db, role_of(viewer), user, people["target"])


def allowed(rule: str, viewer: str) -> bool:
    return rule == "everyone" or (rule == "contacts" and viewer == "contact")


def expect(
    viewer: str, *, presence: str, last_seen: str, invisible: bool, real: datetime, frozen: Any
) -> tuple[bool, Any, bool]:
    """(online shown, last seen shown, events shown) of the target, online and beating."""
    if viewer in ("self", "service"):
        return True, real, True
    see_presence = allowed(presence, viewer)
    see_last_seen = see_presence and allowed(last_seen, viewer)
    if invisible:
        return False, frozen if see_last_seen else None, False
    return see_presence, real if see_last_seen else None, see_last_seen


SETTINGS = [
    # (presence, last_seen, invisible)
    ("everyone", "everyone", False),
    ("contacts", "everyone", False),
    ("contacts", "contacts", False),
    ("nobody", "everyone", False),
    ("everyone", "contacts", False),
    ("everyone", "nobody", False),
    ("everyone", "everyone", True),
    ("contacts", "contacts", True),
    ("everyone", "nobody", True),
    ("nobody", "nobody", True),
]


@pytest.mark.parametrize(("presence_rule", "last_seen_rule", "invisible"), SETTINGS)
def test_every_path_shows_what_the_setting_allows(
    presence_db: PresenceDatabase,
    people: dict[str, str],
    presence_rule: str,
    last_seen_rule: str,
    invisible: bool,
) -> None:
    target = people["target"]
    set_visibility(presence_db, target, presence=presence_rule, last_seen=last_seen_rule)
    frozen = None
    if invisible:
        settings = set_invisible(presence_db, target, True)
        assert settings["invisible"] is True
        (row,) = presence_db.query(
            "SELECT frozen_last_seen FROM public.presence_privacy WHERE user_id = %s", (target,)
        )
        frozen = row["frozen_last_seen"]
        assert frozen is not None
        # Time passes and the target keeps beating while invisible: what others see of
        # their last seen stays frozen; the truth moves on.
        advance(presence_db, 5)
        beat(presence_db, target, new_id(), "busy")
    real = presence(presence_db, target)["last_seen"]
    real_time = datetime.fromisoformat(real)

    for viewer in VIEWERS:
        obs = look(presence_db, people, viewer)
        refused = REFUSED.get(viewer, ALWAYS_REFUSED_FOR_USERS if viewer != "service" else set())
        assert set(obs.errors) == refused, (viewer, obs.errors)
        assert set(obs.errors.values()) <= {"42501"}, obs.errors
        if viewer == "anon":
            assert set(obs.errors.values()) == {"42501"}, obs.errors
            assert set(obs.statuses.values()) == {401}, obs.statuses
            continue
        online, last_seen, events = expect(
            viewer,
            presence=presence_rule,
            last_seen=last_seen_rule,
            invisible=invisible,
            real=real_time,
            frozen=frozen,
        )
        shown = dict(obs.online)
        assert shown.pop("events") is events, (viewer, obs.online)
        assert shown, viewer
        assert set(shown.values()) == {online}, (viewer, obs.online)
        assert obs.last_seen, viewer
        for path, value in obs.last_seen.items():
            if path == "table":
                continue  # the stored column: refreshed at transitions (migration 5)
            got = None if value is None else _as_time(value)
            assert got == last_seen, (viewer, path, value, last_seen)


def _as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def test_changes_take_effect_on_the_next_read(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    target = people["target"]
    stranger = look(presence_db, people, "stranger")
    assert stranger.online_anywhere()
    set_visibility(presence_db, target, presence="contacts")
    assert not look(presence_db, people, "stranger").online_anywhere()
    assert look(presence_db, people, "contact").online["is_online"] is True
    set_visibility(presence_db, target, presence="nobody")
    assert not look(presence_db, people, "contact").online_anywhere()
    set_visibility(presence_db, target, presence="everyone")
    assert look(presence_db, people, "stranger").online["get"] is True
    set_invisible(presence_db, target, True)
    assert not look(presence_db, people, "contact").online_anywhere()
    assert look(presence_db, people, "self").online["get"] is True
    set_invisible(presence_db, target, False)
    back = look(presence_db, people, "stranger")
    assert back.online["list_online"] is True
    # The real last seen shows again (not the frozen one).
    assert back.last_seen["get"] == presence(presence_db, target)["last_seen"]


def test_a_friendship_removed_hides_at_once(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    set_visibility(presence_db, people["target"], presence="contacts", last_seen="contacts")
    assert look(presence_db, people, "contact").online["view"] is True
    presence_db.query("DELETE FROM public.friendships")
    obs = look(presence_db, people, "contact")
    assert not obs.online_anywhere()
    assert set(obs.last_seen.values()) == {None}


def test_going_invisible_while_offline_freezes_the_last_seen_of_then(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    target = people["target"]
    presence_db.rpc(
        "presence_session_leave", {"session_id": _only_session(presence_db, target)}, user_id=target
    )
    advance(presence_db, 600)
    then = presence(presence_db, target)["last_seen"]
    set_invisible(presence_db, target, True)
    seen = presence(presence_db, target, reader=people["stranger"])
    assert (seen["online"], seen["last_seen"]) == (False, then)
    # Coming online while invisible does not move what others see.
    beat(presence_db, target, new_id())
    again = presence(presence_db, target, reader=people["contact"])
    assert (again["online"], again["last_seen"]) == (False, then)
    # The user sees the truth (and that they are invisible); the service role too.
    assert presence(presence_db, target)["online"] is True
    assert presence_db.rpc("presence_my_privacy", user_id=target)["invisible"] is True
    (truth,) = presence_db.rpc("presence_get", {"user_ids": [target]}, role="service_role")
    assert truth["online"] is True


def _only_session(db: PresenceDatabase, user: str) -> str:
    rows = db.query(
        "SELECT session_id::text FROM public.presence_sessions WHERE user_id = %s", (user,)
    )
    assert len(rows) == 1
    return str(rows[0]["session_id"])
