"""After invisible mode ends, no read shows others a time from inside the hidden period.

Invisible mode hides when a user comes and goes. Turning it off must not give that away
afterwards: others see ``online_since`` no earlier than the moment the user became
visible again (a session started while invisible, or one that ran through the period,
would otherwise date it), and a last seen from inside the period as the frozen one
(offline) or as the period's end (online). The user and the service role keep the
truth. The settings row stops forcing the rule on every read once a transition leaves
nothing of the period in the user's presence. Real PostgreSQL, as PostgREST runs it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from privacy_support import as_api, install_friendships, rpc, set_invisible
from sessions_support import beat, leave, new_id

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration


@pytest.fixture
def people(presence_db: PresenceDatabase) -> dict[str, str]:
    ids = {name: presence_db.create_user() for name in ("target", "contact", "stranger")}
    install_friendships(presence_db, (ids["target"], ids["contact"]))
    return ids


def _who(people: dict[str, str], viewer: str) -> tuple[str, str | None]:
    if viewer == "service":
        return "service_role", None
    return "authenticated", people["target" if viewer == "self" else viewer]


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def seen(db: PresenceDatabase, people: dict[str, str], viewer: str) -> dict[str, Any]:
    """online / online_since / last_seen of the target through the view, presence_get
    and presence_list_online, which must agree."""
    role, user = _who(people, viewer)
    target = people["target"]
    (view,) = as_api(
        db, role, user,
        "SELECT online, online_since, last_seen FROM public.user_presence WHERE user_id = %s",
        (target,),
    )  # fmt: skip
    (got,) = rpc(db, "presence_get", {"user_ids": [target]}, role, user)
    listed = [
        r for r in rpc(db, "presence_list_online", {"page_size": 1000}, role, user)
        if r["user_id"] == target
    ]  # fmt: skip
    answer = {k: _time(view[k]) if k != "online" else view[k] for k in view}
    assert answer == {k: _time(got[k]) if k != "online" else got[k] for k in answer}, viewer
    if answer["online"]:
        (row,) = listed
        assert _time(row["online_since"]) == answer["online_since"], viewer
        assert _time(row["last_seen"]) == answer["last_seen"], viewer
    else:
        assert listed == [], viewer
    return answer


def truth(db: PresenceDatabase, target: str) -> dict[str, Any]:
    (row,) = db.query(
        "SELECT online, online_since, last_seen FROM public.user_presence WHERE user_id = %s",
        (target,),
    )
    return row


def settings(db: PresenceDatabase, target: str) -> dict[str, Any]:
    rows = db.query(
        "SELECT invisible, frozen_last_seen, visible_since FROM public.presence_privacy "
        "WHERE user_id = %s",
        (target,),
    )
    return rows[0]


def leave_while_invisible(db: PresenceDatabase, target: str) -> datetime | None:
    """The target's only device beats, a hidden period starts, the device leaves inside
    it, and the period ends. Returns the frozen last seen (others' view of the leave)."""
    phone = new_id()
    beat(db, target, phone)
    set_invisible(db, target, True)
    frozen: datetime | None = settings(db, target)["frozen_last_seen"]
    leave(db, target, phone)  # offline while invisible: its time is hidden
    set_invisible(db, target, False)
    return frozen


def test_a_session_started_while_invisible_is_dated_from_the_end_of_the_period(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    set_invisible(db, target, True)
    laptop = new_id()
    beat(db, target, laptop)  # comes online while invisible
    started = truth(db, target)["online_since"]
    set_invisible(db, target, False)
    back = settings(db, target)["visible_since"]
    assert started < back
    for viewer in ("contact", "stranger"):
        shown = seen(db, people, viewer)
        assert shown == {"online": True, "online_since": back, "last_seen": back}, viewer
    for viewer in ("self", "service"):
        shown = seen(db, people, viewer)
        assert shown["online_since"] == started, viewer
        assert shown["last_seen"] < back, viewer
    # The next beat is after the period: its time shows; online since stays its end.
    beat(db, target, laptop)
    shown = seen(db, people, "stranger")
    assert shown["online_since"] == back
    assert shown["last_seen"] == truth(db, target)["last_seen"] > back


def test_a_session_through_the_period_is_online_again_only_since_its_end(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    phone = new_id()
    beat(db, target, phone)
    since = truth(db, target)["online_since"]
    last_beat = truth(db, target)["last_seen"]
    assert seen(db, people, "stranger")["online_since"] == since
    set_invisible(db, target, True)
    assert seen(db, people, "stranger")["online"] is False
    set_invisible(db, target, False)
    back = settings(db, target)["visible_since"]
    # Others saw the user leave when they went invisible and come back now.
    shown = seen(db, people, "stranger")
    assert shown["online_since"] == back
    # The last beat came before the period: not hidden, it shows as it is.
    assert shown["last_seen"] == last_beat
    assert seen(db, people, "self")["online_since"] == since


def test_a_device_that_left_while_invisible_leaves_the_frozen_last_seen(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    frozen = leave_while_invisible(db, target)
    left = truth(db, target)["last_seen"]  # invisible mode never changes the truth
    assert frozen is not None
    assert frozen < left
    # Nobody else restricts anything: the rule runs for the row out of invisible mode.
    assert db.query(
        "SELECT count(*) AS n FROM public.presence_privacy "
        "WHERE invisible OR presence_visibility <> 'everyone' OR last_seen_visibility <> 'everyone'"
    ) == [{"n": 0}]
    for viewer in ("contact", "stranger"):
        assert seen(db, people, viewer) == {
            "online": False,
            "online_since": None,
            "last_seen": frozen,
        }, viewer
    for viewer in ("self", "service"):
        assert seen(db, people, viewer)["last_seen"] == left, viewer


def test_the_next_transition_after_the_period_shows_the_truth_again_and_forgets_it(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    laptop = new_id()
    leave_while_invisible(db, target)
    assert settings(db, target)["visible_since"] is not None
    beat(db, target, laptop)  # comes online after the period
    came = truth(db, target)["online_since"]
    assert seen(db, people, "stranger") == truth(db, target)
    assert seen(db, people, "stranger")["online_since"] == came
    assert settings(db, target) == {
        "invisible": False,
        "frozen_last_seen": None,
        "visible_since": None,
    }
    # Going offline after the period forgets it too.
    set_invisible(db, target, True)
    set_invisible(db, target, False)
    assert settings(db, target)["visible_since"] is not None
    beat(db, target, laptop)
    leave(db, target, laptop)
    assert settings(db, target)["visible_since"] is None
    assert seen(db, people, "stranger") == truth(db, target)


def test_going_invisible_again_keeps_the_last_seen_others_were_shown(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    frozen = leave_while_invisible(db, target)
    assert seen(db, people, "stranger")["last_seen"] == frozen
    set_invisible(db, target, True)  # offline, with a last seen from the old period
    assert settings(db, target)["frozen_last_seen"] == frozen
    assert seen(db, people, "stranger")["last_seen"] == frozen


def test_never_seen_before_a_period_stays_never_seen(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    set_invisible(db, target, True)
    assert settings(db, target)["frozen_last_seen"] is None
    phone = new_id()
    beat(db, target, phone)
    leave(db, target, phone)
    set_invisible(db, target, False)
    assert seen(db, people, "stranger") == {
        "online": False,
        "online_since": None,
        "last_seen": None,
    }
    assert seen(db, people, "self")["last_seen"] is not None
