"""The synchronous heartbeat client (a background daemon thread)."""

from presence_sdk._sync.client import PresenceClient

__all__ = ["PresenceClient"]
