"""presence-sdk CLI without a database: printing the SQL, argument and input errors,
and `verify` over HTTP against mocked PostgREST answers.

Every error must be one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import psycopg
import pytest
import respx

from presence_sdk import testing
from presence_sdk._sql import migrations, rollback_schema_sql, schema_sql
from presence_sdk.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_UNREACHABLE, EXIT_USAGE, main

URL = "http://presence.test"
RPC = f"{URL}/rest/v1/rpc/presence_setup_report"
KEY = testing.make_token("service_role", expires_in=3600)
PGRST202 = {"code": "PGRST202", "message": "Could not find the function", "hint": None}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("presence-sdk: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


# -- sql --------------------------------------------------------------------------------


def test_sql_prints_schema_then_migrations_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sql")
    assert (code, err) == (EXIT_OK, "")
    headers = [line for line in out.splitlines() if line.startswith("-- ===== supabase/")]
    assert headers == [
        "-- ===== supabase/schema.sql =====",
        *(f"-- ===== supabase/migrations/{m.filename} =====" for m in migrations()),
    ]
    assert schema_sql() in out
    positions = [out.index(m.up) for m in migrations()]
    assert positions == sorted(positions)


def test_sql_without_schema_and_rollbacks_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sql", "--no-schema")
    assert code == EXIT_OK
    assert schema_sql() not in out
    assert out.startswith(f"-- ===== supabase/migrations/{migrations()[0].filename} =====")
    code, out, _ = run(capsys, "sql", "--rollback")
    assert code == EXIT_OK
    positions = [out.index(m.down) for m in migrations()]
    assert positions == sorted(positions, reverse=True)
    assert "sql --rollback --file schema" in out
    assert rollback_schema_sql() not in out


@pytest.mark.parametrize(
    "name",
    [
        "20240000000002",
        "presence_api",
        "20240000000002_presence_api",
        "20240000000002_presence_api.sql",
    ],
)
def test_sql_one_file_is_printed_byte_for_byte(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    (migration,) = [m for m in migrations() if m.version == "20240000000002"]
    code, out, _ = run(capsys, "sql", "--file", name)
    assert code == EXIT_OK
    assert out == migration.up
    code, out, _ = run(capsys, "sql", "--file", name, "--rollback")
    assert out == migration.down


def test_sql_schema_file_and_its_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sql", "--file", "schema")[1] == schema_sql()
    assert run(capsys, "sql", "--file", "schema.sql", "--rollback")[1] == rollback_schema_sql()


def test_sql_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sql", "--list")
    assert code == EXIT_OK
    assert out.splitlines() == ["schema.sql", *(f"migrations/{m.filename}" for m in migrations())]


def test_sql_unknown_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sql", "--file", "nope")
    assert (code, out) == (EXIT_USAGE, "")
    assert_one_line_error(err, "'nope'", "20240000000001")


# -- argument errors ---------------------------------------------------------------------


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == EXIT_OK
    assert "migrate" in out
    assert "Exit codes" in out
    code, out, _ = run(capsys, "--version")
    assert code == EXIT_OK
    assert out.startswith("presence-sdk ")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ((), ["COMMAND"]),
        (("bogus",), ["invalid choice"]),
        (("rollback",), ["--to"]),
        (("migrate", "--lock-timeout", "-1"), ["must be positive"]),
        (("migrate", "--lock-timeout", "soon"), ["not a number"]),
    ],
)
def test_argument_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], words: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (EXIT_USAGE, "")
    assert_one_line_error(err, *words, "--help")


@pytest.mark.parametrize("command", ["migrate", "status", "verify"])
def test_missing_dsn(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = run(capsys, command)
    assert code == EXIT_USAGE
    assert_one_line_error(err, "--dsn", "DATABASE_URL")


def test_malformed_dsn_never_echoes_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres:s3cret@db.example.com/postgres")
    code, _, err = run(capsys, "migrate")
    assert code == EXIT_USAGE
    assert_one_line_error(err, "invalid database URL")
    assert "s3cret" not in err


def test_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "migrate", "--dsn", "postgresql://postgres:pw@127.0.0.1:1/postgres")
    assert code == EXIT_UNREACHABLE
    assert_one_line_error(err, "could not connect", "Connection refused")
    assert "pw@" not in err


def test_wrong_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test cluster trusts every local login, so the server's answer is replayed.
    def refuse(*args: object, **kwargs: object) -> None:
        msg = (
            'connection failed: connection to server at "db.example.com" (10.0.0.1), port 5432 '
            'failed: FATAL:  password authentication failed for user "postgres"'
        )
        raise psycopg.OperationalError(msg)

    monkeypatch.setattr(psycopg, "connect", refuse)
    for argv in (["verify"], ["migrate"], ["status"], ["rollback", "--to", "0"]):
        code, _, err = run(
            capsys, *argv, "--dsn", "postgresql://postgres:wrong@db.example.com/postgres"
        )
        assert code == EXIT_UNREACHABLE, argv
        assert_one_line_error(err, "password authentication failed")
        assert "wrong" not in err


def test_rollback_to_an_unknown_version_fails_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(
        capsys, "rollback", "--to", "2023", "--dsn", "postgresql://postgres@127.0.0.1:1/postgres"
    )
    assert code == EXIT_USAGE
    assert_one_line_error(err, "unknown version '2023'", "0 to roll back all")


def test_status_limit_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--dsn", "postgresql://x@127.0.0.1:1/db", "--limit", "0")
    assert code == EXIT_USAGE
    assert_one_line_error(err, "--limit")


# -- verify over HTTP --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("verify", "--url", URL), ["SUPABASE_SERVICE_ROLE_KEY"]),
        (("verify", "--key", KEY), ["SUPABASE_URL"]),
        (("verify", "--url", "presence.test", "--key", KEY), ["invalid Supabase URL"]),
        (("verify", "--url", "ftp://presence.test", "--key", KEY), ["invalid Supabase URL"]),
    ],
)
def test_verify_input_errors(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], words: list[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert_one_line_error(err, *words)
    assert KEY not in err


def test_verify_over_http_prints_the_report_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with respx.mock() as router:
        router.post(RPC).mock(return_value=httpx.Response(404, json=PGRST202))
        code, out, err = run(capsys, "verify", "--url", URL, "--key", KEY)
        assert code == EXIT_PROBLEMS
        assert "[FAIL] schema.installed" in out
        assert "presence-sdk migrate" in out
        assert err == ""
        code, out, _ = run(capsys, "verify", "--url", URL, "--key", KEY, "--json")
    assert code == EXIT_PROBLEMS
    data = json.loads(out)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"]] == ["schema.installed"]


def test_verify_reads_url_and_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    with respx.mock() as router:
        route = router.post(RPC).mock(return_value=httpx.Response(404, json=PGRST202))
        code, _, _ = run(capsys, "verify")
    assert code == EXIT_PROBLEMS
    assert route.calls.last.request.headers["apikey"] == KEY


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (
            httpx.Response(401, json={"message": "Invalid API key"}),
            ["Invalid API key", "service_role"],
        ),
        (httpx.Response(401, json={"code": "PGRST301", "message": "JWT expired"}), ["JWT expired"]),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), ["Bad Gateway"]),
        (httpx.Response(500, json={"code": "PGRST000", "message": "db down"}), ["db down"]),
    ],
)
def test_verify_http_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], response: httpx.Response, words: list[str]
) -> None:
    with respx.mock() as router:
        router.post(RPC).mock(return_value=response)
        code, out, err = run(capsys, "verify", "--url", URL, "--key", KEY)
    assert (code, out) == (EXIT_UNREACHABLE, "")
    assert_one_line_error(err, *words)
    assert "<html>" not in err


def test_verify_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "verify", "--url", "http://127.0.0.1:1", "--key", KEY, "--timeout", "2"
    )
    assert code == EXIT_UNREACHABLE
    assert_one_line_error(err, "could not reach the server")


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "presence_sdk", "sql", "--list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "schema.sql"
    bad = subprocess.run(
        [sys.executable, "-m", "presence_sdk", "verify"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == EXIT_USAGE
    assert_one_line_error(bad.stderr, "nothing to verify")


def test_a_closed_pipe_is_not_a_traceback() -> None:
    # `presence-sdk sql | head -1`: the reader is gone before the SQL is written.
    proc = subprocess.Popen(
        [sys.executable, "-m", "presence_sdk", "sql"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PROBLEMS
    assert err == ""
