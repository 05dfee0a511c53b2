"""``presence-sdk history USER_ID``: a user's sessions and time online per day.

Reads the event log through the same RPCs as the SDK (``presence_session_history``,
``presence_online_per_day``), over a direct connection (``--dsn``; the database owner
sees every user).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from presence_sdk import _events as events
from presence_sdk._errors import translate
from presence_sdk._exceptions import ConfigurationError, InvalidInputError, RejectedError
from presence_sdk._queries import Query
from presence_sdk._verify_io import connection_kwargs

__all__ = ["add_history_command", "run_query"]

T = TypeVar("T")


def run_query(conn: psycopg.Connection[Any], query: Query[T]) -> T:
    """Run an SDK read over a direct connection: the RPC with its named arguments."""
    assert query.fn is not None
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
        for name in query.params
    )
    statement = sql.SQL("SELECT coalesce(json_agg(r), '[]') FROM public.{}({}) AS r").format(
        sql.Identifier(query.fn), args
    )
    try:
        row = conn.execute(statement, dict(query.params)).fetchone()
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return query.parse(None if row is None else row[0])


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        raise ConfigurationError(msg) from None


def _duration(value: timedelta) -> str:
    seconds = round(value.total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _cmd_history(args: argparse.Namespace, dsn_of: Callable[[argparse.Namespace], str]) -> int:
    if not 1 <= args.days <= 3650:
        msg = "--days must be between 1 and 3650"
        raise ConfigurationError(msg)
    zone = _zone(args.tz)
    today = datetime.now(zone).date()
    first = today - timedelta(days=args.days - 1)
    start = datetime.combine(first, time(), zone)
    try:
        sessions_query = events.session_history(
            args.user_id, start.astimezone(UTC), None, args.limit
        )
        days_query = events.online_per_day(args.user_id, first, today, args.tz)
    except InvalidInputError as exc:
        raise ConfigurationError(str(exc)) from None
    kwargs = connection_kwargs(dsn_of(args), timeout=10)
    try:
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            sessions = run_query(conn, sessions_query)
            days = run_query(conn, days_query)
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except RejectedError as exc:  # e.g. a range past the retention: the input's fault
        raise ConfigurationError(exc.message) from None

    if args.json:
        data = {
            "user_id": args.user_id,
            "time_zone": args.tz,
            "sessions": [
                {
                    "session_id": str(s.session_id),
                    "device": s.device,
                    "status": s.status,
                    "started_at": s.started_at.isoformat(),
                    "ended_at": s.ended_at.isoformat() if s.ended_at else None,
                    "end_reason": s.end_reason,
                }
                for s in sessions
            ],
            "online_per_day": [
                {"day": d.day.isoformat(), "online_seconds": d.online.total_seconds()} for d in days
            ],
        }
        args.out(json.dumps(data, indent=2))
        return 0
    out = args.out
    out(f"sessions of {args.user_id} since {first} ({args.tz}), oldest first:")
    if not sessions:
        out("  none")
    for s in sessions:
        started = s.started_at.astimezone(zone).isoformat(timespec="seconds")
        ended = s.ended_at.astimezone(zone).isoformat(timespec="seconds") if s.ended_at else "-"
        reason = s.end_reason or "live"
        out(f"  {started}  {ended:<25}  {reason:<7}  {s.device or '-'}")
    if len(sessions) == args.limit:
        out(f"  (first {args.limit}; pass --limit for more)")
    out(f"time online per day ({args.tz}):")
    for d in days:
        out(f"  {d.day}  {_duration(d.online):>9}")
    total = sum((d.online for d in days), timedelta())
    out(f"  {'total':<10}  {_duration(total):>9}")
    return 0


def add_history_command(
    commands: Any,
    *,
    add_dsn: Callable[[argparse.ArgumentParser], None],
    dsn_of: Callable[[argparse.Namespace], str],
    out: Callable[[str], None],
) -> None:
    """Register ``history`` on the CLI's subparsers."""
    history = commands.add_parser(
        "history",
        help="a user's sessions and time online per day (from the event log)",
        description="A user's sessions (start, end, reason, device) and time online per "
        "day over the last --days days, from the presence event log.",
    )
    history.add_argument("user_id", metavar="USER_ID", help="the user's id (uuid)")
    add_dsn(history)
    history.add_argument(
        "--days", type=int, default=7, help="days to cover, today included (default 7)"
    )
    history.add_argument(
        "--tz", default="UTC", metavar="ZONE", help="IANA time zone of the days (default UTC)"
    )
    history.add_argument(
        "--limit", type=int, default=100, help="most sessions to list, 1-1000 (default 100)"
    )
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=lambda args: _cmd_history(args, dsn_of), out=out)
