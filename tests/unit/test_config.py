"""PresenceConfig: immutable, validated at construction, defaults documented once."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from presence_sdk import PresenceConfig
from presence_sdk._config import DEFAULT_INTERVAL, DEFAULT_TIMEOUT, check_timing
from presence_sdk._exceptions import ConfigurationError, PresenceError


def test_defaults_follow_the_server_settings() -> None:
    config = PresenceConfig()
    assert config.interval is None
    assert config.timeout is None
    assert config.effective_interval(None) == DEFAULT_INTERVAL == 15.0
    assert config.effective_interval(7) == 7.0
    assert PresenceConfig(interval=3).effective_interval(7) == 3.0
    assert DEFAULT_TIMEOUT == 45.0
    assert config.leave_on_stop is True
    assert config.initial_status == "online"
    assert (config.stop_at_exit, config.handle_sigterm) == (False, False)


def test_is_frozen_keyword_only_and_slotted() -> None:
    config = PresenceConfig(interval=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.interval = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        PresenceConfig(5)  # type: ignore[call-arg]
    assert not hasattr(config, "__dict__")
    assert dataclasses.replace(config, jitter=0.2).jitter == 0.2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", 0),
        ("interval", -1),
        ("interval", math.inf),
        ("interval", math.nan),
        ("interval", "15"),
        ("interval", True),
        ("timeout", 0),
        ("request_timeout", 0),
        ("stop_timeout", -0.5),
        ("backoff_initial", 0),
        ("backoff_max", math.inf),
        ("idle_backoff_max", 0),
        ("jitter", -0.1),
        ("jitter", 0.6),
        ("jitter", True),
        ("max_attempts", 0),
        ("max_attempts", 1.5),
        ("max_attempts", True),
        ("initial_status", "offline"),
        ("initial_status", "Online"),
        ("leave_on_stop", 1),
        ("handle_sigterm", "yes"),
    ],
)
def test_invalid_values_raise_configuration_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        PresenceConfig(**{field: value})


def test_configuration_error_is_a_value_error_and_a_presence_error() -> None:
    with pytest.raises(ValueError, match="interval"):
        PresenceConfig(interval=-1)
    assert issubclass(ConfigurationError, PresenceError)


def test_backoff_initial_must_not_exceed_the_cap() -> None:
    with pytest.raises(ConfigurationError, match="backoff_initial"):
        PresenceConfig(backoff_initial=10, backoff_max=1)


def test_interval_with_jitter_must_end_before_the_timeout() -> None:
    PresenceConfig(interval=15, timeout=45)
    with pytest.raises(ConfigurationError, match="shorter than the presence timeout"):
        PresenceConfig(interval=45, timeout=45)
    with pytest.raises(ConfigurationError, match="with jitter"):
        PresenceConfig(interval=40, timeout=45, jitter=0.2)
    check_timing(10, 45, 0.5)
    with pytest.raises(ConfigurationError):
        check_timing(30, 45, 0.5)


def test_small_intervals_are_allowed_for_tests() -> None:
    config = PresenceConfig(interval=0.05, timeout=0.5, request_timeout=0.1, stop_timeout=0.1)
    assert config.effective_interval(15) == 0.05
