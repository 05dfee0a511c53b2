"""The wheel ships the SQL: the same bytes as the repository's supabase/ folder, read
by ``presence_sdk.migrations()`` when installed from the wheel (not from the checkout).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SUPABASE = REPO / "supabase"
PACKAGED = "presence_sdk/supabase/"


def repo_sql() -> dict[str, bytes]:
    return {
        p.relative_to(SUPABASE).as_posix(): p.read_bytes()
        for p in sorted(SUPABASE.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # With the build backend already installed, build in this environment (no
    # download); otherwise `build` fetches it from PyPI into an isolated one.
    isolation = ["--no-isolation"] if importlib.util.find_spec("hatchling") else []
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("presence_sdk-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without dependencies) into a throwaway target directory."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def test_wheel_contains_the_same_sql_bytes(wheel: Path) -> None:
    expected = repo_sql()
    assert "schema.sql" in expected
    assert any(name.startswith("migrations/") for name in expected)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            name.removeprefix(PACKAGED): zf.read(name)
            for name in zf.namelist()
            if name.startswith(PACKAGED) and not name.endswith("/")
        }
        all_names = zf.namelist()
    assert shipped == expected
    # One copy only: no other schema/migration files anywhere in the wheel.
    assert sorted(n for n in all_names if n.endswith("/schema.sql")) == [
        f"{PACKAGED}rollbacks/schema.sql",
        f"{PACKAGED}schema.sql",
    ]
    assert not [n for n in all_names if "/migrations/" in n and not n.startswith(PACKAGED)]
    assert "presence_sdk/py.typed" in all_names


def test_wheel_carries_the_pg_cron_source_for_the_embedded_postgres(
    wheel: Path, installed: Path, tmp_path: Path
) -> None:
    """presence_sdk.testing builds pg_cron from these bytes where no checkout is around."""
    third_party = REPO / "third_party"
    with zipfile.ZipFile(wheel) as zf:
        for name in ("pg_cron-1.6.7.tar.gz", "pg_cron-1.6.7.LICENSE", "SHA256SUMS"):
            packaged = zf.read(f"presence_sdk/testing/third_party/{name}")
            assert packaged == (third_party / name).read_bytes(), name
    script = "from presence_sdk.testing._pg_cron_build import pg_cron_source as s; "
    script += "src = s(); src.verify(); print(src.tarball)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(installed)},
    )
    assert result.returncode == 0, result.stderr
    tarball = Path(result.stdout.strip())
    assert (
        tarball == installed / "presence_sdk" / "testing" / "third_party" / "pg_cron-1.6.7.tar.gz"
    )


def test_installed_wheel_reads_its_own_sql(installed: Path, tmp_path: Path) -> None:
    script = """
import json, presence_sdk
from presence_sdk._sql import sql_root
print(json.dumps({
    "module": presence_sdk.__file__,
    "root": str(sql_root()),
    "schema": presence_sdk.schema_sql(),
    "rollback_schema": presence_sdk.rollback_schema_sql(),
    "migrations": [
        {"file": m.filename, "version": m.version, "name": m.name, "up": m.up, "down": m.down}
        for m in presence_sdk.migrations()
    ],
}))
"""
    env = os.environ | {"PYTHONPATH": str(installed)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # away from the checkout
        env=env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert Path(data["module"]).is_relative_to(installed)
    assert Path(data["root"]) == installed / "presence_sdk" / "supabase"
    assert data["schema"] == (SUPABASE / "schema.sql").read_text()
    assert data["rollback_schema"] == (SUPABASE / "rollbacks" / "schema.sql").read_text()
    files = sorted(p.name for p in (SUPABASE / "migrations").glob("*.sql"))
    assert [m["file"] for m in data["migrations"]] == files
    for m in data["migrations"]:
        assert m["file"] == f"{m['version']}_{m['name']}.sql"
        assert m["up"] == (SUPABASE / "migrations" / m["file"]).read_text()
        assert m["down"] == (SUPABASE / "rollbacks" / m["file"]).read_text()
