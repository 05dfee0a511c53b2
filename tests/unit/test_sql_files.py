"""Static checks of the shipped SQL (no database): layout, headers, known pitfalls, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

import presence_sdk
from presence_sdk._migrate import split_statements

REPO = Path(__file__).resolve().parents[2]
SUPABASE = REPO / "supabase"
MIGRATIONS = sorted((SUPABASE / "migrations").glob("*.sql"))
ROLLBACKS = sorted((SUPABASE / "rollbacks").glob("*.sql"))
ALL_SQL = [SUPABASE / "schema.sql", *MIGRATIONS, *ROLLBACKS]
MIGRATION_NAME = re.compile(r"^(\d{14})_[a-z0-9_]+\.sql$")
JOB_COMMAND = "SELECT public.mark_inactive_users_offline()"


def strip_comments(sql: str) -> str:
    """Drop ``--`` comments (our SQL has no ``--`` inside string literals)."""
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def header(sql: str) -> str:
    """The leading comment block of a file."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def ids(path: Path) -> str:
    return path.relative_to(SUPABASE).as_posix()


def test_there_are_migrations_and_a_schema() -> None:
    assert (SUPABASE / "schema.sql").is_file()
    assert len(MIGRATIONS) >= 3
    assert (SUPABASE / "migrations" / "20240000000001_add_heartbeat.sql") in MIGRATIONS


def test_the_released_migrations_come_first_and_in_this_order() -> None:
    """Versions are never renumbered: databases record them (later ones append)."""
    assert [p.name for p in MIGRATIONS][:5] == [
        "20240000000000_base_schema.sql",
        "20240000000001_add_heartbeat.sql",
        "20240000000002_presence_api.sql",
        "20240000000003_setup_report.sql",
        "20240000000004_hardening.sql",
    ]


def statements(path: Path) -> list[str]:
    """The file's statements without their comments, as ``presence-sdk migrate`` runs them."""
    return [strip_comments(s).strip() for s in split_statements(path.read_text())]


def test_the_hardening_migration_repeats_01_to_03_verbatim() -> None:
    """20240000000004 re-delivers issue 11's in-place fixes to databases that recorded
    0.1.0's 01..03: each of its definitions must be the very text of one in 01..03
    (the catalog comparison in tests/integration/test_sql_upgrade_0_1_0.py proves the
    same on a database, including the grants this test does not compare)."""
    hardening = SUPABASE / "migrations" / "20240000000004_hardening.sql"
    earlier = {s for p in MIGRATIONS if p.name < hardening.name for s in statements(p)}
    defining = ("CREATE ", "COMMENT ", "DO ", "DROP POLICY ", "ALTER TABLE ")
    repeated = [s for s in statements(hardening) if s.startswith(defining)]
    assert len(repeated) >= 12
    for statement in repeated:
        assert statement in earlier, statement.splitlines()[0]


def test_migration_names_are_supabase_cli_timestamps_in_order() -> None:
    names = [p.name for p in MIGRATIONS]
    assert all(MIGRATION_NAME.match(n) for n in names), names
    versions = [MIGRATION_NAME.match(n)[1] for n in names]  # type: ignore[index]
    assert len(set(versions)) == len(versions), "two migrations share a version"
    # What the SDK applies is exactly the folder, oldest first.
    shipped = presence_sdk.migrations()
    assert [m.filename for m in shipped] == names
    assert [m.version for m in shipped] == sorted(versions)


def test_every_migration_has_exactly_one_rollback() -> None:
    migration_names = {p.name for p in MIGRATIONS}
    rollback_names = {p.name for p in ROLLBACKS}
    assert rollback_names == migration_names | {"schema.sql"}
    for migration in presence_sdk.migrations():
        assert migration.down == (SUPABASE / "rollbacks" / migration.filename).read_text()
        assert migration.up == (SUPABASE / "migrations" / migration.filename).read_text()
    assert presence_sdk.schema_sql() == (SUPABASE / "schema.sql").read_text()
    assert presence_sdk.rollback_schema_sql() == (SUPABASE / "rollbacks" / "schema.sql").read_text()


@pytest.mark.parametrize("path", [SUPABASE / "schema.sql", *MIGRATIONS], ids=ids)
def test_header_documents_purpose_and_rollback_plan(path: Path) -> None:
    head = header(path.read_text())
    assert len(head.splitlines()) >= 5, f"{path.name}: header comment too short"
    assert "Rollback" in head
    rollback = f"supabase/rollbacks/{path.name}"
    assert rollback in head, f"{path.name}: header must name {rollback}"
    # The plan itself is in the header, not only a pointer: at least one statement, or
    # (a migration that only repeats earlier files' definitions) "nothing to undo",
    # which its down script must then honour.
    if f"Rollback ({rollback}): nothing to undo" in head:
        down = SUPABASE / "rollbacks" / path.name
        assert code_lines(down)[2:] == [], f"{down.name} must change nothing"
    else:
        assert re.search(r"^--\s+(DROP|ALTER|SELECT|REVOKE)\b", head, re.MULTILINE), head


@pytest.mark.parametrize("path", MIGRATIONS, ids=ids)
def test_migration_header_names_itself(path: Path) -> None:
    assert path.stem in header(path.read_text())


@pytest.mark.parametrize("path", ROLLBACKS, ids=ids)
def test_rollback_header_names_what_it_undoes(path: Path) -> None:
    head = header(path.read_text())
    assert head.startswith("-- Rollback of ")
    assert "Idempotent" in head or "rollbacks (newest first)" in head


def code_lines(path: Path) -> list[str]:
    """The file's non-empty lines without comments."""
    return [line for line in strip_comments(path.read_text()).splitlines() if line.strip()]


@pytest.mark.parametrize("path", ALL_SQL, ids=ids)
def test_timeouts_are_set_before_any_ddl(path: Path) -> None:
    assert code_lines(path)[:2] == ["SET lock_timeout = '5s';", "SET statement_timeout = '60s';"]


@pytest.mark.parametrize("path", ALL_SQL, ids=ids)
def test_no_six_field_cron_expression(path: Path) -> None:
    """pg_cron ignores a 6th field: '*/20 * * * * *' runs every 20 *minutes*."""
    text = path.read_text()
    assert "*/20 * * * * *" not in strip_comments(text)
    for literal in re.findall(r"'([^']*)'", strip_comments(text)):
        fields = literal.split()
        looks_like_cron = fields and all(re.fullmatch(r"[\d*/,\-]+", f) for f in fields)
        assert not (looks_like_cron and len(fields) == 6), literal


@pytest.mark.parametrize("path", ALL_SQL, ids=ids)
def test_no_unguarded_unschedule_by_name(path: Path) -> None:
    """cron.unschedule('name') raises when the job is missing: unschedule by jobid
    selected from cron.job (no row, no call) or let cron.schedule() upsert."""
    code = strip_comments(path.read_text())
    assert not re.search(r"cron\.unschedule\s*\(\s*'", code), path.name
    for call in re.finditer(r"cron\.unschedule\s*\(([^)]*)\)", code):
        assert call[1].strip() == "jobid", call[0]
        tail = code[call.end() : call.end() + 80]
        assert re.match(r"\s*FROM cron\.job WHERE jobname = 'mark-inactive-users'", tail)


@pytest.mark.parametrize("path", [SUPABASE / "schema.sql", *MIGRATIONS], ids=ids)
def test_creates_are_idempotent(path: Path) -> None:
    code = strip_comments(path.read_text())
    for stmt in re.findall(r"\bCREATE\s+(?!OR REPLACE)(\w+(?:\s+\w+)?)", code):
        kind = stmt.split()[0].upper()
        if kind in {"TABLE", "INDEX", "SCHEMA", "EXTENSION"}:
            assert stmt.split()[1:] == ["IF"], f"{path.name}: CREATE {stmt} without IF NOT EXISTS"
        elif kind in {"POLICY", "TRIGGER"}:
            pass  # checked below: each is preceded by its DROP ... IF EXISTS
        else:
            pytest.fail(f"{path.name}: CREATE {stmt} is not idempotent (use OR REPLACE)")
    for kind in ("POLICY", "TRIGGER"):
        for name, target in re.findall(rf"CREATE {kind} (\w+)\s+(?:ON|AFTER \w+ ON) (\S+)", code):
            assert f"DROP {kind} IF EXISTS {name} ON {target};" in code, (kind, name)
    assert not re.search(r"ADD COLUMN (?!IF NOT EXISTS)", code)


def test_job_is_scheduled_schema_qualified_from_the_single_settings_row() -> None:
    code = strip_comments(
        (SUPABASE / "migrations" / "20240000000001_add_heartbeat.sql").read_text()
    )
    schedule_calls = re.findall(r"cron\.schedule\s*\((.*?)\);", code, re.DOTALL)
    assert len(schedule_calls) == 1
    assert "'mark-inactive-users'" in schedule_calls[0]
    assert f"'{JOB_COMMAND}'" in schedule_calls[0]
    # interval schedules on pg_cron >= 1.5, every minute on older versions
    assert "' seconds'" in code
    assert "'* * * * *'" in code
    assert "ARRAY[1, 5]" in code


def test_timings_live_in_one_place() -> None:
    """45 s and 20 s are only the defaults of public.presence_config."""
    code = "\n".join(strip_comments(p.read_text()) for p in ALL_SQL)
    assert re.findall(r"\b45\b", code) == ["45"]
    assert "timeout_seconds integer NOT NULL DEFAULT 45" in code
    assert "sweep_interval_seconds integer NOT NULL DEFAULT 20" in code
    assert not re.search(r"interval\s*'\d+\s*(s|sec|second|seconds)'", code, re.IGNORECASE)


def test_no_btree_index_on_last_heartbeat() -> None:
    """An index on last_heartbeat makes every heartbeat a non-HOT update."""
    code = "\n".join(strip_comments(p.read_text()) for p in ALL_SQL)
    for index in re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX[^;]*;", code):
        assert "last_heartbeat" not in index, index


def test_security_definer_functions_pin_search_path() -> None:
    code = "\n".join(strip_comments(p.read_text()) for p in [SUPABASE / "schema.sql", *MIGRATIONS])
    functions = re.findall(r"CREATE OR REPLACE FUNCTION (\S+?)\((.*?)\bAS \$\$", code, re.DOTALL)
    assert len(functions) >= 10
    # Invoker helpers of the privacy reads and the event log's per-event rule and
    # snapshot, without SET by design (see the migrations): not SECURITY DEFINER, and
    # every name and operator in them is qualified.
    unpinned = {
        "presence_private.visible_to",
        "presence_private.viewer_sees_all",
        "presence_private.lists_every_user",
        "presence_private.can_see_event",
        "presence_private.event_audience",
        "presence_private.anyone_restricting",
        "presence_private.user_restricting",
    }
    for name, body in functions:
        if name in unpinned:
            assert "SECURITY DEFINER" not in body, name
            continue
        assert "SET search_path = ''" in body, name


def test_note_bugs_are_not_reintroduced_in_migrations() -> None:
    for path in MIGRATIONS:
        code = strip_comments(path.read_text())
        assert not re.search(r"^\s*SELECT cron\.", code, re.MULTILINE), path.name
        assert "$$SELECT mark_inactive_users_offline()$$" not in code


def test_squawk_config_excludes_rules_with_a_reason_each() -> None:
    config_path = REPO / ".squawk.toml"
    config = tomllib.loads(config_path.read_text())
    assert config["assume_in_transaction"] is True
    assert str(config["pg_version"]).startswith("15")
    excluded = config["excluded_rules"]
    assert "require-concurrent-index-creation" in excluded
    lines = config_path.read_text().splitlines()
    for rule in excluded:
        (index,) = [i for i, line in enumerate(lines) if line.strip() == f'"{rule}",']
        assert lines[index - 1].strip().startswith("#"), f"{rule}: no reason given"
    assert "CONCURRENTLY" in config_path.read_text()


def squawk() -> str:
    found = shutil.which("squawk") or str(REPO / ".venv" / "bin" / "squawk")
    assert Path(found).is_file(), "squawk-cli is not installed (dev extra)"
    return found


def test_lint_script_passes_on_the_shipped_sql() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "lint-sql.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SQUAWK": squawk()},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"in {len(ALL_SQL)} files" in result.stdout


def test_lint_script_fails_on_findings(tmp_path: Path) -> None:
    bad = tmp_path / "20990101000000_bad.sql"
    bad.write_text("ALTER TABLE public.users ADD COLUMN mood text;\n")
    result = subprocess.run(
        [str(REPO / "scripts" / "lint-sql.sh"), str(bad)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SQUAWK": squawk()},
    )
    assert result.returncode != 0
    assert "require-lock-timeout" in result.stdout
    assert "require-statement-timeout" in result.stdout
