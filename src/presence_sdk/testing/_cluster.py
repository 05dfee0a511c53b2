"""A throwaway PostgreSQL cluster (with pg_cron) in a temporary directory."""

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

from presence_sdk.testing._errors import ClusterError
from presence_sdk.testing._locate import find_bindir, pg_cron_version_of

__all__ = ["ClusterError", "PostgresCluster", "find_bindir"]

logger = logging.getLogger("presence_sdk.testing")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        bindir: Directory with ``initdb``/``pg_ctl``; if None, :func:`find_bindir`
            picks one (``PRESENCE_PG_BINDIR``, ``pg_config`` on PATH, Debian's, else
            PostgreSQL 18 from PyPI with pg_cron built for it).
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
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, check=False, cwd=self._root
            )
        except OSError as exc:
            # Non-root runs the binary directly: a missing initdb is an OSError here
            # (as root, runuser reports it in its exit status instead).
            msg = f"{' '.join(args)} cannot run: {exc.strerror or exc}"
            raise ClusterError(msg) from exc
        if check and result.returncode != 0:
            msg = f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            raise ClusterError(msg)
        return result

    @staticmethod
    def _server_os_user() -> pwd.struct_passwd | None:
        """The OS user the server runs as: ``postgres`` when we are root, else us."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            msg = (
                "running as root: PostgreSQL refuses root and runs as the 'postgres' OS "
                "user, which does not exist (create it: useradd --system postgres), "
                "or run as a normal user"
            )
            raise ClusterError(msg) from None

    def start(self) -> Self:
        """Create the cluster and start the server; returns self."""
        if self.running:
            return self
        chosen_for_us = self.bindir is None
        bindir = self.bindir or find_bindir(pg_cron=self.pg_cron)
        self.bindir = bindir
        if self.pg_cron:
            self.pg_cron_version = pg_cron_version_of(bindir)
            if self.pg_cron_version is None:
                msg = (
                    f"pg_cron is not installed for the PostgreSQL in {bindir} "
                    "(scripts/install-pg-cron.sh installs it), or pass pg_cron=False"
                )
                raise ClusterError(msg)
        owner = self._server_os_user()
        self._root = Path(tempfile.mkdtemp(prefix="presence-pg-"))
        if owner is not None:
            self._os_user = owner.pw_name
            os.chown(self._root, owner.pw_uid, owner.pw_gid)
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
        except ClusterError as exc:
            self.stop()
            if not chosen_for_us:
                raise
            msg = (
                f"{exc}\n(the PostgreSQL in {bindir} was found automatically; choose "
                "another with PRESENCE_PG_BINDIR=/path/to/bin or PRESENCE_PG=embedded)"
            )
            raise ClusterError(msg) from exc
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
