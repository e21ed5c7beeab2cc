"""Replica placement by consistent hashing over live servers (virtual nodes).

A server joining or leaving moves only the replicas whose ring positions it gains or
loses. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable

import mmh3

__all__ = ["DEFAULT_VIRTUAL_NODES", "HashRing"]

DEFAULT_VIRTUAL_NODES = 128


class HashRing:
    """A ring of ``virtual_nodes`` points per server."""

    def __init__(self, servers: Iterable[str], virtual_nodes: int = DEFAULT_VIRTUAL_NODES) -> None:
        points = []
        for server in set(servers):
            for i in range(virtual_nodes):
                points.append((mmh3.hash(f"{server}#{i}", signed=False), server))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._servers = [s for _, s in points]
        self.server_count = len({s for s in self._servers})

    def replicas(self, item: str, count: int, *, exclude: Collection[str] = ()) -> list[str]:
        """The first ``count`` distinct servers clockwise from ``item``'s hash, skipping
        ``exclude`` (servers where the item failed): fewer when too few are left."""
        if count > self.server_count:
            raise ValueError(f"{count} replicas asked of {self.server_count} servers")
        chosen: list[str] = []
        if count <= 0:
            return chosen
        start = bisect.bisect(self._hashes, mmh3.hash(item, signed=False))
        n = len(self._servers)
        for step in range(n):
            server = self._servers[(start + step) % n]
            if server not in chosen and server not in exclude:
                chosen.append(server)
                if len(chosen) == count:
                    break
        return chosen


def replica_key(topic: str, partition: int) -> str:
    """The ring item for one partition of one version topic."""
    return f"{topic}/{partition}"
