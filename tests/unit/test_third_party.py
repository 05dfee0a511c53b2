"""The pg_cron source the repository carries: pinned, licensed, named consistently."""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

from presence_sdk.testing._pg_cron_build import PG_CRON_VERSION, pg_cron_source

REPO = Path(__file__).resolve().parents[2]
THIRD_PARTY = REPO / "third_party"
TARBALL = THIRD_PARTY / f"pg_cron-{PG_CRON_VERSION}.tar.gz"


def test_the_tarball_matches_its_pin_and_the_readme() -> None:
    source = pg_cron_source()
    assert source.tarball == TARBALL
    digest = hashlib.sha256(TARBALL.read_bytes()).hexdigest()
    assert source.sha256 == digest
    source.verify()
    assert digest in (THIRD_PARTY / "README.md").read_text()


def test_the_license_is_the_one_inside_the_tarball() -> None:
    with tarfile.open(TARBALL) as archive:
        member = archive.extractfile(f"pg_cron-{PG_CRON_VERSION}/LICENSE")
        assert member is not None
        inside = member.read()
    assert (THIRD_PARTY / f"pg_cron-{PG_CRON_VERSION}.LICENSE").read_bytes() == inside
    assert b"Citus Data" in inside


def test_the_tarball_is_the_version_it_says() -> None:
    with tarfile.open(TARBALL) as archive:
        names = archive.getnames()
        control = archive.extractfile(f"pg_cron-{PG_CRON_VERSION}/pg_cron.control")
        assert control is not None
        text = control.read().decode()
    assert all(n.split("/", 1)[0] == f"pg_cron-{PG_CRON_VERSION}" for n in names)
    assert "default_version = '1.6'" in text


def test_build_inputs_name_the_same_file() -> None:
    name = TARBALL.name
    assert f"name={name}" in (REPO / "scripts" / "install-pg-cron.sh").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    for shipped in (name, f"pg_cron-{PG_CRON_VERSION}.LICENSE", "SHA256SUMS"):
        assert f'"third_party/{shipped}" = "presence_sdk/testing/third_party/{shipped}"' in (
            pyproject
        )


def test_nothing_reads_a_folder_beside_the_repository() -> None:
    """The repository stands alone: no build, test or run input outside it."""
    pattern = re.compile(r"\.\./shared|/work/shared|shared/vendor")
    checked = [
        REPO / "Makefile",
        REPO / "pyproject.toml",
        REPO / "mkdocs.yml",
        *(REPO / ".ci").glob("*"),
        *(REPO / "scripts").glob("*"),
        *(REPO / "src").rglob("*.py"),
        *(REPO / "tests").rglob("*.py"),
        *(REPO / "examples").glob("*.py"),
        *(REPO / "bench").rglob("*.py"),
        *(REPO / "docs").rglob("*.md"),
    ]
    this = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(REPO))
        for path in checked
        if path.is_file() and path.resolve() != this and pattern.search(path.read_text())
    ]
    assert offenders == []
