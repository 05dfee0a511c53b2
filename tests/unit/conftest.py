"""Shared setup of the unit tests."""

from __future__ import annotations

import pytest
from client_support import pin_token_time


@pytest.fixture(autouse=True)
def _fresh_token_time() -> None:
    pin_token_time()
