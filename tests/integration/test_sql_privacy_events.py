"""The event log's privacy rule holds per event (migrations 6 and 7), real PostgreSQL.

An event is shown to another viewer only if the target's settings allowed it when it was
logged (its ``audience`` snapshot) AND allow it now. So what a user did while invisible,
or while hiding presence or last seen, never shows later, on any path of the log: the
table through PostgREST (RLS), ``presence_events_since``, the history RPCs, and the
Python client over HTTP. Flipping invisible mode shows others what the reads show them:
the user leaving (going invisible while online) or joining now (coming back online).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e_support import routed, sync_client
from events_support import advance, events, since
from privacy_support import as_api, install_friendships, set_invisible, set_visibility
from sessions_support import beat, leave, new_id, sweep
from test_sql_privacy_migration import BEFORE, PRIVACY

from presence_sdk import PresenceClient, schema_sql
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, install_supabase_shim

pytestmark = pytest.mark.integration

OTHERS = ("contact", "stranger")


@pytest.fixture
def people(presence_db: PresenceDatabase) -> dict[str, str]:
    """target, contact (a friend of target's: the shipped example hook), stranger."""
    ids = {name: presence_db.create_user() for name in ("target", "contact", "stranger")}
    install_friendships(presence_db, (ids["target"], ids["contact"]))
    return ids


def who(people: dict[str, str], viewer: str) -> tuple[str, str | None]:
    """(role, user) of a viewer name: service is the service role."""
    if viewer == "service":
        return "service_role", None
    return "authenticated", people[viewer]


def all_pages(db: PresenceDatabase, role: str, user: str | None) -> list[dict[str, Any]]:
    """Every event presence_events_since returns to this caller, paging to the end."""
    seen: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = since(db, cursor, 3, user=user, role=role)
        seen += page["events"]
        cursor = page["last_id"]
        if not page["more"]:
            return seen


def table_ids(db: PresenceDatabase, role: str, user: str | None, target: str) -> list[int]:
    """GET /rest/v1/presence_events?user_id=eq.<target>&order=id, as PostgREST runs it."""
    rows = as_api(
        db,
        role,
        user,
        'SELECT "id" FROM "public"."presence_events" WHERE "user_id" = %s ORDER BY "id"',
        (target,),
    )
    return [r["id"] for r in rows]


def online_seconds(db: PresenceDatabase, role: str, user: str | None, target: str) -> float:
    today = datetime.now(UTC).date()
    days = db.rpc(
        "presence_online_per_day",
        {
            "user_id": target,
            "from_day": str(today - timedelta(days=1)),
            "to_day": str(today),
            "time_zone": "UTC",
        },
        user_id=user,
        role=role,
    )
    return float(sum(d["online_seconds"] for d in days))


def visible_ids(db: PresenceDatabase, people: dict[str, str], viewer: str) -> list[int]:
    """The target's events this viewer gets from presence_events_since; the direct table
    read must agree."""
    role, user = who(people, viewer)
    target = people["target"]
    rpc = [e["id"] for e in all_pages(db, role, user) if e["user_id"] == target]
    if viewer != "service":  # the service role reads the truth: masks are not in the RPC
        assert table_ids(db, role, user, target) == rpc, viewer
    return rpc


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def user_events(db: PresenceDatabase, target: str, *, mask: bool = False) -> list[int]:
    rows = db.query(
        "SELECT id FROM public.presence_events "
        "WHERE user_id = %s AND session_id IS NULL AND mask = %s ORDER BY id",
        (target, mask),
    )
    return ids_of(rows)


def hidden_period(db: PresenceDatabase, target: str) -> list[int]:
    """Invisible, the target comes and goes on two devices, changes status, and is
    online (laptop) when this returns. Returns the ids of every event it logged."""
    first = max((r["id"] for r in events(db)), default=0)
    set_invisible(db, target, True)
    phone, laptop = new_id(), new_id()
    beat(db, target, phone, device="phone")
    advance(db, 20)
    beat(db, target, phone)
    beat(db, target, laptop, "away", device="laptop")
    leave(db, target, phone)  # status follows the laptop: away
    beat(db, target, laptop, "busy")
    advance(db, 20)
    leave(db, target, laptop)  # offline
    advance(db, 30)
    beat(db, target, laptop, device="laptop")  # back online
    advance(db, 20)
    beat(db, target, laptop)
    return ids_of(events(db, target, after=first))


def test_an_invisible_period_stays_hidden_after_invisible_mode_is_turned_off(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    # Visible first: a session of 20 s that everyone may see.
    before = new_id()
    beat(db, target, before, device="phone")
    advance(db, 20)
    leave(db, target, before)
    shown_before = user_events(db, target)
    assert len(shown_before) == 2  # online, offline

    hidden = hidden_period(db, target)
    assert {r["kind"] for r in events(db, target) if r["id"] in hidden} >= {
        "online",
        "offline",
        "status",
        "session_start",
        "session_end",
    }
    for viewer in OTHERS:  # while invisible, the current rule hides every event
        assert visible_ids(db, people, viewer) == [], viewer

    set_invisible(db, target, False)
    (mask,) = user_events(db, target, mask=True)  # others see the user join now
    (mask_row,) = [r for r in events(db, target) if r["id"] == mask]
    assert (mask_row["kind"], mask_row["reason"], mask_row["new_status"]) == (
        "online",
        "join",
        "online",
    )
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [*shown_before, mask], viewer
        assert not set(visible_ids(db, people, viewer)) & set(hidden)
    # The user and the service role see everything that happened, and no mask.
    everything = ids_of(events(db, target))
    assert visible_ids(db, people, "service") == [i for i in everything if i != mask]
    role, user = who(people, "target")
    assert [e["id"] for e in all_pages(db, role, user)] == [i for i in everything if i != mask]

    # Later events are visible again, and the hidden ones stay hidden.
    advance(db, 10)
    leave(db, target, [r for r in events(db, target) if r["session_id"]][-1]["session_id"])
    (offline,) = user_events(db, target)[-1:]
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [*shown_before, mask, offline], viewer

    # History: others count the visible session (20 s) and the time since coming back
    # (10 s); the user and the service role count the hidden period too (about 90 s).
    for viewer in OTHERS:
        role, user = who(people, viewer)
        assert 29 <= online_seconds(db, role, user, target) <= 45, viewer
        history = db.rpc(
            "presence_session_history",
            {"user_id": target, "from_time": str(datetime.now(UTC) - timedelta(hours=1))},
            user_id=user,
            role=role,
        )
        assert history == []  # devices are never shown to others
    for viewer in ("target", "service"):
        role, user = who(people, viewer)
        assert online_seconds(db, role, user, target) >= 85, viewer
        history = db.rpc(
            "presence_session_history",
            {"user_id": target, "from_time": str(datetime.now(UTC) - timedelta(hours=1))},
            user_id=user,
            role=role,
        )
        assert len(history) == 4  # before, phone, laptop, laptop again


def test_going_invisible_while_online_shows_others_a_leave_and_nothing_after(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    session = new_id()
    beat(db, target, session)
    online = user_events(db, target)
    set_invisible(db, target, True)
    (mask,) = user_events(db, target, mask=True)
    (mask_row,) = [r for r in events(db, target) if r["id"] == mask]
    assert (mask_row["kind"], mask_row["old_status"], mask_row["reason"]) == (
        "offline",
        "online",
        "leave",
    )
    beat(db, target, session, "busy")  # hidden
    leave(db, target, session)  # hidden
    for viewer in OTHERS:  # while invisible, the current rule hides every event
        assert visible_ids(db, people, viewer) == [], viewer
    # The truth has no such transition: the user and the service role never get the mask.
    assert mask not in visible_ids(db, people, "service")
    role, user = who(people, "target")
    assert mask not in [e["id"] for e in all_pages(db, role, user)]
    # Turning it off while offline logs nothing: others already see the user offline.
    set_invisible(db, target, False)
    assert user_events(db, target, mask=True) == [mask]
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [*online, mask], viewer


def test_events_while_presence_was_nobody_stay_hidden_once_it_is_everyone(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    set_visibility(db, target, presence="nobody")
    session = new_id()
    beat(db, target, session)
    beat(db, target, session, "away")
    leave(db, target, session)
    hidden = user_events(db, target)
    assert len(hidden) == 3
    set_visibility(db, target, presence="everyone")
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [], viewer
    beat(db, target, new_id())
    shown = [i for i in user_events(db, target) if i not in hidden]
    assert len(shown) == 1
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == shown, viewer
    # Tightening hides the past at once (the current rule), loosening again shows only
    # what was logged for everyone.
    set_visibility(db, target, last_seen="nobody")
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [], viewer
    set_visibility(db, target, last_seen="everyone")
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == shown, viewer


def test_events_logged_for_contacts_stay_hidden_from_a_non_contact(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    set_visibility(db, target, presence="contacts")
    session = new_id()
    beat(db, target, session)
    leave(db, target, session)
    for_contacts = user_events(db, target)
    assert visible_ids(db, people, "contact") == for_contacts
    assert visible_ids(db, people, "stranger") == []
    set_visibility(db, target, presence="everyone")
    beat(db, target, new_id())
    for_everyone = [i for i in user_events(db, target) if i not in for_contacts]
    assert visible_ids(db, people, "contact") == for_contacts + for_everyone
    assert visible_ids(db, people, "stranger") == for_everyone
    # A contact who is no longer one loses the contacts-only events, keeps the others.
    db.query("DELETE FROM public.friendships")
    assert visible_ids(db, people, "contact") == for_everyone


def test_a_timeout_noticed_after_invisible_mode_ended_stays_hidden(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    """The sweep logs a timeout late, at its exact (earlier) time: inside the invisible
    period, so hidden although invisible mode is off when it is written."""
    db, target = presence_db, people["target"]
    set_invisible(db, target, True)
    beat(db, target, new_id())
    advance(db, 50)  # silent: timed out (45 s) while invisible, not yet swept
    set_invisible(db, target, False)  # offline by then: no mask
    assert user_events(db, target, mask=True) == []
    sweep(db)
    (offline,) = [r for r in events(db, target) if r["kind"] == "offline"]
    assert offline["reason"] == "timeout"
    for viewer in OTHERS:
        assert visible_ids(db, people, viewer) == [], viewer


def test_the_python_client_gets_only_what_the_viewer_may_see(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db, target = presence_db, people["target"]
    hidden = hidden_period(db, target)
    set_invisible(db, target, False)
    (mask,) = user_events(db, target, mask=True)
    today = datetime.now(UTC).date()
    with routed(db) as (emulator, _):
        got: dict[str, list[int]] = {}
        for viewer in ("stranger", "target"):
            supabase = sync_client(emulator, emulator.user_token(people[viewer]))
            client = PresenceClient(supabase)
            got[viewer] = [e.id for e in client.events_since(0, 1000).events]
            days = client.online_per_day(target, today - timedelta(days=1), today)
            got[viewer + "_days"] = [round(d.online.total_seconds()) for d in days]
            supabase.postgrest.session.close()
    assert got["stranger"] == [mask]
    assert set(hidden) <= set(got["target"])
    assert mask not in got["target"]
    assert sum(got["stranger_days"]) <= 10  # online since invisible mode ended: just now
    assert sum(got["target_days"]) >= 55


def test_events_logged_before_the_upgrade_follow_the_current_rule(
    presence_server: PresenceTestServer,
) -> None:
    """Rows with no snapshot (logged before migration 7) follow the settings of now."""
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
            conn.execute(schema_sql())
            for migration in BEFORE:
                conn.execute(migration.up)
        target, stranger = db.create_user(), db.create_user()
        session = new_id()
        beat(db, target, session)
        leave(db, target, session)
        old = ids_of(events(db, target))
        assert db.query("SELECT DISTINCT audience FROM public.presence_events") == [
            {"audience": None}
        ]
        with db.connect() as conn:
            conn.execute(PRIVACY.up)

        def stranger_sees() -> list[int]:
            page = since(db, 0, 100, user=stranger)
            return [e["id"] for e in page["events"] if e["user_id"] == target]

        assert stranger_sees() == [i for i in old if i in user_events(db, target)]
        set_visibility(db, target, presence="nobody")
        assert stranger_sees() == []
        set_visibility(db, target, presence="everyone")
        set_invisible(db, target, True)
        assert stranger_sees() == []
        set_invisible(db, target, False)  # offline: no mask
        assert stranger_sees() == [i for i in old if i in user_events(db, target)]
        # The rollback of 7 keeps events logged for nobody hidden (06's default rule
        # fails closed on any audience but everyone).
        set_invisible(db, target, True)
        beat(db, target, new_id())
        hidden = user_events(db, target)[-1]
        with db.connect() as conn:
            conn.execute(PRIVACY.down)
        assert hidden not in stranger_sees()
        assert set(old) & set(user_events(db, target)) <= set(stranger_sees())


def test_the_service_roles_batch_logs_a_mask_per_online_user_only(
    presence_db: PresenceDatabase, people: dict[str, str]
) -> None:
    db = presence_db
    online = [db.create_user() for _ in range(2)]
    for user in online:
        beat(db, user, new_id(), "away")
    offline = people["target"]
    flipped = db.rpc(
        "presence_set_invisible_for",
        {"user_ids": [*online, offline], "invisible": True},
        role="service_role",
    )
    assert flipped["changed"] == 3
    masks = db.query(
        "SELECT user_id::text, kind, old_status, reason FROM public.presence_events "
        "WHERE mask ORDER BY user_id"
    )
    assert masks == [
        {"user_id": u, "kind": "offline", "old_status": "away", "reason": "leave"}
        for u in sorted(online)
    ]
    # Again: nobody flips, nothing more is logged.
    db.rpc(
        "presence_set_invisible_for",
        {"user_ids": [*online, offline], "invisible": True},
        role="service_role",
    )
    assert len(db.query("SELECT 1 FROM public.presence_events WHERE mask")) == 2
