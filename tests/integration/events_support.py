"""Helpers for the tests of the presence event log (migration 6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from presence_sdk.testing import PresenceDatabase

EVENT_COLUMNS = (
    "id, occurred_at, kind, user_id::text, session_id::text, old_status, new_status, reason, device"
)


def advance(db: PresenceDatabase, seconds: float) -> None:
    """Let ``seconds`` pass (as sessions_support.advance), without logging anything.

    Moving stored times back is not a transition: the triggers are off for it
    (session_replication_role = replica, local to the transaction). Events already
    logged move back too, so that the log stays in step with the rows.
    """
    with db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "UPDATE public.presence_sessions SET "
            "last_beat = last_beat - make_interval(secs => %(s)s), "
            "started_at = started_at - make_interval(secs => %(s)s), "
            "refreshed_at = refreshed_at - make_interval(secs => %(s)s)",
            {"s": seconds},
        )
        conn.execute(
            "UPDATE public.users SET "
            "last_heartbeat = last_heartbeat - make_interval(secs => %(s)s), "
            "online_since = online_since - make_interval(secs => %(s)s)",
            {"s": seconds},
        )
        conn.execute(
            "UPDATE public.presence_events SET "
            "occurred_at = occurred_at - make_interval(secs => %(s)s)",
            {"s": seconds},
        )


def events(
    db: PresenceDatabase, user: str | None = None, *, after: int = 0
) -> list[dict[str, Any]]:
    """Rows of public.presence_events (as the owner), in id order."""
    where = "WHERE id > %(after)s" + (" AND user_id = %(user)s" if user else "")
    return db.query(
        f"SELECT {EVENT_COLUMNS} FROM public.presence_events {where} ORDER BY id",
        {"after": after, "user": user},
    )


def shape(rows: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    """(kind, session, reason) of each event: what a test usually compares."""
    return [(r["kind"], r["session_id"], r["reason"]) for r in rows]


def newest_id(db: PresenceDatabase) -> int:
    (row,) = db.query("SELECT coalesce(max(id), 0) AS n FROM public.presence_events")
    newest: int = row["n"]
    return newest


def since(
    db: PresenceDatabase,
    after: int = 0,
    max_rows: int = 100,
    *,
    user: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """presence_events_since through the PostgREST call shape."""
    result: dict[str, Any] = db.rpc(
        "presence_events_since",
        {"after_id": after, "max_rows": max_rows},
        user_id=user,
        role=role,
    )
    return result


def at(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
