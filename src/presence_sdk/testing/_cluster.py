"""A throwaway PostgreSQL 15 cluster (with pg_cron) in a temporary directory."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

__all__ = ["ClusterError", "PostgresCluster", "find_bindir"]

logger = logging.getLogger("presence_sdk.testing")

_DEFAULT_BINDIRS = ("/usr/lib/postgresql/15/bin",)


class ClusterError(RuntimeError):
    """The test cluster could not be created, started or stopped."""


def find_bindir() -> Path:
    """Locate the PostgreSQL 15 server binaries.

    ``PRESENCE_PG_BINDIR`` wins; otherwise the Debian location, then ``pg_config``
    on ``PATH``.
    """
    candidates: list[str] = []
    if env := os.environ.get("PRESENCE_PG_BINDIR"):
        candidates.append(env)
    candidates.extend(_DEFAULT_BINDIRS)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    msg = (
        "PostgreSQL server binaries not found (looked in "
        f"{', '.join(c for c in candidates if c)}); install postgresql-15 or set "
        "PRESENCE_PG_BINDIR"
    )
    raise ClusterError(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_cron_available(bindir: Path) -> str | None:
    """Return the installed pg_cron default version, or None if not installed."""
    out = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"],
        capture_output=True,
        text=True,
        check=False,
    )
    sharedir = out.stdout.strip()
    if not sharedir and bindir.parent.name == "15":
        sharedir = f"/usr/share/postgresql/{bindir.parent.name}"
    control = Path(sharedir) / "extension" / "pg_cron.control"
    if not control.is_file():
        return None
    for line in control.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "default_version":
            return value.strip().strip("'")
    return None


@dataclass(kw_only=True)
class PostgresCluster:
    """A PostgreSQL cluster in a temporary directory, for tests and demos.

    Runs as the ``postgres`` OS user when the current user is root (``initdb``
    refuses root), listens on 127.0.0.1 on a free port, and preloads pg_cron with
    background workers (``cron.database_name`` is the ``postgres`` database).
    Everything is removed by :meth:`stop`, which also runs on ``with`` exit.

    Args:
        pg_cron: Preload pg_cron. If True and pg_cron is not installed,
            :meth:`start` raises :class:`ClusterError`.
        durable: Keep fsync and synchronous commit on (benchmarks). Tests leave it
            off for speed: the cluster is thrown away anyway.
        settings: Extra ``postgresql.conf`` settings.
        bindir: Directory with ``initdb``/``pg_ctl``; found automatically if None.
    """

    pg_cron: bool = True
    durable: bool = False
    settings: Mapping[str, str] = field(default_factory=dict)
    bindir: Path | None = None
    superuser: str = "postgres"
    host: str = "127.0.0.1"
    port: int = 0
    datadir: Path | None = field(default=None, init=False)
    pg_cron_version: str | None = field(default=None, init=False)
    _root: Path | None = field(default=None, init=False, repr=False)
    _os_user: str | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self.datadir is not None

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = args if self._os_user is None else ["runuser", "-u", self._os_user, "--", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self._root)
        if check and result.returncode != 0:
            msg = f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            raise ClusterError(msg)
        return result

    def start(self) -> Self:
        """Create the cluster and start the server; returns self."""
        if self.running:
            return self
        bindir = self.bindir or find_bindir()
        self.bindir = bindir
        if self.pg_cron:
            self.pg_cron_version = _pg_cron_available(bindir)
            if self.pg_cron_version is None:
                msg = (
                    "pg_cron is not installed for this PostgreSQL "
                    "(run scripts/install-pg-cron.sh), or pass pg_cron=False"
                )
                raise ClusterError(msg)
        self._root = Path(tempfile.mkdtemp(prefix="presence-pg-"))
        if os.geteuid() == 0:
            self._os_user = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self._root, entry.pw_uid, entry.pw_gid)
        datadir = self._root / "data"
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    self.superuser,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
            self.datadir = datadir
            self._start_server(bindir, datadir)
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self) -> dict[str, str]:
        conf = {
            "listen_addresses": f"'{self.host}'",
            "unix_socket_directories": f"'{self._root}'",
            "max_connections": "300",
            "max_worker_processes": "32",
            "timezone": "'UTC'",
            "log_min_messages": "warning",
            "log_timezone": "'UTC'",
        }
        if not self.durable:
            conf |= {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
        if self.pg_cron:
            conf |= {
                "shared_preload_libraries": "'pg_cron'",
                "cron.database_name": "'postgres'",
                # Without background workers, jobs connect over libpq and fail with
                # "connection failed" under trust-less setups.
                "cron.use_background_workers": "on",
                "cron.max_running_jobs": "8",
            }
        conf |= dict(self.settings)
        return conf

    def _start_server(self, bindir: Path, datadir: Path) -> None:
        assert self._root is not None
        last_error: ClusterError | None = None
        for _attempt in range(3):
            port = self.port or _free_port()
            conf = self._config() | {"port": str(port)}
            text = "".join(f"{k} = {v}\n" for k, v in conf.items())
            (datadir / "postgresql.auto.conf").write_text(text)
            if self._os_user is not None:
                entry = pwd.getpwnam(self._os_user)
                os.chown(datadir / "postgresql.auto.conf", entry.pw_uid, entry.pw_gid)
            result = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(datadir),
                    "-l",
                    str(self._root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                check=False,
            )
            if result.returncode == 0:
                self.port = port
                logger.info("PostgreSQL started on %s:%s in %s", self.host, port, datadir)
                return
            log = self.server_log()
            last_error = ClusterError(
                f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{log}"
            )
            if self.port:
                break
        assert last_error is not None
        raise last_error

    def restart(self, *, mode: str = "fast") -> None:
        """Restart the server in place: same data, same port; every connection drops.

        Args:
            mode: ``pg_ctl`` shutdown mode: ``fast`` (clean) or ``immediate`` (a crash:
                recovery replays the WAL at startup).
        """
        if self.datadir is None or self.bindir is None or self._root is None:
            msg = "the cluster is not running"
            raise ClusterError(msg)
        if mode not in ("fast", "immediate"):
            msg = f"mode must be 'fast' or 'immediate', not {mode!r}"
            raise ClusterError(msg)
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self._root / "server.log"),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "restart",
            ]
        )

    def server_log(self) -> str:
        """Return the server log so far (for failure messages)."""
        if self._root is None:
            return ""
        path = self._root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast, no checkpoint wait) and delete the directory."""
        if self.datadir is not None and self.bindir is not None:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                check=False,
            )
        self.datadir = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def dsn(self, dbname: str = "postgres", *, user: str | None = None) -> str:
        """Return a libpq connection string for ``dbname`` (superuser by default)."""
        if not self.running:
            msg = "the cluster is not running"
            raise ClusterError(msg)
        return f"host={self.host} port={self.port} dbname={dbname} user={user or self.superuser}"

    def connect(
        self, dbname: str = "postgres", *, autocommit: bool = True
    ) -> psycopg.Connection[tuple[object, ...]]:
        """Open a psycopg connection to ``dbname`` as the superuser."""
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """Create database ``name``, optionally cloned from ``template``."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.connect() as conn:
            for attempt in range(50):
                try:
                    conn.execute(query)
                    return
                except psycopg.errors.ObjectInUse:
                    # The template still has a lingering connection (e.g. just closed).
                    if attempt == 49:
                        raise
                    time.sleep(0.05)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @contextlib.contextmanager
    def temporary_database(self, name: str, *, template: str | None = None) -> Iterator[str]:
        """Create a database for the duration of a ``with`` block; yields its DSN."""
        self.create_database(name, template=template)
        try:
            yield self.dsn(name)
        finally:
            self.drop_database(name)
