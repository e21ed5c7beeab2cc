"""The one partitioner: serialized key -> partition. Used by push, servers, router and SDK."""

from __future__ import annotations

from collections.abc import Iterable

import mmh3

__all__ = ["partition_for", "partitions_for"]


def partition_for(key_bytes: bytes, partition_count: int) -> int:
    """``mmh3.hash(key_bytes, signed=False) % partition_count`` (the architecture contract)."""
    return mmh3.hash(key_bytes, signed=False) % partition_count


def partitions_for(keys: Iterable[bytes], partition_count: int) -> list[int]:
    """:func:`partition_for` of each key (the push's batches: no Python call per key)."""
    hash32 = mmh3.hash
    return [hash32(key_bytes, signed=False) % partition_count for key_bytes in keys]
