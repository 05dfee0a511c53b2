"""Immutable values returned by presence_sdk (parsed from the presence RPCs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "OnlinePage",
    "Presence",
    "SetupCheck",
    "SetupReport",
    "Status",
    "StatusCounts",
]

#: A presence status as stored in ``public.users.status``.
Status = Literal["online", "away", "busy", "offline"]


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, kw_only=True, slots=True)
class Presence:
    """The presence of one user, exact at the moment the server answered.

    Attributes:
        user_id: The user's id.
        status: Effective status: the reported one while online, else ``"offline"``.
        online: True if the last heartbeat is younger than the timeout and the user
            has not left.
        last_heartbeat: Server time of the last heartbeat or leave (None: never).
        last_seen: When the user was last known to be present (same instant as
            ``last_heartbeat``; kept separate so the meaning stays stable).
        online_since: Start of the current online session (None when offline).
    """

    user_id: uuid.UUID
    status: Status
    online: bool
    last_heartbeat: datetime | None
    last_seen: datetime | None
    online_since: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Presence:
        """Build from one row of ``public.user_presence`` (as JSON)."""
        return cls(
            user_id=uuid.UUID(str(row["user_id"])),
            status=row["status"],
            online=bool(row["online"]),
            last_heartbeat=_parse_time(row.get("last_heartbeat")),
            last_seen=_parse_time(row.get("last_seen")),
            online_since=_parse_time(row.get("online_since")),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusCounts:
    """Number of (visible) users per effective status.

    Attributes:
        online: Users online now, as the caller may see them (exact).
        away: Users away now (exact).
        busy: Users busy now (exact).
        offline: Everyone else: exact while the users table is small (up to 10,000
            users), else estimated from the table's statistics (see
            ``offline_estimated``). Users whose presence is hidden from the caller
            count as offline.
        offline_estimated: True when ``offline`` is an estimate.
    """

    online: int
    away: int
    busy: int
    offline: int
    offline_estimated: bool = False

    @property
    def total(self) -> int:
        """All users counted."""
        return self.online + self.away + self.busy + self.offline

    @property
    def present(self) -> int:
        """Users who are not offline (online, away or busy)."""
        return self.online + self.away + self.busy


@dataclass(frozen=True, kw_only=True, slots=True)
class OnlinePage:
    """One page of online users, ordered by user id.

    Attributes:
        users: The users on this page.
        next_after: Pass as ``after=`` to get the next page; None on the last page.
    """

    users: tuple[Presence, ...]
    next_after: uuid.UUID | None

    def __iter__(self) -> Iterator[Presence]:
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True, kw_only=True, slots=True)
class SetupCheck:
    """One finding of :func:`presence_sdk.verify_setup`.

    Attributes:
        name: Short stable identifier, e.g. ``"cron.job.schedule"``.
        ok: Whether this part of the setup is right.
        detail: What was found.
        fix: How to fix it (empty when ``ok``).
        warning: A finding worth knowing that does not break presence (e.g.
            ``privacy.realtime``): when it is not ``ok`` it is listed in
            :attr:`SetupReport.warnings`, not in :attr:`SetupReport.problems`, and the
            report stays ``ok``.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class SetupReport:
    """The result of :func:`presence_sdk.verify_setup`: every check, passed or not.

    Attributes:
        checks: All checks, in a stable order.
        raw: The JSON the setup report RPC returned (for debugging), if any.
        sweep_period_seconds: The effective period of the pg_cron sweep job: the
            longest time between two runs of its schedule (``20`` for
            ``'20 seconds'``, ``1200`` for the broken ``'*/20 * * * * *'``), or None
            when there is no job or its schedule is not understood.
        schema_version: The presence schema version the database reports, if any.
    """

    checks: tuple[SetupCheck, ...]
    raw: Mapping[str, Any] = field(default_factory=dict)
    sweep_period_seconds: int | None = None
    schema_version: int | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed (failed warnings do not count)."""
        return not self.problems

    @property
    def problems(self) -> tuple[SetupCheck, ...]:
        """The checks that failed, warnings excluded."""
        return tuple(check for check in self.checks if not check.ok and not check.warning)

    @property
    def warnings(self) -> tuple[SetupCheck, ...]:
        """The warnings that apply (failed checks marked ``warning``)."""
        return tuple(check for check in self.checks if not check.ok and check.warning)

    def __str__(self) -> str:
        head = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        if self.warnings:
            head += f", {len(self.warnings)} warning(s)"
        lines = [f"presence setup: {head}"]
        if self.sweep_period_seconds is not None:
            lines.append(f"  sweep period: {self.sweep_period_seconds} s")
        for check in self.checks:
            mark = "ok" if check.ok else "WARN" if check.warning else "FAIL"
            lines.append(f"  [{mark}] {check.name}: {check.detail}")
            if not check.ok and check.fix:
                lines.append(f"         fix: {check.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``presence-sdk verify --json``)."""
        return {
            "ok": self.ok,
            "schema_version": self.schema_version,
            "sweep_period_seconds": self.sweep_period_seconds,
            "checks": [
                {
                    "name": c.name,
                    "ok": c.ok,
                    "warning": c.warning,
                    "detail": c.detail,
                    "fix": c.fix,
                }
                for c in self.checks
            ],
        }
