"""The presence-sdk CLI against the real test cluster (in-process main() and python -m)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import respx
from cron_support import effective_period, schedule_detail

from presence_sdk._sql import migrations
from presence_sdk._verify_facts import expected_setup
from presence_sdk.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_UNREACHABLE, main
from presence_sdk.testing import PresenceDatabase, PresenceTestServer, install_supabase_shim

pytestmark = pytest.mark.integration

FILES = [m.filename for m in migrations()]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def empty_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
        yield db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_migrate_rollback_and_rerun(
    capsys: pytest.CaptureFixture[str], empty_db: PresenceDatabase
) -> None:
    code, out, err = run(capsys, "migrate", "--dsn", empty_db.dsn, "--with-schema", "--dry-run")
    assert code == EXIT_OK
    assert out.splitlines() == [
        "would apply schema.sql (public.users did not exist)",
        *(f"would apply {f}" for f in FILES),
        f"dry run: {len(FILES)} of {len(FILES)} migration(s) pending, nothing changed",
    ]

    code, out, err = run(capsys, "migrate", "--dsn", empty_db.dsn, "--with-schema")
    assert code == EXIT_OK
    assert out.splitlines()[: len(FILES) + 1] == [
        "applied schema.sql (public.users did not exist)",
        *(f"applied {f}" for f in FILES),
    ]
    assert "presence-sdk verify" in out
    assert "NOTICE: presence: pg_cron could not be enabled" in err

    code, out, _ = run(capsys, "migrate", "--dsn", empty_db.dsn)
    assert code == EXIT_OK
    assert out.strip() == f"nothing to do: all {len(FILES)} presence migrations are already applied"

    first = migrations()[0].version
    code, out, _ = run(capsys, "rollback", "--dsn", empty_db.dsn, "--to", first)
    assert code == EXIT_OK
    assert out.splitlines() == [
        *(f"rolled back {f}" for f in reversed(FILES[1:])),
        f"{len(FILES) - 1} migration(s) rolled back",
    ]
    code, out, _ = run(capsys, "rollback", "--dsn", empty_db.dsn, "--to", "0", "--dry-run")
    assert out.splitlines() == [
        f"would roll back {FILES[0]}",
        "dry run: 1 migration(s) would be rolled back",
    ]

    code, out, _ = run(capsys, "migrate", "--dsn", empty_db.dsn)
    assert code == EXIT_OK
    assert [line for line in out.splitlines() if line.startswith("applied")] == [
        f"applied {f}" for f in FILES[1:]
    ]


def test_migrate_on_plain_postgres_says_what_to_create(
    capsys: pytest.CaptureFixture[str], presence_server: PresenceTestServer
) -> None:
    with presence_server.database(template=None) as db:  # no auth.users, no public.users
        code, out, err = run(capsys, "migrate", "--dsn", db.dsn)
    assert (code, out) == (EXIT_PROBLEMS, "")
    assert err.count("\n") == 1
    assert "public.users does not exist and there is no auth.users" in err
    assert "create public.users (id uuid PRIMARY KEY, status text) first" in err


def test_verify_the_cron_database(
    capsys: pytest.CaptureFixture[str], presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    code, out, err = run(capsys, "verify", "--dsn", presence_cron_db.dsn)
    assert (code, err) == (EXIT_OK, ""), out
    assert out.startswith(
        f"presence setup: OK\n  sweep period: {effective_period(cron_version)} s\n"
    )
    assert f"[ok] cron.job.schedule: {schedule_detail(cron_version)}" in out


def test_verify_json_from_database_url(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    presence_db: PresenceDatabase,
) -> None:
    monkeypatch.setenv("DATABASE_URL", presence_db.dsn)
    code, out, _ = run(capsys, "verify", "--json")
    assert code == EXIT_PROBLEMS
    data = json.loads(out)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"] if not c["ok"]] == ["pg_cron"]
    assert data["schema_version"] == expected_setup().schema_version


def test_verify_over_the_rest_api(
    capsys: pytest.CaptureFixture[str], presence_cron_db: PresenceDatabase
) -> None:
    emulator = presence_cron_db.emulator()
    try:
        with respx.mock(base_url=emulator.url) as router:
            router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
            code, out, err = run(
                capsys, "verify", "--url", emulator.url, "--key", emulator.service_role_key
            )
            assert (code, err) == (EXIT_OK, ""), out
            code, _, err = run(capsys, "verify", "--url", emulator.url, "--key", emulator.anon_key)
    finally:
        emulator.close()
    assert code == EXIT_UNREACHABLE
    assert err.count("\n") == 1
    assert "needs the service_role key" in err


def test_verify_a_database_without_the_presence_sql(
    capsys: pytest.CaptureFixture[str], empty_db: PresenceDatabase
) -> None:
    code, out, _ = run(capsys, "verify", "--dsn", empty_db.dsn)
    assert code == EXIT_PROBLEMS
    assert "[FAIL] schema.installed" in out
    assert "--with-schema" in out


def test_status_counts_and_newest_beats(
    capsys: pytest.CaptureFixture[str], presence_db: PresenceDatabase
) -> None:
    now = datetime.now(UTC)
    online = presence_db.create_user(status="online", last_heartbeat=now)
    away = presence_db.create_user(status="away", last_heartbeat=now - timedelta(seconds=5))
    stale = presence_db.create_user(status="online", last_heartbeat=now - timedelta(minutes=2))
    presence_db.create_user()  # never beat: offline

    code, out, _ = run(capsys, "status", "--dsn", presence_db.dsn, "--json", "--limit", "2")
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["counts"] == {
        "online": 1,
        "away": 1,
        "busy": 0,
        "offline": 2,
        "offline_estimated": False,
    }
    assert data["stored"] == {"online": 2, "away": 1, "offline": 1}
    assert data["awaiting_sweep"] == 1
    assert [row["user_id"] for row in data["newest"]] == [online, away]
    assert data["settings"]["timeout_seconds"] == 45

    code, out, _ = run(capsys, "status", "--dsn", presence_db.dsn)
    assert code == EXIT_OK
    lines = out.splitlines()
    assert "timeout 45 s, sweep every 20 s" in lines[0]
    assert lines[2].split() == ["online", "1", "2"]
    assert lines[5].split() == ["offline", "2", "1"]
    assert "awaiting the sweep: 1" in out
    assert f"  {online}  online   " in out
    assert f"  {stale}  offline  " in out
    assert "(2 min ago)  (stored: online, awaiting the sweep)" in out


def test_status_without_the_presence_sql(
    capsys: pytest.CaptureFixture[str], empty_db: PresenceDatabase
) -> None:
    code, out, err = run(capsys, "status", "--dsn", empty_db.dsn)
    assert (code, out) == (EXIT_PROBLEMS, "")
    assert err.count("\n") == 1
    assert "not installed" in err
    assert "presence-sdk migrate" in err


def test_unknown_database_is_one_line(
    capsys: pytest.CaptureFixture[str], presence_server: PresenceTestServer
) -> None:
    code, _, err = run(capsys, "status", "--dsn", presence_server.cluster.dsn("no_such_db"))
    assert code == EXIT_UNREACHABLE
    assert err.count("\n") == 1
    assert 'database "no_such_db" does not exist' in err


def test_python_dash_m_verify(presence_cron_db: PresenceDatabase) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "presence_sdk", "verify", "--dsn", presence_cron_db.dsn, "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True
