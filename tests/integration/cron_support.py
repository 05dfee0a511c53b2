"""What the installed pg_cron must show, by version (the suite runs on any version).

pg_cron >= 1.5 has interval schedules ('20 seconds'); older versions (Debian
bookworm's 1.4.2) reject them, so the migration falls back to every minute
('* * * * *') and says why in a NOTICE. Tests read the session's version and assert
what that version must do; CI runs the integration tests on 1.6.7 and on 1.4.2.
"""

from __future__ import annotations

import re

SWEEP = 20  # presence_config.sweep_interval_seconds as shipped
MINUTE = 60


def version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    assert match, version
    return int(match[1]), int(match[2])


def has_interval_schedules(version: str) -> bool:
    return version_tuple(version) >= (1, 5)


def expected_schedule(version: str, period: int = SWEEP) -> str:
    """The schedule the migration (or presence_schedule_sweep) gives the job."""
    return f"{period} seconds" if has_interval_schedules(version) else "* * * * *"


def effective_period(version: str, period: int = SWEEP) -> int:
    """How often the sweep really runs, in seconds."""
    return period if has_interval_schedules(version) else MINUTE


def legacy_notice(version: str, period: int = SWEEP) -> str:
    """The migration's NOTICE on pg_cron < 1.5."""
    return (
        f"presence: pg_cron {version} has no interval schedules (needs >= 1.5); "
        f"mark-inactive-users runs every minute instead of every {period} seconds."
    )


def schedule_detail(version: str) -> str:
    """How verify_setup() describes the shipped job's schedule (its start)."""
    if has_interval_schedules(version):
        return f"runs every {SWEEP} seconds"
    return "runs every minute ('* * * * *'): the fallback for pg_cron < 1.5"
