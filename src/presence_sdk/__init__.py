"""presence_sdk: reliable user presence for apps on Supabase.

The database contract lives in the shipped SQL (:func:`schema_sql`,
:func:`migrations`); the clients send heartbeats and read presence through it.
"""

from presence_sdk._sql import Migration, migrations, rollback_schema_sql, schema_sql

__all__ = [
    "Migration",
    "migrations",
    "rollback_schema_sql",
    "schema_sql",
]

__version__ = "0.1.0"
