"""The testing module's one exception (kept apart so every module can raise it)."""

from __future__ import annotations

__all__ = ["ClusterError"]


class ClusterError(RuntimeError):
    """The test cluster could not be created, started or stopped."""
