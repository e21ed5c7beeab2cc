"""Controller metadata rules: stores, versions going ONLINE, retention, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.persistence import MetadataFile
from controller.state import ClusterState
from venice.errors import (
    ConflictError,
    NotEnoughServersError,
    RequestError,
    SchemaError,
    StoreExistsError,
    StoreNotFoundError,
)

VALUE_SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


def _state(servers: int = 2) -> ClusterState:
    state = ClusterState("embedded:///tmp/x")
    for i in range(servers):
        state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
    state.create_store("members", "long", VALUE_SCHEMA, partitions=4, replication_factor=2)
    return state


def _report_all(state: ClusterState, store: str, number: int, status: str = "READY") -> None:
    version = state.version(store, number)
    for partition, replicas in version.replicas.items():
        for replica in replicas:
            report = {"store": store, "version": number, "partition": partition, "status": status}
            state.heartbeat(replica.server, state.servers[replica.server].url, [report], now=101.0)


class TestStores:
    def test_duplicate_store_is_a_conflict(self) -> None:
        state = _state()
        with pytest.raises(StoreExistsError):
            state.create_store("members", "long", VALUE_SCHEMA, 4, 2)

    def test_bad_schema_is_refused(self) -> None:
        with pytest.raises(SchemaError):
            _state().create_store("other", "long", {"type": "record", "name": "V"}, 4, 1)

    def test_bad_name_is_refused(self) -> None:
        with pytest.raises(RequestError):
            _state().create_store("a/b", "long", VALUE_SCHEMA, 4, 1)

    def test_unknown_store(self) -> None:
        with pytest.raises(StoreNotFoundError):
            _state().open_version("nope", now=100.0)


class TestVersions:
    def test_each_partition_gets_replication_factor_distinct_servers(self) -> None:
        state = _state(servers=3)
        version = state.open_version("members", now=100.0)
        assert version.topic == "members_v1"
        assert sorted(version.replicas) == [0, 1, 2, 3]
        for replicas in version.replicas.values():
            assert len({r.server for r in replicas}) == 2

    def test_not_enough_live_servers(self) -> None:
        state = _state(servers=2)
        with pytest.raises(NotEnoughServersError):
            state.open_version("members", now=100.0 + state.dead_after_s + 1)

    def test_online_and_current_only_when_every_replica_is_ready(self) -> None:
        state = _state()
        version = state.open_version("members", now=100.0)
        table = state.routing_table(100.0)["stores"]["members"]
        assert table["current_version"] is None and table["versions"] == {}
        first = version.replicas[0][0]
        state.heartbeat(first.server, "http://127.0.0.1:7000" if first.server == "s0" else "http://127.0.0.1:7001",
                        [{"store": "members", "version": 1, "partition": 0, "status": "READY"}], now=101.0)
        assert version.status == "STARTED"
        _report_all(state, "members", 1)
        assert version.status == "ONLINE"
        table = state.routing_table(101.0)["stores"]["members"]
        assert table["current_version"] == 1
        assert all(len(urls) == 2 for urls in table["versions"]["1"]["partitions"].values())

    def test_a_replica_error_fails_the_version_and_keeps_current(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        _report_all(state, "members", 1)
        state.open_version("members", now=100.0)
        _report_all(state, "members", 2, status="ERROR")
        store = state.store("members")
        assert store.versions[2].status == "ERROR"
        assert store.current_version == 1
        assert "members_v2" in state.topics_to_delete
        assert state.assignment_for("s0") == [a for a in state.assignment_for("s0") if a["version"] == 1]

    def test_current_plus_one_backup_are_kept(self) -> None:
        state = _state()
        for number in (1, 2, 3):
            state.open_version("members", now=100.0)
            _report_all(state, "members", number)
        store = state.store("members")
        assert store.current_version == 3
        assert [store.versions[n].status for n in (1, 2, 3)] == ["RETIRED", "ONLINE", "ONLINE"]
        assert "members_v1" in state.topics_to_delete
        assert {a["version"] for a in state.assignment_for("s0")} == {2, 3}

    def test_generation_moves_on_routing_changes(self) -> None:
        state = _state()
        before = state.generation
        state.open_version("members", now=100.0)
        _report_all(state, "members", 1)
        assert state.generation > before


class TestPersistence:
    def test_round_trip_keeps_everything(self, tmp_path: Path) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        _report_all(state, "members", 1)
        state.open_version("members", now=100.0)
        metadata = MetadataFile(tmp_path)
        metadata.save(state)
        loaded = metadata.load("embedded:///tmp/x", 15.0)
        assert loaded.describe_store(loaded.store("members")) == state.describe_store(state.store("members"))
        assert loaded.assignment_for("s0") == state.assignment_for("s0")
        assert loaded.generation > state.generation
        table = loaded.routing_table(0.0)
        assert table["stores"] == state.routing_table(0.0)["stores"]


class TestLifecycle:
    def _online(self, state: ClusterState, count: int, *, defer_swap: bool = False) -> None:
        for _ in range(count):
            version = state.open_version("members", now=100.0, defer_swap=defer_swap)
            _report_all(state, "members", version.number)

    def test_rollback_and_swap(self) -> None:
        state = _state()
        self._online(state, 2)
        assert state.rollback("members").current_version == 1
        assert state.routing_table(0.0)["stores"]["members"]["current_version"] == 1
        assert state.swap("members", 2).current_version == 2

    def test_rollback_without_backup_is_a_conflict(self) -> None:
        state = _state()
        self._online(state, 1)
        with pytest.raises(ConflictError):
            state.rollback("members")

    def test_deferred_version_is_online_but_not_current(self) -> None:
        state = _state()
        self._online(state, 1)
        self._online(state, 1, defer_swap=True)
        store = state.store("members")
        assert store.versions[2].status == "ONLINE" and store.current_version == 1
        assert "2" in state.routing_table(0.0)["stores"]["members"]["versions"]
        assert state.swap("members", 2).current_version == 2

    def test_swap_to_a_version_that_is_not_online_is_refused(self) -> None:
        state = _state()
        self._online(state, 1)
        state.open_version("members", now=100.0)
        with pytest.raises(ConflictError):
            state.swap("members", 2)

    def test_kill_a_running_push_keeps_current(self) -> None:
        state = _state()
        self._online(state, 1)
        state.open_version("members", now=100.0)
        version = state.kill_version("members", 2)
        assert version.status == "KILLED"
        assert state.store("members").current_version == 1
        assert "members_v2" in state.topics_to_delete
        with pytest.raises(ConflictError):
            state.kill_version("members", 1)  # ONLINE versions are not killed

    def test_push_timeout_fails_the_version(self) -> None:
        state = _state()
        state.update_store("members", push_timeout_s=10)
        state.open_version("members", now=100.0)
        assert state.expire_pushes(now=105.0) == []
        assert state.expire_pushes(now=111.0) == [("members", 1)]
        assert state.version("members", 1).status == "ERROR"
        assert "timed out" in (state.version("members", 1).reason or "")

    def test_retention_is_settable_and_retired_versions_are_listed(self) -> None:
        state = _state()
        state.update_store("members", keep_versions=3)
        self._online(state, 4)
        statuses = [state.version("members", n).status for n in (1, 2, 3, 4)]
        assert statuses == ["RETIRED", "ONLINE", "ONLINE", "ONLINE"]
        assert state.routing_table(0.0)["stores"]["members"]["retired_versions"] == [1]
        state.update_store("members", keep_versions=1)
        assert [state.version("members", n).status for n in (2, 3, 4)] == ["RETIRED", "RETIRED", "ONLINE"]


class TestRebalancing:
    """Failover and rebalancing by consistent hashing (all times are explicit)."""

    def _cluster(self, servers: int, partitions: int = 16) -> ClusterState:
        state = ClusterState("embedded:///tmp/x", dead_after_s=5.0)
        for i in range(servers):
            state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
        state.create_store("members", "long", VALUE_SCHEMA, partitions=partitions, replication_factor=2)
        state.open_version("members", now=100.0)
        self._ready_all(state, now=100.0)
        return state

    def _ready_all(self, state: ClusterState, now: float) -> None:
        version = state.version("members", max(state.store("members").versions))
        by_server: dict[str, list[dict[str, Any]]] = {}
        for partition, replicas in version.replicas.items():
            for r in replicas:
                by_server.setdefault(r.server, []).append(
                    {"store": "members", "version": version.number, "partition": partition, "status": "READY"}
                )
        for server, reports in by_server.items():
            state.heartbeat(server, state.servers[server].url, reports, now=now)

    def _placement(self, state: ClusterState) -> set[tuple[int, str]]:
        version = state.version("members", 1)
        return {(p, r.server) for p, rs in version.replicas.items() for r in rs}

    def _beat(self, state: ClusterState, servers: list[str], now: float) -> None:
        for server in servers:
            state.heartbeat(server, state.servers[server].url, [], now=now)

    def test_a_dead_server_moves_only_its_share(self) -> None:
        state = self._cluster(4)
        before = self._placement(state)
        on_dead = {p for p, s in before if s == "s3"}
        self._beat(state, ["s0", "s1", "s2"], now=103.0)
        self._beat(state, ["s0", "s1", "s2"], now=106.0)
        state.rebalance(now=106.0)  # s3 silent for 6 s > 5 s
        after = self._placement(state)
        removed, added = before - after, after - before
        assert removed == {(p, "s3") for p in on_dead}
        assert {p for p, _ in added} == on_dead and len(added) == len(on_dead)
        assert 4 <= len(on_dead) <= 14  # about a quarter of 32 replicas, nothing else moves
        table = state.routing_table(106.0)["stores"]["members"]["versions"]["1"]["partitions"]
        assert all("http://127.0.0.1:7003" not in urls for urls in table.values())
        # The new replicas bootstrap, then the partition is back to R=2 ready copies.
        self._ready_all(state, now=106.5)
        table = state.routing_table(106.5)["stores"]["members"]["versions"]["1"]["partitions"]
        assert all(len(urls) == 2 for urls in table.values())

    def test_a_returning_server_gets_its_share_back_and_keeps_its_data(self) -> None:
        state = self._cluster(3)
        before = self._placement(state)
        self._beat(state, ["s0", "s1"], now=103.0)
        self._beat(state, ["s0", "s1"], now=106.0)
        state.rebalance(now=106.0)
        self._ready_all(state, now=106.0)
        assert all(s != "s2" for _, s in self._placement(state))
        # s2 comes back: its first heartbeat's assignment already includes its share.
        state.heartbeat("s2", "http://127.0.0.1:7002", [], now=107.0)
        assert {a["version"] for a in state.assignment_for("s2")} == {1}
        self._beat(state, ["s0", "s1"], now=107.0)
        self._ready_all(state, now=107.5)
        state.rebalance(now=107.5)
        assert self._placement(state) == before

    def test_a_joining_server_takes_a_share_only_once_ready(self) -> None:
        state = self._cluster(3)
        before = self._placement(state)
        state.heartbeat("s3", "http://127.0.0.1:7003", [], now=101.0)
        during = self._placement(state)
        joined = {p for p, s in during if s == "s3"}
        assert joined and before <= during  # nothing dropped before the new copies are ready
        self._beat(state, ["s0", "s1", "s2"], now=101.0)
        self._ready_all(state, now=101.5)
        state.rebalance(now=101.5)
        after = self._placement(state)
        assert {p for p, s in after if s == "s3"} == joined
        assert all(sum(1 for q, _ in after if q == p) == 2 for p in range(16))
        assert len(before - after) == len(joined)

    def test_most_servers_silent_at_once_moves_nothing(self) -> None:
        state = self._cluster(3)
        before = self._placement(state)
        self._beat(state, ["s0"], now=110.0)  # e.g. the controller itself stalled for 10 s
        state.rebalance(now=110.0)
        assert self._placement(state) == before

    def test_a_draining_server_gets_no_reads_and_no_new_versions(self) -> None:
        state = self._cluster(3)
        state.heartbeat("s2", "http://127.0.0.1:7002", [], now=101.0, draining=True)
        table = state.routing_table(101.0)["stores"]["members"]["versions"]["1"]["partitions"]
        assert all("http://127.0.0.1:7002" not in urls for urls in table.values())
        version = state.open_version("members", now=101.0)
        assert all(r.server != "s2" for rs in version.replicas.values() for r in rs)
        state.heartbeat("s2", "http://127.0.0.1:7002", [], now=102.0)  # restarted, serving again
        table = state.routing_table(102.0)["stores"]["members"]["versions"]["1"]["partitions"]
        assert any("http://127.0.0.1:7002" in urls for urls in table.values())
