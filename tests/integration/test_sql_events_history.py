"""History from the event log (migration 6): sessions in a range, time online per day.

Real PostgreSQL, through the PostgREST call shape.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from events_support import advance, at, events
from sessions_support import beat, leave, new_id, sweep, table_hash

from presence_sdk.testing import PostgRESTError, PresenceDatabase

pytestmark = pytest.mark.integration


def history(db: PresenceDatabase, user: str, *, reader: str | None = None, **kw: Any) -> Any:
    params = {
        "user_id": user,
        "from_time": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "to_time": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
        **kw,
    }
    if reader == "service_role":
        return db.rpc("presence_session_history", params, role="service_role")
    return db.rpc("presence_session_history", params, user_id=reader or user)


def per_day(db: PresenceDatabase, user: str, first: date, last: date, tz: str = "UTC") -> Any:
    return db.rpc(
        "presence_online_per_day",
        {"user_id": user, "from_day": first.isoformat(), "to_day": last.isoformat(),
         "time_zone": tz},
        role="service_role",
    )  # fmt: skip


def test_session_history_lists_devices_with_start_end_and_reason(
    presence_db: PresenceDatabase,
) -> None:
    user, other = presence_db.create_user(), presence_db.create_user()
    phone, laptop, tablet = new_id(), new_id(), new_id()
    phone_start = beat(presence_db, user, phone, device="phone")
    phone_end = leave(presence_db, user, phone)
    tablet_start = beat(presence_db, user, tablet, device="tablet")
    laptop_start = beat(presence_db, user, laptop, "away", device="laptop")
    advance(presence_db, 60)  # the tablet and laptop time out ...
    beat(presence_db, user, laptop, "away")  # ... the laptop comes back (a new session)
    sweep(presence_db)
    (tablet_end,) = [
        r["occurred_at"] for r in events(presence_db, user) if r["kind"] == "session_end"
        and r["session_id"] == tablet
    ]  # fmt: skip

    # advance() moved the log back with the rows: so do the times the calls returned.
    phone_start, phone_end, tablet_start, laptop_start = (
        t - timedelta(seconds=60) for t in (phone_start, phone_end, tablet_start, laptop_start)
    )
    rows = history(presence_db, user)
    assert [
        (r["session_id"], r["device"], r["status"], at(r["started_at"]), r["end_reason"])
        for r in rows
    ][:3] == [
        (phone, "phone", "online", phone_start, "leave"),
        (tablet, "tablet", "online", tablet_start, "timeout"),
        (laptop, "laptop", "away", laptop_start, "timeout"),
    ]
    assert at(rows[0]["ended_at"]) == phone_end
    assert at(rows[1]["ended_at"]) == tablet_end
    assert (rows[3]["session_id"], rows[3]["ended_at"], rows[3]["end_reason"]) == (
        laptop,
        None,
        None,
    )
    assert len(rows) == 4
    assert history(presence_db, user, reader="service_role") == rows
    assert history(presence_db, user, reader=other) == []  # others see no sessions
    assert len(history(presence_db, user, max_rows=2)) == 2


def _edges(db: PresenceDatabase, user: str, spans: list[tuple[datetime, datetime]]) -> None:
    for start, end in spans:
        db.query(
            "INSERT INTO public.presence_events (occurred_at, kind, user_id, old_status, "
            "new_status, reason) VALUES (%s, 'online', %s, 'offline', 'online', 'join'), "
            "(%s, 'offline', %s, 'online', 'offline', 'leave')",
            (start, user, end, user),
        )


def _expected(spans: list[tuple[datetime, datetime]], days: list[date], tz: str) -> list[float]:
    zone = ZoneInfo(tz)
    out = []
    for d in days:
        lo = datetime.combine(d, time(), zone)
        hi = datetime.combine(d + timedelta(days=1), time(), zone)
        out.append(sum(max(0.0, (min(e, hi) - max(s, lo)).total_seconds()) for s, e in spans))
    return out


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "America/New_York"])
def test_time_online_per_day_is_exact_in_a_time_zone(
    presence_db: PresenceDatabase, tz: str
) -> None:
    user = presence_db.create_user()
    today = datetime.now(UTC).date()
    base = datetime.combine(today - timedelta(days=3), time(), UTC)
    spans = [
        (base + timedelta(hours=23), base + timedelta(days=1, hours=1)),  # over midnight UTC
        (base + timedelta(days=1, hours=10), base + timedelta(days=1, hours=10, minutes=30)),
        (base + timedelta(days=2, hours=14, seconds=7), base + timedelta(days=2, hours=20)),
    ]
    _edges(presence_db, user, spans)
    first, last = today - timedelta(days=4), today - timedelta(days=1)
    days = [first + timedelta(days=k) for k in range(4)]
    rows = per_day(presence_db, user, first, last, tz)
    assert [date.fromisoformat(r["day"]) for r in rows] == days
    assert [r["online_seconds"] for r in rows] == pytest.approx(_expected(spans, days, tz))


def test_time_online_counts_an_open_session_up_to_now(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    beat(presence_db, user, new_id())
    today = datetime.now(UTC).date()
    (row,) = per_day(presence_db, user, today, today)
    assert 0 <= row["online_seconds"] < 60
    # Others see it as the log's visibility allows (default: every signed-in user).
    viewer = presence_db.create_user()
    seen = presence_db.rpc(
        "presence_online_per_day",
        {"user_id": user, "from_day": today.isoformat(), "to_day": today.isoformat()},
        user_id=viewer,
    )
    assert len(seen) == 1


def test_a_timed_out_user_is_counted_until_the_timeout_not_the_sweep(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    start = datetime.now(UTC) - timedelta(minutes=10)
    presence_db.query(
        "INSERT INTO public.presence_events (occurred_at, kind, user_id, old_status, "
        "new_status, reason) VALUES (%s, 'online', %s, 'offline', 'online', 'join')",
        (start, user),
    )
    presence_db.query(
        "UPDATE public.users SET last_heartbeat = %s WHERE id = %s",
        (start + timedelta(minutes=2), user),
    )
    today = datetime.now(UTC).date()
    (row,) = per_day(presence_db, user, today, today)
    online = (start, start + timedelta(minutes=2, seconds=45))  # last beat + timeout
    assert row["online_seconds"] == pytest.approx(_expected([online], [today], "UTC")[0])


BAD_HISTORY = [
    ({"from_time": "2026-01-02T00:00:00Z", "to_time": "2026-01-01T00:00:00Z"}, "must go forwards"),
    ({"max_rows": 0}, "max_rows must be between 1 and 1000"),
    ({"max_rows": 100000}, "max_rows must be between 1 and 1000"),
]


@pytest.mark.parametrize(("params", "message"), BAD_HISTORY)
def test_bad_session_history_arguments_are_refused(
    presence_db: PresenceDatabase, params: dict[str, Any], message: str
) -> None:
    user = presence_db.create_user()
    before = table_hash(presence_db)
    with pytest.raises(PostgRESTError) as refused:
        history(presence_db, user, **params)
    assert (refused.value.status, refused.value.code) == (400, "22023")
    assert message in refused.value.message
    assert table_hash(presence_db) == before


def test_history_ranges_beyond_the_retention_are_refused(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    now = datetime.now(UTC)
    with pytest.raises(PostgRESTError, match="reaches past the 30 days of events kept"):
        history(presence_db, user, from_time=(now - timedelta(days=40)).isoformat())
    today = now.date()
    with pytest.raises(PostgRESTError, match="reaches past the 30 days"):
        per_day(presence_db, user, today - timedelta(days=45), today)
    presence_db.query("SELECT public.presence_configure_events(5)")
    with pytest.raises(PostgRESTError, match="reaches past the 5 days"):
        per_day(presence_db, user, today - timedelta(days=10), today)
    assert len(per_day(presence_db, user, today - timedelta(days=4), today)) == 5


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "x" * 200])
def test_an_unknown_time_zone_is_refused(presence_db: PresenceDatabase, tz: str) -> None:
    user = presence_db.create_user()
    today = datetime.now(UTC).date()
    with pytest.raises(PostgRESTError) as refused:
        per_day(presence_db, user, today, today, tz)
    assert (refused.value.status, refused.value.code) == (400, "22023")
    assert "unknown time zone" in refused.value.message
    assert len(refused.value.message) < 200


def test_a_backwards_day_range_is_refused(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    today = datetime.now(UTC).date()
    with pytest.raises(PostgRESTError, match="must go forwards"):
        per_day(presence_db, user, today, today - timedelta(days=1))
