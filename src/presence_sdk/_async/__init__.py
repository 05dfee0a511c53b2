"""The asyncio shells: the heartbeat client and the tracker (background tasks)."""

from presence_sdk._async.client import AsyncPresenceClient
from presence_sdk._async.tracker import AsyncPresenceTracker

__all__ = ["AsyncPresenceClient", "AsyncPresenceTracker"]
