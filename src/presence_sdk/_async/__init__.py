"""The asyncio heartbeat client (a background task)."""

from presence_sdk._async.client import AsyncPresenceClient

__all__ = ["AsyncPresenceClient"]
