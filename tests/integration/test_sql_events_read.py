"""Reading the event log (migration 6): presence_events_since, RLS, retention, history.

Real PostgreSQL, through the PostgREST call shape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from events_support import events, newest_id, since
from sessions_support import beat, leave, new_id, sweep, table_hash

from presence_sdk import migrations
from presence_sdk.testing import PostgRESTError, PresenceDatabase

pytestmark = pytest.mark.integration


@contextmanager
def open_transition(db: PresenceDatabase, user: str) -> Iterator[psycopg.Connection[Any]]:
    """A transition (a new session of ``user``) in a transaction left open."""
    with db.connect(autocommit=False) as conn:
        conn.execute(
            "SELECT public.presence_track_beat(jsonb_build_array(jsonb_build_object("
            "'session_id', %s::text, 'user_id', %s::text)))",
            (new_id(), user),
        )
        yield conn


def ids(page: dict[str, Any]) -> list[int]:
    return [e["id"] for e in page["events"]]


def test_events_since_pages_in_id_order(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    for _ in range(3):
        session = new_id()
        beat(presence_db, user, session)
        leave(presence_db, user, session)
    everything = [r["id"] for r in events(presence_db)]
    assert len(everything) == 12

    first = since(presence_db, 0, 5, role="service_role")
    assert ids(first) == everything[:5]
    assert (first["last_id"], first["more"]) == (everything[4], True)
    second = since(presence_db, first["last_id"], 100, role="service_role")
    assert ids(second) == everything[5:]
    assert (second["last_id"], second["more"]) == (everything[-1], False)
    assert since(presence_db, everything[-1], role="service_role") == {
        "events": [],
        "last_id": everything[-1],
        "more": False,
    }
    event = second["events"][-1]
    assert set(event) == {
        "id",
        "occurred_at",
        "kind",
        "user_id",
        "session_id",
        "old_status",
        "new_status",
        "reason",
        "device",
    }
    assert (event["kind"], event["reason"], event["user_id"]) == ("offline", "leave", user)


def test_an_open_transaction_holds_back_later_ids_until_it_commits(
    presence_db: PresenceDatabase,
) -> None:
    """No event is skipped: ids committed out of order are returned only once the
    transaction holding a lower id has finished."""
    early, slow, fast = (presence_db.create_user() for _ in range(3))
    beat(presence_db, early, new_id())
    committed = newest_id(presence_db)
    with open_transition(presence_db, slow) as conn:
        beat(presence_db, fast, new_id())  # commits ids above the open transaction's
        assert newest_id(presence_db) > committed
        held = since(presence_db, 0, role="service_role")
        assert ids(held) == [r["id"] for r in events(presence_db)][:2]
        assert (held["last_id"], held["more"]) == (committed, True)
        conn.commit()
    after = since(presence_db, held["last_id"], role="service_role")
    assert [e["user_id"] for e in after["events"]] == [slow, slow, fast, fast]
    assert ids(after) == sorted(ids(after))
    assert after["more"] is False


def test_a_rolled_back_transaction_leaves_a_gap_that_is_skipped(
    presence_db: PresenceDatabase,
) -> None:
    gone, kept = presence_db.create_user(), presence_db.create_user()
    with open_transition(presence_db, gone) as conn:
        beat(presence_db, kept, new_id())
        assert since(presence_db, 0, role="service_role")["events"] == []
        conn.rollback()
    page = since(presence_db, 0, role="service_role")
    assert [e["user_id"] for e in page["events"]] == [kept, kept]
    assert page["last_id"] == newest_id(presence_db)
    assert page["more"] is False


def test_rls_a_user_sees_others_presence_but_only_their_own_sessions(
    presence_db: PresenceDatabase,
) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    mine, theirs = new_id(), new_id()
    beat(presence_db, me, mine, device="phone")
    beat(presence_db, other, theirs, device="secret-laptop")

    seen = since(presence_db, 0, user=me)["events"]
    assert [(e["kind"], e["user_id"], e["session_id"]) for e in seen] == [
        ("session_start", me, mine),
        ("online", me, None),
        ("online", other, None),
    ]
    assert len(since(presence_db, 0, role="service_role")["events"]) == 4
    # Direct reads of the table obey the same policy.
    with presence_db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{me}", "role": "authenticated"}}',),
        )
        devices = conn.execute("SELECT device FROM public.presence_events").fetchall()
    assert ("secret-laptop",) not in devices

    # The one visibility rule, replaced (as issue 14 will): nobody else is visible,
    # and the cursor still moves past what the reader may not see.
    presence_db.query(
        "CREATE OR REPLACE FUNCTION presence_private.can_see_events(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS $$ SELECT false $$"
    )
    page = since(presence_db, 0, user=me)
    assert [e["user_id"] for e in page["events"]] == [me, me]
    assert page["last_id"] == newest_id(presence_db)


def test_rpcs_refuse_anon_and_missing_identity(presence_db: PresenceDatabase) -> None:
    for fn, params in [
        ("presence_events_since", {"after_id": 0, "max_rows": 10}),
        (
            "presence_session_history",
            {"user_id": new_id(), "from_time": datetime.now(UTC).isoformat()},
        ),
        (
            "presence_online_per_day",
            {"user_id": new_id(), "from_day": "2026-01-01", "to_day": "2026-01-02"},
        ),
    ]:
        with pytest.raises(PostgRESTError) as denied:
            presence_db.rpc(fn, params)
        assert (denied.value.status, denied.value.code) == (401, "42501"), fn
    with pytest.raises(PostgRESTError) as anonymous:
        presence_db.rpc(
            "presence_events_since", {"after_id": 0, "max_rows": 1}, role="authenticated"
        )
    assert anonymous.value.code == "28000"
    for fn, params in [
        ("presence_prune_events", {"max_rows": 10}),
        ("presence_configure_events", {"retention_days": 3}),
    ]:
        with pytest.raises(PostgRESTError) as forbidden:
            presence_db.rpc(fn, params, user_id=presence_db.create_user())
        assert forbidden.value.code == "42501", fn


BAD_SINCE = [
    ({"after_id": -1, "max_rows": 10}, "after_id must be 0 or a positive event id"),
    ({"after_id": None, "max_rows": 10}, "after_id must be 0 or a positive event id"),
    ({"after_id": 10**15, "max_rows": 10}, "is beyond the newest event id"),
    ({"after_id": 0, "max_rows": 0}, "max_rows must be between 1 and 1000"),
    ({"after_id": 0, "max_rows": 1001}, "max_rows must be between 1 and 1000"),
    ({"after_id": 0, "max_rows": None}, "max_rows must be between 1 and 1000"),
]


@pytest.mark.parametrize(("params", "message"), BAD_SINCE)
def test_bad_arguments_to_events_since_are_refused(
    presence_db: PresenceDatabase, params: dict[str, Any], message: str
) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id())
    before = table_hash(presence_db), events(presence_db)
    with pytest.raises(PostgRESTError) as refused:
        presence_db.rpc("presence_events_since", params, user_id=user)
    assert (refused.value.status, refused.value.code) == (400, "22023")
    assert message in refused.value.message
    assert (table_hash(presence_db), events(presence_db)) == before


def test_events_since_refuses_snapshot_isolation(presence_db: PresenceDatabase) -> None:
    with presence_db.connect(autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="needs READ COMMITTED"):
            conn.execute("SELECT public.presence_events_since(0, 10)")


def _old_events(db: PresenceDatabase, user: str, n: int, age: timedelta) -> None:
    db.query(
        "INSERT INTO public.presence_events (occurred_at, kind, user_id, reason) "
        "SELECT now() - %s, 'online', %s, 'join' FROM generate_series(1, %s)",
        (age, user, n),
    )


def test_pruning_removes_only_old_events_in_bounded_batches(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    presence_db.query("SELECT public.presence_configure_events(2)")
    _old_events(presence_db, user, 25, timedelta(days=3))
    _old_events(presence_db, user, 5, timedelta(days=1))  # within the retention
    beat(presence_db, user, new_id())  # fresh ones

    def prune(max_rows: int) -> int:
        (row,) = presence_db.query("SELECT public.presence_prune_events(%s) AS n", (max_rows,))
        pruned: int = row["n"]
        return pruned

    assert [prune(10), prune(10), prune(10), prune(10)] == [10, 10, 5, 0]
    left = events(presence_db)
    assert len(left) == 7
    assert min(r["occurred_at"] for r in left) > datetime.now(UTC) - timedelta(days=2)

    # The sweep (the pg_cron job's command) prunes too.
    _old_events(presence_db, user, 3, timedelta(days=5))
    sweep(presence_db)
    assert len(events(presence_db)) == 7

    # One pruner at a time: a second one returns at once.
    _old_events(presence_db, user, 3, timedelta(days=5))
    with presence_db.connect(autocommit=False) as busy:
        busy.execute("SELECT public.presence_prune_events(1)")
        assert prune(10) == 0
    assert prune(10) == 3

    with pytest.raises(psycopg.errors.InvalidParameterValue):
        presence_db.query("SELECT public.presence_prune_events(0)")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        presence_db.query("SELECT public.presence_configure_events(0)")
    (config,) = presence_db.query("SELECT events_retention_days FROM public.presence_config")
    assert config == {"events_retention_days": 2}


def test_retention_defaults_to_30_days(presence_db: PresenceDatabase) -> None:
    assert presence_db.query("SELECT events_retention_days FROM public.presence_config") == [
        {"events_retention_days": 30}
    ]


def test_a_reader_racing_concurrent_writers_misses_nothing(presence_db: PresenceDatabase) -> None:
    """Writers commit in any order; a reader paging by last_id sees each event once."""
    users = [presence_db.create_user() for _ in range(4)]
    done = threading.Event()

    def write(user: str) -> None:
        for _ in range(15):
            session = new_id()
            beat(presence_db, user, session)
            leave(presence_db, user, session)

    seen: list[int] = []
    cursor = 0
    writers = [threading.Thread(target=write, args=(u,)) for u in users]
    for w in writers:
        w.start()

    def wait_for_writers() -> None:
        for w in writers:
            w.join()
        done.set()

    threading.Thread(target=wait_for_writers).start()
    while True:
        finished = done.is_set()
        page = since(presence_db, cursor, 7, role="service_role")
        seen += ids(page)
        cursor = page["last_id"]
        if finished and not page["more"]:
            break
    assert seen == [r["id"] for r in events(presence_db)]
    assert len(seen) == 4 * 15 * 4


def test_rollback_keeps_presence_working_and_reapply_restores_the_log(
    presence_db: PresenceDatabase,
) -> None:
    (events_migration,) = [m for m in migrations() if m.name == "events"]
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    with presence_db.connect() as conn:
        conn.execute(events_migration.down)
        conn.execute(events_migration.down)  # idempotent
    assert presence_db.query("SELECT to_regclass('public.presence_events') AS t") == [{"t": None}]
    leave(presence_db, user, session)
    sweep(presence_db)  # the sweep no longer prunes, and still works
    assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is False
    with presence_db.connect() as conn:
        conn.execute(events_migration.up)
    beat(presence_db, user, new_id())
    assert [r["kind"] for r in events(presence_db)] == ["session_start", "online"]


def test_a_writer_older_than_the_readers_cursor_never_sends_it_back(
    presence_db: PresenceDatabase,
) -> None:
    """An open writer whose mark is below ids already read holds back only what it may
    still commit: the cursor never moves backwards (found by the racing test under
    load: the reader was sent back and saw four events twice)."""
    user = presence_db.create_user()
    session = new_id()
    beat(presence_db, user, session)
    leave(presence_db, user, session)
    cursor = since(presence_db, 0, 100, role="service_role")["last_id"]
    assert cursor == newest_id(presence_db) >= 4
    with psycopg.connect(presence_db.dsn, autocommit=False) as writer:
        # A writer registered when the newest id was 1, holding an uncommitted id (a gap).
        writer.execute("SELECT pg_advisory_xact_lock_shared(presence_private.events_lock_key(), 1)")
        writer.execute("SELECT nextval('public.presence_events_id_seq')")
        beat(presence_db, user, new_id())  # committed events above the gap
        page = since(presence_db, cursor, 100, role="service_role")
        assert page["last_id"] == cursor  # held at the gap, never sent back
        assert page["events"] == []
        assert page["more"] is True
        writer.rollback()
    after = since(presence_db, cursor, 100, role="service_role")
    assert [e["kind"] for e in after["events"]] == ["session_start", "online"]
    assert after["last_id"] > cursor
