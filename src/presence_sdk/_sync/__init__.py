"""The synchronous shells: the heartbeat client and the tracker (daemon threads)."""

from presence_sdk._sync.client import PresenceClient
from presence_sdk._sync.tracker import PresenceTracker

__all__ = ["PresenceClient", "PresenceTracker"]
