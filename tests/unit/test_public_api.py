"""The public surface: exactly what presence_sdk exports, typed and documented."""

from __future__ import annotations

import inspect
import logging
from importlib import resources

import presence_sdk
import presence_sdk.testing

EXPECTED = {
    "AsyncPresenceClient",
    "AsyncPresenceTracker",
    "AsyncPresenceWatcher",
    "EventPage",
    "OnlineDay",
    "PresenceEvent",
    "PresenceWatcher",
    "SessionRecord",
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
    "PresenceTracker",
    "PrivacySettings",
    "RateLimitedError",
    "RejectedError",
    "RequestError",
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
}


def test_exports_are_exactly_the_public_api() -> None:
    assert set(presence_sdk.__all__) == EXPECTED
    assert presence_sdk.__all__ == sorted(presence_sdk.__all__)


def test_every_export_exists_and_is_documented() -> None:
    for module in (presence_sdk, presence_sdk.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_exceptions_form_one_tree() -> None:
    for name in presence_sdk.__all__:
        obj = getattr(presence_sdk, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, presence_sdk.PresenceError), name


def test_package_is_typed_and_logs_nowhere_by_default() -> None:
    assert resources.files("presence_sdk").joinpath("py.typed").is_file()
    handlers = logging.getLogger("presence_sdk").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
