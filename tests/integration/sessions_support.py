"""Helpers for the tests of presence sessions (migration 5).

Time in these tests is moved, not waited for: :func:`advance` shifts every stored
presence timestamp into the past, which is exactly what the passing of that much
time looks like to SQL that only compares them with ``now()``.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from presence_sdk.testing import PostgRESTError, PresenceDatabase

# The note's troubleshooting query, verbatim (as in test_sql_troubleshooting.py).
NOTE_AFFECTED_ROWS = (
    "SELECT id, status, last_heartbeat, \n"
    "       NOW() - last_heartbeat as time_since_heartbeat\n"
    "FROM users \n"
    "WHERE status != 'offline' \n"
    "AND last_heartbeat < NOW() - INTERVAL '45 seconds';\n"
)


def new_id() -> str:
    """A fresh random session id, as a client would generate it."""
    return str(uuid.uuid4())


def advance(db: PresenceDatabase, seconds: float) -> None:
    """Let ``seconds`` pass for the presence data: every stored time moves back."""
    with db.connect() as conn, conn.transaction():
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


def beat(
    db: PresenceDatabase,
    user: str,
    session: str,
    status: str = "online",
    *,
    device: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> datetime:
    """One per-session beat as ``user`` through the PostgREST call shape."""
    params: dict[str, Any] = {"session_id": session, "new_status": status}
    if device is not None:
        params["device"] = device
    if metadata is not None:
        params["metadata"] = metadata
    return datetime.fromisoformat(db.rpc("presence_session_beat", params, user_id=user))


def leave(db: PresenceDatabase, user: str, session: str) -> datetime:
    """End one session as ``user``."""
    return datetime.fromisoformat(
        db.rpc("presence_session_leave", {"session_id": session}, user_id=user)
    )


def presence(db: PresenceDatabase, user: str, *, reader: str | None = None) -> dict[str, Any]:
    """What ``presence_get`` says about ``user`` (read as ``reader``, default the user)."""
    (row,) = db.rpc("presence_get", {"user_ids": [user]}, user_id=reader or user)
    assert isinstance(row, dict)
    return row


def stored(db: PresenceDatabase, user: str) -> dict[str, Any]:
    """The user's stored presence columns (public.users)."""
    (row,) = db.query(
        "SELECT status, last_heartbeat, online_since FROM public.users WHERE id = %s", (user,)
    )
    return row


def sessions_of(db: PresenceDatabase, user: str) -> list[dict[str, Any]]:
    return db.query(
        "SELECT session_id::text, status, device, metadata, started_at, last_beat "
        "FROM public.presence_sessions WHERE user_id = %s ORDER BY started_at, session_id",
        (user,),
    )


def sweep(db: PresenceDatabase) -> int:
    """The sweep, as the pg_cron job runs it (owner)."""
    (row,) = db.query("SELECT public.mark_inactive_users_offline() AS n")
    changed: int = row["n"]
    return changed


def note_affected(db: PresenceDatabase) -> set[str]:
    """Ids the note's troubleshooting query lists, run verbatim as postgres."""
    return {str(r["id"]) for r in db.query(NOTE_AFFECTED_ROWS)}


def table_hash(db: PresenceDatabase) -> str:
    """A digest of every row of public.users and public.presence_sessions."""
    rows = db.query(
        "SELECT (SELECT coalesce(string_agg(u::text, '|' ORDER BY u.id), '') "
        "        FROM public.users AS u) "
        "    || '#' || "
        "       (SELECT coalesce(string_agg(s::text, '|' ORDER BY s.session_id), '') "
        "        FROM public.presence_sessions AS s) AS everything"
    )
    return hashlib.sha256(rows[0]["everything"].encode()).hexdigest()


def expect_error(
    db: PresenceDatabase, fn: str, params: Any = None, **kwargs: Any
) -> PostgRESTError:
    """Call ``fn`` expecting a PostgREST error; return it."""
    try:
        db.rpc(fn, params, **kwargs)
    except PostgRESTError as err:
        return err
    msg = f"{fn}({params!r}) did not fail"
    raise AssertionError(msg)
