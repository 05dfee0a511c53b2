"""Helpers of the client hardening tests (the misbehaving server, real sockets)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from client_support import user_token
from misbehaving_server import MisbehavingServer

from presence_sdk import AsyncPresenceClient, PresenceClient, PresenceConfig

#: Small timings: every test here is bounded to a few seconds.
QUICK = PresenceConfig(
    interval=0.2,
    timeout=1.0,
    jitter=0.0,
    backoff_initial=0.01,
    backoff_max=0.02,
    request_timeout=1.0,
    stop_timeout=0.5,
)


def quick(**overrides: Any) -> PresenceConfig:
    """:data:`QUICK` with ``overrides``."""
    return dataclasses.replace(QUICK, **overrides)


def sync_client(
    server: MisbehavingServer, config: PresenceConfig = QUICK, **kwargs: Any
) -> PresenceClient:
    """A PresenceClient that owns its httpx client (``from_url``), for ``server``."""
    return PresenceClient.from_url(
        server.url, server.anon_key, access_token=user_token(), config=config, **kwargs
    )


def async_client(
    server: MisbehavingServer, config: PresenceConfig = QUICK, **kwargs: Any
) -> AsyncPresenceClient:
    """The asyncio twin of :func:`sync_client`."""
    return AsyncPresenceClient.from_url(
        server.url, server.anon_key, access_token=user_token(), config=config, **kwargs
    )


def heartbeat_threads() -> list[threading.Thread]:
    """Live heartbeat threads."""
    return [t for t in threading.enumerate() if t.name == "presence-heartbeat" and t.is_alive()]


def endpoints(server: MisbehavingServer) -> list[str]:
    """The endpoints of the requests ``server`` received, in order."""
    return [seen.endpoint for seen in server.seen()]
