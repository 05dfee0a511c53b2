"""presence_sdk: reliable user presence for apps on Supabase.

The database contract lives in the shipped SQL (:func:`schema_sql`,
:func:`migrations`); the clients send heartbeats and read presence through it, and
the trackers keep the sessions of many users alive from a server.
"""

import logging

from presence_sdk._async import AsyncPresenceClient, AsyncPresenceTracker
from presence_sdk._async.watcher import AsyncPresenceWatcher
from presence_sdk._config import PresenceConfig, TrackerConfig
from presence_sdk._core import PresenceState, PresenceStats
from presence_sdk._events import (
    EventPage,
    OnlineDay,
    PresenceEvent,
    SessionRecord,
)
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
    SessionsRejectedError,
    SetupError,
    TransientError,
)
from presence_sdk._migrate import MigrationResult, migrate, rollback
from presence_sdk._models import OnlinePage, Presence, SetupCheck, SetupReport, StatusCounts
from presence_sdk._privacy import PrivacySettings, Visibility
from presence_sdk._sql import Migration, migrations, rollback_schema_sql, schema_sql
from presence_sdk._sync import PresenceClient, PresenceTracker
from presence_sdk._sync.watcher import PresenceWatcher
from presence_sdk._tracker_core import TrackerStats
from presence_sdk._verify_io import averify_setup, verify_setup

__all__ = [
    "AsyncPresenceClient",
    "AsyncPresenceTracker",
    "AsyncPresenceWatcher",
    "AuthenticationError",
    "ConfigurationError",
    "EventPage",
    "InvalidInputError",
    "Migration",
    "MigrationError",
    "MigrationResult",
    "NotInstalledError",
    "OnlineDay",
    "OnlinePage",
    "PermissionDeniedError",
    "Presence",
    "PresenceClient",
    "PresenceConfig",
    "PresenceError",
    "PresenceEvent",
    "PresenceState",
    "PresenceStats",
    "PresenceTracker",
    "PresenceWatcher",
    "PrivacySettings",
    "RateLimitedError",
    "RejectedError",
    "RequestError",
    "SessionRecord",
    "SessionsRejectedError",
    "SetupCheck",
    "SetupError",
    "SetupReport",
    "StatusCounts",
    "TrackerConfig",
    "TrackerStats",
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
