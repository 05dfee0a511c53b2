"""presence_sdk: reliable user presence for apps on Supabase.

The database contract lives in the shipped SQL (:func:`schema_sql`,
:func:`migrations`); the clients send heartbeats and read presence through it.
"""

import logging

from presence_sdk._async import AsyncPresenceClient
from presence_sdk._config import PresenceConfig
from presence_sdk._core import PresenceState, PresenceStats
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    MigrationError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    RateLimitedError,
    RejectedError,
    RequestError,
    SetupError,
    TransientError,
)
from presence_sdk._migrate import MigrationResult, migrate, rollback
from presence_sdk._models import OnlinePage, Presence, SetupCheck, SetupReport, StatusCounts
from presence_sdk._privacy import PrivacySettings, Visibility
from presence_sdk._sql import Migration, migrations, rollback_schema_sql, schema_sql
from presence_sdk._sync import PresenceClient
from presence_sdk._verify_io import averify_setup, verify_setup

__all__ = [
    "AsyncPresenceClient",
    "AuthenticationError",
    "ConfigurationError",
    "InvalidInputError",
    "Migration",
    "MigrationError",
    "MigrationResult",
    "NotInstalledError",
    "OnlinePage",
    "PermissionDeniedError",
    "Presence",
    "PresenceClient",
    "PresenceConfig",
    "PresenceError",
    "PresenceState",
    "PresenceStats",
    "PrivacySettings",
    "RateLimitedError",
    "RejectedError",
    "RequestError",
    "SetupCheck",
    "SetupError",
    "SetupReport",
    "StatusCounts",
    "TransientError",
    "Visibility",
    "averify_setup",
    "migrate",
    "migrations",
    "rollback",
    "rollback_schema_sql",
    "schema_sql",
    "verify_setup",
]

__version__ = "0.1.0"

# Library etiquette: log records go nowhere unless the app configures logging.
logging.getLogger("presence_sdk").addHandler(logging.NullHandler())
