"""Shared setup of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_support import pin_token_time
from misbehaving_server import MisbehavingServer


@pytest.fixture(autouse=True)
def _fresh_token_time() -> None:
    pin_token_time()


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingServer]:
    """A fresh misbehaving PostgREST stand-in on 127.0.0.1 (see misbehaving_server)."""
    with MisbehavingServer() as server:
        yield server
