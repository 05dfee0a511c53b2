"""The steady beat's fast path (migration 5): what it reads and writes, real PostgreSQL.

A steady beat (a live session keeping its status, its previous beat less than
timeout - heartbeat interval old) updates its session row and nothing else: it does
not even read ``public.users``. The session row remembers when it last refreshed
``users.last_heartbeat`` (``refreshed_at``); the refresh is due when that is older
than timeout - 2 x heartbeat interval (15 s with the default timings). Counted here
with the statistics of the beat's own transaction, in the PostgREST call shape.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from sessions_support import advance, beat, new_id, stored

from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

REFRESH_AGE = 45 - 2 * 15  # timeout - 2 x heartbeat interval


def scans(conn: psycopg.Connection[Any], table: str) -> int:
    """Scans of ``table`` (sequential, and of any of its indexes) in the current
    transaction so far."""
    row = conn.execute(
        "SELECT pg_stat_get_xact_numscans(%(t)s::regclass) + coalesce(("
        "    SELECT sum(pg_stat_get_xact_numscans(i.indexrelid)) FROM pg_index AS i"
        "    WHERE i.indrelid = %(t)s::regclass), 0)",
        {"t": table},
    ).fetchone()
    assert row is not None
    return int(row[0])


def beat_scans(db: PresenceDatabase, user: str, sid: str, fn: str) -> dict[str, Any]:
    """One beat as ``user`` in its own transaction (committed); what it scanned."""
    with db.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"role": "authenticated", "sub": user}),),
        )
        if fn == "presence_session_beat":
            conn.execute("SELECT public.presence_session_beat(%s::uuid, 'online')", (sid,))
        else:
            conn.execute("SELECT public.presence_heartbeat('online')")
        conn.execute("RESET ROLE")
        counted = {t: scans(conn, t) for t in ("public.users", "public.presence_sessions")}
        conn.execute("COMMIT")
    return counted


@pytest.mark.parametrize("fn", ["presence_session_beat", "presence_heartbeat"])
def test_a_steady_beat_reads_public_users_only_when_a_refresh_is_due(
    presence_db: PresenceDatabase, fn: str
) -> None:
    db = presence_db
    user = db.create_user()
    sid = new_id() if fn == "presence_session_beat" else user
    beat_scans(db, user, sid, fn)  # the session starts: a transition (sync_users)

    advance(db, REFRESH_AGE - 1)
    before = stored(db, user)
    assert beat_scans(db, user, sid, fn) == {"public.users": 0, "public.presence_sessions": 1}
    assert stored(db, user) == before  # not due: not written

    advance(db, 2)  # the session's last refresh is now older than REFRESH_AGE
    assert beat_scans(db, user, sid, fn) == {"public.users": 1, "public.presence_sessions": 1}
    (row,) = db.query(
        "SELECT u.last_heartbeat, s.refreshed_at, s.last_beat FROM public.users AS u "
        "JOIN public.presence_sessions AS s ON s.user_id = u.id WHERE u.id = %s",
        (user,),
    )
    assert row["last_heartbeat"] == row["refreshed_at"] == row["last_beat"]

    # Right after a refresh the next beat is not due again.
    assert beat_scans(db, user, sid, fn)["public.users"] == 0


def test_each_device_refreshes_on_its_own_schedule(presence_db: PresenceDatabase) -> None:
    """Each session decides from its own refreshed_at, so no beat reads public.users;
    the price: a user on n devices may refresh up to n times per REFRESH_AGE. The
    stored beat never lags the user's latest beat by more than REFRESH_AGE."""
    db = presence_db
    user = db.create_user()
    phone, laptop = new_id(), new_id()
    beat(db, user, phone)
    advance(db, 7)
    beat(db, user, laptop)  # a new session: sync_users, then refreshed_at from users
    (laptop_row,) = db.query(
        "SELECT refreshed_at FROM public.presence_sessions WHERE session_id = %s", (laptop,)
    )
    assert laptop_row["refreshed_at"] == stored(db, user)["last_heartbeat"]
    advance(db, 6)  # both sessions last saw a last_heartbeat 13 s old: not due
    assert beat_scans(db, user, laptop, "presence_session_beat")["public.users"] == 0
    assert beat_scans(db, user, phone, "presence_session_beat")["public.users"] == 0
    advance(db, 3)  # 16 s: the phone is due, and refreshes
    assert beat_scans(db, user, phone, "presence_session_beat")["public.users"] == 1
    assert age_of_stored_beat(db, user) < 1
    # The laptop's own record is just as old: it refreshes too (a second write).
    assert beat_scans(db, user, laptop, "presence_session_beat")["public.users"] == 1
    advance(db, REFRESH_AGE - 1)
    for sid in (phone, laptop):
        assert beat_scans(db, user, sid, "presence_session_beat")["public.users"] == 0
    assert age_of_stored_beat(db, user) <= REFRESH_AGE


def age_of_stored_beat(db: PresenceDatabase, user: str) -> float:
    (row,) = db.query(
        "SELECT extract(epoch FROM now() - last_heartbeat)::float AS s FROM public.users "
        "WHERE id = %s",
        (user,),
    )
    return float(row["s"])


def test_a_status_written_by_hand_is_repaired_by_the_next_refresh(
    presence_db: PresenceDatabase,
) -> None:
    """A stored status that is not live under a live session (written by hand, or left
    by a race) is repaired when the session next refreshes users.last_heartbeat."""
    db = presence_db
    user = db.create_user()
    sid = new_id()
    beat(db, user, sid, "away")
    db.query("UPDATE public.users SET status = 'offline' WHERE id = %s", (user,))
    advance(db, REFRESH_AGE + 1)
    beat(db, user, sid, "away")
    after = stored(db, user)
    assert after["status"] == "away"
    assert after["online_since"] is not None


def test_a_late_beat_reads_the_stored_status_and_repairs_it_at_once(
    presence_db: PresenceDatabase,
) -> None:
    """A beat whose previous one came more than timeout - interval ago (a lost beat)
    leaves the fast path: its session is near its timeout, where a sweep or leave
    running alongside could have taken it for timed out; it reads the stored status."""
    db = presence_db
    user = db.create_user()
    sid = new_id()
    beat(db, user, sid)
    advance(db, 31)  # past timeout - interval (30 s), still live (45 s)
    db.query("UPDATE public.users SET status = 'offline' WHERE id = %s", (user,))
    counted = beat_scans(db, user, sid, "presence_session_beat")
    assert counted["public.users"] >= 1
    assert stored(db, user)["status"] == "online"
    (row,) = db.query(
        "SELECT started_at < last_beat AS kept FROM public.presence_sessions WHERE session_id = %s",
        (sid,),
    )
    assert row["kept"]  # the same session went on: it was live
