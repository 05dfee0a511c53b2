"""verify_setup() on servers with a different pg_cron: none at all, and Debian's 1.4.2.

Both start a second, private cluster from a relocated copy of the PostgreSQL 15 tree
(PostgreSQL finds its share and lib directories relative to its binary): one without
any pg_cron files, and the legacy tree that scripts/stage-pg-cron-legacy.sh stages
with pg_cron 1.4.2 (idempotent; instant once staged).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from presence_sdk._models import SetupReport
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import (
    PostgresCluster,
    apply_presence_sql,
    find_bindir,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _pg_config(bindir: Path, flag: str) -> Path:
    out = subprocess.run(
        [str(bindir / "pg_config"), flag], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def tree_without_pg_cron() -> Iterator[Path]:
    """bindir of a copy of the PostgreSQL 15 tree without any pg_cron file."""
    root = Path(tempfile.mkdtemp(prefix="presence-verify-nocron-"))
    root.chmod(0o755)  # the server may run as the postgres OS user
    try:
        bindir = find_bindir()
        for source in (bindir, _pg_config(bindir, "--pkglibdir"), _pg_config(bindir, "--sharedir")):
            shutil.copytree(
                source,
                root / source.relative_to("/"),
                symlinks=True,
                copy_function=_link_or_copy,
                ignore=shutil.ignore_patterns("pg_cron*"),
                dirs_exist_ok=True,
            )
        staged = root / bindir.relative_to("/")
        assert str(_pg_config(staged, "--sharedir")).startswith(str(root))
        yield staged
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _verify_fresh_cluster(cluster: PostgresCluster) -> tuple[SetupReport, list[str]]:
    with cluster.connect() as conn:
        install_supabase_shim(conn)
        notices = apply_presence_sql(conn)
    return verify_setup(dsn=cluster.dsn(), raise_on_error=False), notices


def test_pg_cron_not_available_on_the_server(tree_without_pg_cron: Path) -> None:
    with PostgresCluster(pg_cron=False, bindir=tree_without_pg_cron) as cluster:
        report, notices = _verify_fresh_cluster(cluster)
    assert any("pg_cron is not available on this server" in n for n in notices)
    assert [c.name for c in report.problems] == ["pg_cron"], str(report)
    finding = report.problems[0]
    assert "pg_cron is not available on this server" in finding.detail
    assert "reads stay exact" in finding.detail
    assert finding.fix.startswith(
        "on Supabase: Dashboard > Database > Extensions > enable pg_cron; then, in the SQL "
        "editor: SELECT public.presence_schedule_sweep();"
    )
    assert "shared_preload_libraries = 'pg_cron'" in finding.fix
    assert report.sweep_period_seconds is None


def test_old_pg_cron_fallback_is_reported_with_its_period() -> None:
    script = REPO / "scripts" / "stage-pg-cron-legacy.sh"
    staged = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    bindir = Path(staged.stdout.strip().splitlines()[-1])
    with PostgresCluster(bindir=bindir) as cluster:
        assert cluster.pg_cron_version == "1.4-1"
        report, _ = _verify_fresh_cluster(cluster)
    assert report.ok, str(report)
    assert report.sweep_period_seconds == 60
    finding = next(c for c in report.checks if c.name == "cron.job.schedule")
    assert finding.detail.startswith("runs every minute ('* * * * *'): the fallback for pg_cron")
    assert "may lag up to 60 s behind the 45 s timeout (reads stay exact)" in finding.detail
    assert report.raw["pg_cron"]["version"] == "1.4-1"
