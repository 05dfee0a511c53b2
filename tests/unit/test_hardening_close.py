"""Defect 6: leaving a ``with`` block releases what a ``from_url`` client owns.

0.1.0's context managers only stopped: the httpx client that ``from_url`` created kept
its keep-alive connection open until garbage collection, which warns
(``ResourceWarning: unclosed <socket ...>``, visible under ``-X dev``).
"""

from __future__ import annotations

import gc
import warnings

import pytest
from client_support import async_wait_until, wait_until
from hardening_support import async_client, sync_client
from misbehaving_server import MisbehavingServer

from presence_sdk import PresenceState


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def _sync_run_in_a_with_block(server: MisbehavingServer) -> bool:
    """One run in a ``with`` block; whether the owned httpx client is closed after it."""
    with sync_client(server) as presence:
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    return presence.supabase.postgrest.session.is_closed


async def _async_run_in_a_with_block(server: MisbehavingServer) -> bool:
    async with async_client(server) as presence:
        await async_wait_until(lambda: presence.state is PresenceState.ONLINE)
    return presence.supabase.postgrest.session.is_closed


def test_sync_with_block_closes_the_owned_http_client(misbehaving: MisbehavingServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _sync_run_in_a_with_block(misbehaving)
        gc.collect()  # the client is garbage now: an open socket would warn
    assert _resource_warnings(caught) == []


def test_sync_client_can_be_used_again_after_its_with_block(
    misbehaving: MisbehavingServer,
) -> None:
    presence = sync_client(misbehaving)
    with presence:
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    with presence:  # a new pool is opened on use, and closed again on exit
        wait_until(lambda: presence.state is PresenceState.ONLINE)
    assert presence.supabase.postgrest.session.is_closed
    assert len({s.peer for s in misbehaving.seen("presence_session_beat")}) == 2


@pytest.mark.asyncio
async def test_async_with_block_closes_the_owned_http_client(
    misbehaving: MisbehavingServer,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _async_run_in_a_with_block(misbehaving)
        gc.collect()
    assert _resource_warnings(caught) == []
