"""The one partitioner: serialized key -> partition. Used by push, servers, router and SDK."""

from __future__ import annotations

import mmh3

__all__ = ["partition_for"]


def partition_for(key_bytes: bytes, partition_count: int) -> int:
    """``mmh3.hash(key_bytes, signed=False) % partition_count`` (the architecture contract)."""
    return mmh3.hash(key_bytes, signed=False) % partition_count
