"""Access to the shipped SQL (``supabase/`` in the repository, package data in wheels).

The SQL files are the source of truth for the database contract. In a wheel they live
under ``presence_sdk/supabase``; in a source checkout (editable install) they are read
from the repository's top-level ``supabase/`` folder, so there is only ever one copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["Migration", "migrations", "rollback_schema_sql", "schema_sql", "sql_root"]

_MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One shipped migration with its rollback.

    Attributes:
        version: The 14-digit timestamp prefix, as the Supabase CLI records it in
            ``supabase_migrations.schema_migrations``.
        name: The part of the file name after the version, e.g. ``add_heartbeat``.
        up: The migration's SQL (idempotent).
        down: The SQL that undoes it (idempotent), from ``supabase/rollbacks/``.
    """

    version: str
    name: str
    up: str
    down: str

    @property
    def filename(self) -> str:
        """The migration's file name, e.g. ``20240000000001_add_heartbeat.sql``."""
        return f"{self.version}_{self.name}.sql"


def sql_root() -> Traversable:
    """Return the folder holding ``schema.sql``, ``migrations/`` and ``rollbacks/``."""
    packaged = resources.files("presence_sdk").joinpath("supabase")
    if packaged.is_dir():
        return packaged
    # Source checkout: src/presence_sdk/_sql.py -> repository root.
    checkout = Path(__file__).resolve().parents[2] / "supabase"
    if checkout.is_dir():
        return checkout
    msg = "presence_sdk is installed without its SQL files (supabase/ folder missing)"
    raise FileNotFoundError(msg)


def schema_sql() -> str:
    """Return ``supabase/schema.sql``: the base ``public.users`` table."""
    return sql_root().joinpath("schema.sql").read_text(encoding="utf-8")


def rollback_schema_sql() -> str:
    """Return the rollback of ``schema.sql`` (drops ``public.users``: destroys data)."""
    return sql_root().joinpath("rollbacks", "schema.sql").read_text(encoding="utf-8")


@cache
def _load_migrations() -> tuple[Migration, ...]:
    root = sql_root()
    found: list[Migration] = []
    for entry in root.joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        down = root.joinpath("rollbacks", entry.name)
        if not down.is_file():
            msg = f"migration {entry.name} has no rollback in supabase/rollbacks/"
            raise FileNotFoundError(msg)
        found.append(
            Migration(
                version=match["version"],
                name=match["name"],
                up=entry.read_text(encoding="utf-8"),
                down=down.read_text(encoding="utf-8"),
            )
        )
    return tuple(sorted(found, key=lambda m: m.version))


def migrations() -> list[Migration]:
    """Return the shipped migrations, oldest first (the order to apply them)."""
    return list(_load_migrations())
