"""History through the SDK (sync and async clients over PostgREST) and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from e2e_support import async_client, routed, sync_client
from sessions_support import beat, leave, new_id

from presence_sdk import (
    AsyncPresenceClient,
    InvalidInputError,
    PresenceClient,
    RejectedError,
)
from presence_sdk.cli import EXIT_OK, EXIT_USAGE, main
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def two_sessions(presence_db: PresenceDatabase) -> tuple[str, str, str]:
    """A user with one ended session (phone) and one live (laptop)."""
    user = presence_db.create_user()
    phone, laptop = new_id(), new_id()
    beat(presence_db, user, phone, device="phone")
    leave(presence_db, user, phone)
    beat(presence_db, user, laptop, "away", device="laptop")
    return user, phone, laptop


def test_the_sync_client_reads_history(
    presence_db: PresenceDatabase, two_sessions: tuple[str, str, str]
) -> None:
    user, phone, laptop = two_sessions
    today = datetime.now(UTC).date()
    with routed(presence_db) as (emulator, _):
        supabase = sync_client(emulator, emulator.user_token(user))
        client = PresenceClient(supabase)
        sessions = client.session_history(user, datetime.now(UTC) - timedelta(hours=1))
        days = client.online_per_day(user, today - timedelta(days=1), today)
        page = client.events_since(0, 2)
        with pytest.raises(RejectedError, match="reaches past the 30 days"):
            client.session_history(user, datetime.now(UTC) - timedelta(days=60))
        with pytest.raises(InvalidInputError):
            client.online_per_day(user, today, today, "Nowhere/Land")
        supabase.postgrest.session.close()
    assert [(str(s.session_id), s.device, s.end_reason) for s in sessions] == [
        (phone, "phone", "leave"),
        (laptop, "laptop", None),
    ]
    assert [d.day for d in days] == [today - timedelta(days=1), today]
    assert days[0].online == timedelta(0)
    assert days[1].online < timedelta(minutes=1)
    assert [e.kind for e in page.events] == ["session_start", "online"]
    assert page.more is True


@pytest.mark.asyncio
async def test_the_async_client_reads_history(
    presence_db: PresenceDatabase, two_sessions: tuple[str, str, str]
) -> None:
    user, phone, laptop = two_sessions
    today = datetime.now(UTC).date()
    with routed(presence_db) as (emulator, _):
        supabase = async_client(emulator, emulator.service_role_key)
        client = AsyncPresenceClient(supabase)
        sessions = await client.session_history(user, datetime.now(UTC) - timedelta(hours=1))
        days = await client.online_per_day(user, today, today, "Asia/Tokyo")
        page = await client.events_since(0, 1000)
        await supabase.postgrest.session.aclose()
    assert [str(s.session_id) for s in sessions] == [phone, laptop]
    assert len(days) == 1
    assert len(page.events) == 6
    assert page.more is False


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_history_prints_sessions_and_days(
    capsys: pytest.CaptureFixture[str],
    presence_db: PresenceDatabase,
    two_sessions: tuple[str, str, str],
) -> None:
    user, _, _ = two_sessions
    code, out, err = run(capsys, "history", user, "--dsn", presence_db.dsn, "--days", "3")
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"sessions of {user} since ")
    assert "leave    phone" in lines[1]
    assert "live     laptop" in lines[2]
    assert lines[3] == "time online per day (UTC):"
    assert len(lines) == 4 + 3 + 1
    assert lines[-1].strip().startswith("total")

    code, out, _ = run(
        capsys, "history", user, "--dsn", presence_db.dsn, "--json", "--tz", "Europe/Paris"
    )
    assert code == EXIT_OK
    data = json.loads(out)
    assert [s["end_reason"] for s in data["sessions"]] == ["leave", None]
    assert len(data["online_per_day"]) == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tz", "Mars/Base"], "unknown time zone"),
        (["--days", "0"], "--days must be between 1 and 3650"),
        (["--days", "400"], "reaches past the 30 days"),
        (["--limit", "0"], "limit must be an integer from 1 to 1000"),
    ],
)
def test_cli_history_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str],
    presence_db: PresenceDatabase,
    extra: list[str],
    message: str,
) -> None:
    user = presence_db.create_user()
    code, out, err = run(capsys, "history", user, "--dsn", presence_db.dsn, *extra)
    assert (code, out) == (EXIT_USAGE, "")
    assert message in err
    assert len(err.splitlines()) == 1


def test_cli_history_needs_a_user_id_and_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "history", "not-a-uuid", "--dsn", "postgresql://localhost/x")
    assert code == EXIT_USAGE
    assert "must be a UUID" in err
    code, _, err = run(capsys, "history", "00000000-0000-4000-8000-000000000000")
    assert code == EXIT_USAGE
    assert "no database URL" in err
