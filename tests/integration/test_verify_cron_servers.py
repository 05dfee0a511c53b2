"""verify_setup() on a server without any pg_cron file.

It starts a second, private cluster from a relocated copy of the session's PostgreSQL
tree (PostgreSQL finds its share and lib directories relative to its binary). How
verify_setup() reports an old pg_cron (1.4: every minute) is checked against the
session's own pg_cron in test_verify_db.py, and CI runs that suite on pg_cron 1.4.2.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_trees import mirror_without_pg_cron

from presence_sdk._models import SetupReport
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import (
    PostgresCluster,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tree_without_pg_cron() -> Iterator[Path]:
    """bindir of a copy of the session's PostgreSQL tree without any pg_cron file."""
    root = Path(tempfile.mkdtemp(prefix="presence-verify-nocron-"))
    root.chmod(0o755)  # the server may run as the postgres OS user
    try:
        yield mirror_without_pg_cron(root)
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
