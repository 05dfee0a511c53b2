"""pg_cron schedules, understood conservatively (pure: no I/O).

:func:`parse_schedule` works out the longest time between two runs of a schedule as
pg_cron stores it in ``cron.job.schedule``: interval schedules (``'20 seconds'``), the
``@hourly``-style macros and five-field cron expressions. It errs on the long side, and
it reports fields after the fifth, which pg_cron silently ignores (``'*/20 * * * * *'``
runs every 20 *minutes*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Schedule", "describe_seconds", "parse_schedule"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """A pg_cron schedule, understood conservatively.

    Attributes:
        text: The schedule as stored in ``cron.job.schedule``.
        period_seconds: The longest time between two runs (an upper bound on how
            long the sweep can lag), or None if it could not be worked out.
        interval: True for pg_cron's ``'<n> seconds'`` interval schedules.
        ignored_fields: Cron fields after the fifth, which pg_cron silently ignores
            (cron has no seconds field).
        description: Human wording, e.g. ``"every 20 minutes"``.
    """

    text: str
    period_seconds: int | None
    interval: bool = False
    ignored_fields: tuple[str, ...] = ()
    description: str = ""


_INTERVAL = re.compile(r"^\s*(\d+)\s*seconds?\s*$", re.IGNORECASE)
_MACROS = {
    "@yearly": 366 * 86400,
    "@annually": 366 * 86400,
    "@monthly": 31 * 86400,
    "@weekly": 7 * 86400,
    "@daily": 86400,
    "@midnight": 86400,
    "@hourly": 3600,
}


def describe_seconds(seconds: float) -> str:
    """A duration as short words: ``45 s``, ``3 min``, ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _describe(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"


def _cron_field(text: str, low: int, high: int) -> set[int] | None:
    """Values of one numeric cron field, or None if it is not plain numeric syntax."""
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        if step_text and not step_text.isdigit():
            return None
        step = int(step_text) if step_text else 1
        if step < 1:
            return None
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            if not (first.isdigit() and last.isdigit()):
                return None
            start, end = int(first), int(last)
        elif base.isdigit():
            start = int(base)
            end = high if step_text else start
        else:
            return None
        if not low <= start <= end <= high:
            return None
        values.update(range(start, end + 1, step))
    return values or None


def _unrestricted(field: str) -> bool:
    return field in ("*", "?", "*/1")


def parse_schedule(text: str) -> Schedule:
    """Work out how often a pg_cron schedule runs, erring on the long side.

    Handles interval schedules (``'20 seconds'``), the ``@hourly``-style macros and
    five-field cron expressions whose minute and hour fields use numbers, ranges,
    steps and lists. Day, month and weekday restrictions make the period at least a
    day. Fields after the fifth are reported as ignored: pg_cron accepts
    ``'*/20 * * * * *'`` and runs it every 20 minutes.
    """
    if (match := _INTERVAL.match(text)) is not None:
        seconds = int(match[1])
        return Schedule(
            text=text, period_seconds=seconds, interval=True, description=_describe(seconds)
        )
    stripped = text.strip().lower()
    if stripped in _MACROS:
        seconds = _MACROS[stripped]
        return Schedule(text=text, period_seconds=seconds, description=_describe(seconds))
    if stripped == "@reboot":
        return Schedule(text=text, period_seconds=None, description="only at server start")
    fields = text.split()
    if len(fields) < 5:
        return Schedule(text=text, period_seconds=None, description="not a valid schedule")
    minute, hour, day, month, weekday = fields[:5]
    ignored = tuple(fields[5:])
    minutes = _cron_field(minute, 0, 59)
    hours = _cron_field(hour, 0, 23)
    if minutes is None or hours is None:
        return Schedule(
            text=text,
            period_seconds=None,
            ignored_fields=ignored,
            description="not understood (minute/hour fields)",
        )
    times = sorted(h * 60 + m for h in hours for m in minutes)
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(times[0] + 1440 - times[-1])
    seconds = max(gaps) * 60
    description = _describe(seconds)
    if len(set(gaps)) > 1:
        description = f"irregularly, up to {describe_seconds(seconds)} apart"
    if not all(_unrestricted(f) for f in (day, month, weekday)):
        seconds = max(seconds, 86400)
        description = "only on some days (a day or more between runs)"
    return Schedule(
        text=text, period_seconds=seconds, ignored_fields=ignored, description=description
    )
