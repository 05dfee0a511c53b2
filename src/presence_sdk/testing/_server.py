"""A ready-to-use presence test server: cluster + shim + SQL + template database."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from presence_sdk.testing._bootstrap import (
    PresenceDatabase,
    apply_presence_sql,
    install_supabase_shim,
)
from presence_sdk.testing._cluster import PostgresCluster

__all__ = ["PresenceDatabase", "PresenceTestServer"]

_TEMPLATE = "presence_template"
_CRON_DB = "postgres"


@dataclass(kw_only=True)
class PresenceTestServer:
    """A local PostgreSQL + pg_cron prepared like a Supabase project.

    On :meth:`start`: starts a :class:`PostgresCluster`, installs the Supabase shim
    and the presence SQL in the cron database (``postgres``, where the real
    ``mark-inactive-users`` job runs) and in a template database from which
    :meth:`database` clones a fresh database in milliseconds.

    Args:
        cluster: The cluster to use; a new one (pg_cron preloaded) by default.
        apply_sql: Apply ``schema.sql`` and the migrations (False: shim only).
    """

    cluster: PostgresCluster = field(default_factory=PostgresCluster)
    apply_sql: bool = True
    cron_notices: list[str] = field(default_factory=list, init=False)
    _counter: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start and prepare everything; on failure, clean up and raise."""
        self.cluster.start()
        try:
            self.cluster.create_database(_TEMPLATE)
            for dbname in (_TEMPLATE, _CRON_DB):
                with self.cluster.connect(dbname) as conn:
                    install_supabase_shim(conn)
                    if self.apply_sql:
                        notices = apply_presence_sql(conn)
                        if dbname == _CRON_DB:
                            self.cron_notices = notices
        except BaseException:
            self.cluster.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the cluster and delete its files."""
        self.cluster.stop()

    @property
    def cron_database(self) -> PresenceDatabase:
        """The database where pg_cron runs (``postgres``)."""
        return PresenceDatabase(dsn=self.cluster.dsn(_CRON_DB), name=_CRON_DB)

    @property
    def template_name(self) -> str:
        """Name of the migrated template database."""
        return _TEMPLATE

    @contextmanager
    def database(self, *, template: str | None = _TEMPLATE) -> Iterator[PresenceDatabase]:
        """A fresh database cloned from the template (or empty with ``template=None``)."""
        name = f"presence_test_{os.getpid()}_{next(self._counter)}"
        with self.cluster.temporary_database(
            name, template=template if template is not None else "template0"
        ) as dsn:
            yield PresenceDatabase(dsn=dsn, name=name)
