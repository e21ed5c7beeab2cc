"""Consistent-hash placement: distinct replicas, balance, and minimal movement."""

from __future__ import annotations

import pytest

from controller.assignment import HashRing, replica_key


def _placement(servers: list[str], items: int, replicas: int) -> dict[str, list[str]]:
    ring = HashRing(servers)
    return {replica_key("t_v1", p): ring.replicas(replica_key("t_v1", p), replicas) for p in range(items)}


class TestHashRing:
    def test_replicas_are_distinct_servers(self) -> None:
        for chosen in _placement(["a", "b", "c"], 200, 2).values():
            assert len(chosen) == 2
            assert len(set(chosen)) == 2

    def test_placement_is_deterministic(self) -> None:
        assert _placement(["a", "b", "c"], 50, 2) == _placement(["c", "b", "a"], 50, 2)

    def test_load_is_spread_over_all_servers(self) -> None:
        counts: dict[str, int] = {}
        for chosen in _placement(["a", "b", "c", "d"], 1000, 1).values():
            counts[chosen[0]] = counts.get(chosen[0], 0) + 1
        assert set(counts) == {"a", "b", "c", "d"}
        assert min(counts.values()) > 150  # fair share is 250

    def test_a_server_leaving_moves_only_its_share(self) -> None:
        before = _placement(["a", "b", "c", "d"], 1000, 1)
        after = _placement(["a", "b", "c"], 1000, 1)
        moved = sum(1 for item in before if before[item] != after[item])
        assert moved == sum(1 for chosen in before.values() if chosen == ["d"])
        assert moved < 400

    def test_more_replicas_than_servers_is_refused(self) -> None:
        with pytest.raises(ValueError):
            HashRing(["a"]).replicas("x", 2)
