"""Reads are exact at read time, even with the sweep stopped.

The per-test databases are not the pg_cron database, so no job can sweep there: the
stored status of a silent user stays 'online' and every read path must still say
offline once the last heartbeat is older than the 45 s timeout.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from presence_sdk.testing import PostgRESTError, PresenceDatabase

pytestmark = pytest.mark.integration


def arrange(db: PresenceDatabase, status: str, seconds_ago: float | None) -> str:
    user = db.create_user()
    db.query(
        "UPDATE public.users SET status = %s, "
        "last_heartbeat = now() - make_interval(secs => %s), "
        "online_since = now() - make_interval(secs => %s) - interval '1 hour' WHERE id = %s",
        (status, seconds_ago, seconds_ago, user),
    )
    return user


@pytest.fixture
def people(presence_db: PresenceDatabase) -> dict[str, str]:
    """silent: online but 46 s without a heartbeat; recent: online, 40 s ago (a few
    seconds of slack before the 45 s timeout, for slow machines); busy: 5 s ago."""
    # Nothing can sweep in this database.
    assert presence_db.query("SELECT to_regnamespace('cron') IS NULL AS no_cron") == [
        {"no_cron": True}
    ]
    return {
        "silent": arrange(presence_db, "online", 46),
        "recent": arrange(presence_db, "online", 40),
        "busy": arrange(presence_db, "busy", 5),
        "away_silent": arrange(presence_db, "away", 300),
        "gone": arrange(presence_db, "offline", 10),
        "never": presence_db.create_user(),
        "reader": presence_db.create_user(),
    }


def stored_status(db: PresenceDatabase, user: str) -> str:
    rows = db.query("SELECT status FROM public.users WHERE id = %s", (user,))
    status: str = rows[0]["status"]
    return status


def test_presence_get_derives_offline(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    wanted = [people[k] for k in ("silent", "busy", "recent", "away_silent", "gone", "never")]
    rows = presence_db.rpc("presence_get", {"user_ids": wanted}, user_id=people["reader"])
    assert [r["user_id"] for r in rows] == wanted  # order of the request
    got = {r["user_id"]: (r["status"], r["online"]) for r in rows}
    assert got == {
        people["silent"]: ("offline", False),
        people["busy"]: ("busy", True),
        people["recent"]: ("online", True),
        people["away_silent"]: ("offline", False),
        people["gone"]: ("offline", False),
        people["never"]: ("offline", False),
    }
    silent = rows[0]
    assert silent["online_since"] is None
    assert silent["last_seen"] == silent["last_heartbeat"] is not None
    assert stored_status(presence_db, people["silent"]) == "online"


def test_presence_is_online(presence_db: PresenceDatabase, people: dict[str, str]) -> None:
    def online(key: str) -> Any:
        return presence_db.rpc(
            "presence_is_online", {"user_id": people[key]}, user_id=people["reader"]
        )

    assert online("silent") is False
    assert online("away_silent") is False
    assert online("recent") is True
    assert online("busy") is True
    assert online("never") is False
    unknown = presence_db.rpc(
        "presence_is_online", {"user_id": str(uuid.uuid4())}, user_id=people["reader"]
    )
    assert unknown is False
    assert stored_status(presence_db, people["silent"]) == "online"


def test_presence_list_online(presence_db: PresenceDatabase, people: dict[str, str]) -> None:
    rows = presence_db.rpc("presence_list_online", {}, user_id=people["reader"])
    assert sorted(r["user_id"] for r in rows) == sorted([people["recent"], people["busy"]])
    assert all(r["online"] is True for r in rows)
    assert [r["user_id"] for r in rows] == sorted(r["user_id"] for r in rows)


def test_presence_list_online_keyset_pages(presence_db: PresenceDatabase) -> None:
    reader = presence_db.create_user()
    online = sorted(arrange(presence_db, "online", 1) for _ in range(7))
    arrange(presence_db, "online", 60)  # silent: never listed
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"page_size": 3}
        if cursor is not None:
            params["after_user_id"] = cursor
        page = presence_db.rpc("presence_list_online", params, user_id=reader)
        seen += [r["user_id"] for r in page]
        if len(page) < 3:
            break
        cursor = page[-1]["user_id"]
    assert seen == online
    for bad in (0, 1001):
        with pytest.raises(PostgRESTError) as info:
            presence_db.rpc("presence_list_online", {"page_size": bad}, user_id=reader)
        assert info.value.code == "22023"


def test_presence_counts(presence_db: PresenceDatabase, people: dict[str, str]) -> None:
    counts = presence_db.rpc("presence_counts", {}, user_id=people["reader"])
    # online: recent; busy: busy; offline: silent, away_silent, gone, never, reader.
    assert counts == {"online": 1, "away": 0, "busy": 1, "offline": 5, "offline_estimated": False}


def test_user_presence_view(presence_db: PresenceDatabase, people: dict[str, str]) -> None:
    with presence_db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"role": "authenticated", "sub": people["reader"]}),),
        )
        rows = conn.execute(
            "SELECT user_id::text, status, online FROM public.user_presence"
        ).fetchall()
    view = {user: (status, online) for user, status, online in rows}
    assert view[people["silent"]] == ("offline", False)
    assert view[people["away_silent"]] == ("offline", False)
    assert view[people["recent"]] == ("online", True)
    assert view[people["busy"]] == ("busy", True)
    assert stored_status(presence_db, people["silent"]) == "online"


def test_the_sweep_only_catches_the_stored_column_up(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    everyone = list(people.values())
    before = presence_db.rpc("presence_get", {"user_ids": everyone}, user_id=people["reader"])
    assert presence_db.rpc("mark_inactive_users_offline", role="service_role") == 2
    after = presence_db.rpc("presence_get", {"user_ids": everyone}, user_id=people["reader"])
    assert after == before
    assert stored_status(presence_db, people["silent"]) == "offline"
    assert stored_status(presence_db, people["recent"]) == "online"


def test_a_heartbeat_after_the_timeout_starts_a_new_session(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    silent = people["silent"]
    presence_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=silent)
    (row,) = presence_db.rpc("presence_get", {"user_ids": [silent]}, user_id=silent)
    assert row["online"] is True
    assert row["online_since"] == row["last_heartbeat"]
    # A beat within the timeout keeps the session start.
    recent = people["recent"]
    (before,) = presence_db.query("SELECT online_since FROM public.users WHERE id = %s", (recent,))
    presence_db.rpc("presence_heartbeat", {"new_status": "away"}, user_id=recent)
    (after,) = presence_db.query(
        "SELECT online_since, status FROM public.users WHERE id = %s", (recent,)
    )
    assert after == {"online_since": before["online_since"], "status": "away"}


@pytest.mark.parametrize(
    "user_ids", [None, [str(uuid.uuid4()) for _ in range(1001)]], ids=["null", "1001-ids"]
)
def test_presence_get_rejects_bad_id_lists(
    presence_db: PresenceDatabase, user_ids: list[str] | None
) -> None:
    reader = presence_db.create_user()
    with pytest.raises(PostgRESTError) as info:
        presence_db.rpc("presence_get", {"user_ids": user_ids}, user_id=reader)
    assert (info.value.status, info.value.code) == (400, "22023")
    assert "at most 1000 ids" in info.value.message


def test_presence_get_leaves_out_unknown_ids(presence_db: PresenceDatabase) -> None:
    reader = presence_db.create_user()
    unknown = str(uuid.uuid4())
    rows = presence_db.rpc("presence_get", {"user_ids": [unknown, reader]}, user_id=reader)
    assert [r["user_id"] for r in rows] == [reader]
    assert presence_db.rpc("presence_get", {"user_ids": []}, user_id=reader) == []
