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
    PushInProgressError,
    RequestError,
    SchemaError,
    StoreExistsError,
    StoreNotFoundError,
)
from venice.protocol import ReplicaReport, ReplicaStatus
from venice.structs import parse_version_topic, version_topic

VALUE_SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


def _state(servers: int = 2) -> ClusterState:
    state = ClusterState("embedded:///tmp/x")
    for i in range(servers):
        state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
    state.create_store("members", "long", VALUE_SCHEMA, partitions=4, replication_factor=2)
    return state


def _report(store: str, number: int, partition: int, status: str = "READY", **extra: Any) -> ReplicaReport:
    return ReplicaReport(store=store, version=number, partition=partition, status=ReplicaStatus(status), **extra)


def _report_all(state: ClusterState, store: str, number: int, status: str = "READY") -> None:
    """Every replica reports ``status``; for READY the push job reported end-of-push first."""
    version = state.version(store, number)
    if status == "READY" and version.records is None:
        state.end_of_push(store, number, 0)
    for partition, replicas in version.replicas.items():
        for replica in replicas:
            report = _report(store, number, partition, status)
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
        state.end_of_push("members", 1, 0)
        state.heartbeat(first.server, "http://127.0.0.1:7000" if first.server == "s0" else "http://127.0.0.1:7001",
                        [_report("members", 1, 0)], now=101.0)
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
        if version.records is None:
            state.end_of_push("members", version.number, 0)
        by_server: dict[str, list[ReplicaReport]] = {}
        for partition, replicas in version.replicas.items():
            for r in replicas:
                by_server.setdefault(r.server, []).append(_report("members", version.number, partition))
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


class TestGraveyardAndIncarnations:
    """A store-version is unique for ever (issue 8, item 1)."""

    def test_a_recreated_store_never_reuses_a_version_number_or_topic(self, tmp_path: Path) -> None:
        state = _state()
        for _ in range(2):
            state.open_version("members", now=100.0)
            _report_all(state, "members", state.store("members").next_version - 1)
        first = state.store("members").incarnation
        state.delete_store("members")
        assert {"members_v1", "members_v2"} <= state.topics_to_delete
        assert state.graveyard == {"members": 3}
        # The graveyard survives a restart.
        metadata = MetadataFile(tmp_path)
        metadata.save(state)
        state = metadata.load("embedded:///tmp/x", 15.0)
        assert state.graveyard == {"members": 3}

        state.create_store("members", "long", VALUE_SCHEMA, partitions=4, replication_factor=2)
        version = state.open_version("members", now=100.0)
        assert (version.number, version.topic) == (3, "members_v3")
        store = state.store("members")
        assert store.incarnation and store.incarnation != first
        assert all(a["incarnation"] == store.incarnation for a in state.assignment_for("s0"))
        assert state.describe_store(store)["incarnation"] == store.incarnation

    def test_names_kafka_confuses_share_the_count(self) -> None:
        state = _state()
        state.create_store("a.b", "long", VALUE_SCHEMA, 1, 1)
        for _ in range(3):
            state.open_version("a.b", now=100.0)
            _report_all(state, "a.b", state.store("a.b").next_version - 1)
        with pytest.raises(ConflictError, match="collides"):
            state.create_store("a_b", "long", VALUE_SCHEMA, 1, 1)
        state.delete_store("a.b")
        state.create_store("a_b", "long", VALUE_SCHEMA, 1, 1)
        assert state.open_version("a_b", now=100.0).topic == "a_b_v4"  # a.b_v1..3 may still be being deleted

    def test_a_report_of_another_incarnation_is_ignored(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        state.end_of_push("members", 1, 0)
        version = state.version("members", 1)
        for partition, replicas in version.replicas.items():
            for replica in replicas:
                stale = _report("members", 1, partition, incarnation="0123456789ab")
                state.heartbeat(replica.server, state.servers[replica.server].url, [stale], now=101.0)
        assert version.status == "STARTED"
        assert all(r.status == "STARTED" for rs in version.replicas.values() for r in rs)

    def test_opening_a_version_takes_its_topic_off_the_deletion_list(self) -> None:
        state = _state()
        state.topics_to_delete.add("members_v1")  # as if metadata had been lost and rebuilt
        state.open_version("members", now=100.0)
        assert "members_v1" not in state.topics_to_delete
        assert state.live_topics() == {"members_v1"}


class TestEndOfPush:
    """A version goes ONLINE only once the push job reported end-of-push (item 2)."""

    def test_ready_replicas_without_end_of_push_do_not_go_online(self) -> None:
        state = _state()
        version = state.open_version("members", now=100.0)
        for partition, replicas in version.replicas.items():
            for replica in replicas:
                state.heartbeat(replica.server, state.servers[replica.server].url, [_report("members", 1, partition)], now=101.0)
        assert version.status == "STARTED" and state.store("members").current_version is None
        assert state.end_of_push("members", 1, 42).status == "ONLINE"
        assert state.store("members").current_version == 1 and version.records == 42

    def test_end_of_push_is_idempotent_and_refuses_contradictions(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        assert state.end_of_push("members", 1, 10).status == "STARTED"
        generation = state.generation
        assert state.end_of_push("members", 1, 10).records == 10  # the same again: the same answer
        assert state.generation == generation
        with pytest.raises(ConflictError, match="already reported end-of-push with 10 records, not 11"):
            state.end_of_push("members", 1, 11)
        _report_all(state, "members", 1)
        assert state.end_of_push("members", 1, 10).status == "ONLINE"  # retried after it went live
        with pytest.raises(ConflictError):
            state.end_of_push("members", 1, 9)

    @pytest.mark.parametrize("status", ["ERROR", "KILLED"])
    def test_end_of_push_of_a_failed_version_names_its_status(self, status: str) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        if status == "KILLED":
            state.kill_version("members", 1)
        else:
            state.fail_version("members", 1, "disk full")
        with pytest.raises(ConflictError, match=f"version 1 of 'members' is {status}"):
            state.end_of_push("members", 1, 5)
        assert state.version("members", 1).status == status

    def test_a_push_timeout_still_fails_a_version_whose_end_never_came(self) -> None:
        state = _state()
        state.update_store("members", push_timeout_s=10)
        state.open_version("members", now=100.0)
        version = state.version("members", 1)
        for partition, replicas in version.replicas.items():
            for replica in replicas:
                state.heartbeat(replica.server, state.servers[replica.server].url, [_report("members", 1, partition)], now=101.0)
        assert state.expire_pushes(now=111.0) == [("members", 1)]
        assert version.status == "ERROR"


class TestOnePushAtATime:
    def test_a_second_version_while_one_is_started_is_refused(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        with pytest.raises(PushInProgressError) as refused:
            state.open_version("members", now=100.0)
        assert refused.value.http_status == 409 and refused.value.details == {"version": 1}
        assert "venice version kill --store members --version 1" in refused.value.message
        assert list(state.store("members").versions) == [1]
        state.kill_version("members", 1)
        assert state.open_version("members", now=100.0).number == 2


class TestValidation:
    """Every field bounded before anything changes (item 4) and names (item 5)."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("partitions", 0), ("partitions", 1025), ("partitions", 10**30), ("partitions", True), ("partitions", 2.0),
            ("replication_factor", 0), ("replication_factor", 33), ("replication_factor", 10**30),
            ("keep_versions", 0), ("keep_versions", 101), ("keep_versions", 10**30),
            ("push_timeout_s", 0.5), ("push_timeout_s", 8 * 86400), ("push_timeout_s", float("inf")),
            ("push_timeout_s", float("nan")), ("push_timeout_s", 10**30),
            ("max_value_bytes", 0), ("max_value_bytes", (4 << 20) + 1), ("max_value_bytes", 10**30),
        ],
    )
    def test_out_of_bounds_settings_change_nothing(self, field: str, value: Any) -> None:
        state = _state()
        before, generation = state.to_dict(), state.generation
        state.dirty = False
        args: dict[str, Any] = {"partitions": 4, "replication_factor": 1, field: value}
        with pytest.raises(RequestError, match=field):
            state.create_store("other", "long", VALUE_SCHEMA, **args)
        if field not in ("partitions", "replication_factor"):
            with pytest.raises(RequestError, match=field):
                state.update_store("members", **{field: value})
        assert state.to_dict() == before and state.generation == generation and not state.dirty

    def test_settings_at_their_bounds_are_taken(self) -> None:
        state = _state()
        store = state.create_store(
            "other", "long", VALUE_SCHEMA, 1024, 32, keep_versions=100, push_timeout_s=7 * 86400, max_value_bytes=4 << 20
        )
        assert (store.partitions, store.replication_factor, store.keep_versions) == (1024, 32, 100)
        assert (store.push_timeout_s, store.max_value_bytes) == (7 * 86400, 4 << 20)
        assert state.update_store("other", push_timeout_s=1, max_value_bytes=1).max_value_bytes == 1

    @pytest.mark.parametrize("name", ["", ".", "..", "日本", "a/b", "a b", "x" * 201, "x" * 10_000, "a\x00", "ａ"])
    def test_invalid_store_names(self, name: str) -> None:
        with pytest.raises(RequestError, match="invalid store name"):
            _state().create_store(name, "long", VALUE_SCHEMA, 1, 1)

    @pytest.mark.parametrize("name", ["a", "A-b.c_d", "x" * 200, "...", "members_v2", "a_v", "_v1_v2"])
    def test_valid_store_names_map_to_topics_and_back(self, name: str) -> None:
        state = _state()
        state.create_store(name, "long", VALUE_SCHEMA, 1, 1)
        for number in (1, 2, 10):
            assert parse_version_topic(version_topic(name, number)) == (name, number)

    def test_topic_names_stay_unambiguous_with_v_in_store_names(self) -> None:
        # Every (store, version) pair gives a different topic, so `_v` need not be banned.
        names = ["a", "a_v1", "a_v", "a_v1_v", "_v", "a_v12"]
        topics = {version_topic(n, v): (n, v) for n in names for v in (1, 2, 12, 112)}
        assert len(topics) == len(names) * 4
        assert all(parse_version_topic(t) == pair for t, pair in topics.items())

    def test_invalid_schemas_are_refused(self) -> None:
        state = _state()
        for key, value in [
            ("long", {"type": "enum", "name": "E", "symbols": []}),
            ("long", ["null", "null"]),
            ("long", {"type": "fixed", "name": "F", "size": -1}),
            ("long", {"type": "fixed", "name": "F", "size": 10**12}),
            (["null", "long"], VALUE_SCHEMA),
            ("double", VALUE_SCHEMA),
            ({"type": "map", "values": "long"}, VALUE_SCHEMA),
        ]:
            with pytest.raises(SchemaError):
                state.create_store("other", key, value, 1, 1)
        assert "other" not in state.stores


class TestMembership:
    """Forgetting long-dead servers and moving failed copies (item 6), on an explicit clock."""

    def test_long_dead_servers_are_forgotten_so_failover_is_not_blocked(self) -> None:
        state = ClusterState("embedded:///tmp/x", dead_after_s=5.0, forget_after_s=60.0)
        for i in range(5):
            state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
        state.create_store("members", "long", VALUE_SCHEMA, partitions=8, replication_factor=2)
        state.open_version("members", now=100.0)
        _report_all(state, "members", 1)
        # s2, s3, s4 leave for good; s0 and s1 keep beating.
        for now in (110.0, 150.0):
            state.heartbeat("s0", "http://127.0.0.1:7000", [], now=now)
            state.heartbeat("s1", "http://127.0.0.1:7001", [], now=now)
            state.rebalance(now)
        placement = {r.server for rs in state.version("members", 1).replicas.values() for r in rs}
        assert placement - {"s0", "s1"}, "2 of 5 live: the guard holds everything in place"
        for now in (161.0, 161.5):
            state.heartbeat("s0", "http://127.0.0.1:7000", [], now=now)
            state.heartbeat("s1", "http://127.0.0.1:7001", [], now=now)
            state.rebalance(now)
        assert sorted(state.servers) == ["s0", "s1"]
        placement = {r.server for rs in state.version("members", 1).replicas.values() for r in rs}
        assert placement == {"s0", "s1"}
        assert all(len(rs) == 2 for rs in state.version("members", 1).replicas.values())

    def test_a_forgotten_server_that_returns_is_a_member_again(self) -> None:
        state = ClusterState("embedded:///tmp/x", dead_after_s=5.0, forget_after_s=60.0)
        state.heartbeat("s0", "http://127.0.0.1:7000", [], now=100.0)
        state.heartbeat("s1", "http://127.0.0.1:7001", [], now=100.0)
        state.heartbeat("s0", "http://127.0.0.1:7000", [], now=170.0)
        state.rebalance(170.0)
        assert sorted(state.servers) == ["s0"]
        state.heartbeat("s1", "http://127.0.0.1:7001", [], now=171.0)
        assert state.live_servers(171.0) == ["s0", "s1"]

    def test_forget_after_is_at_least_dead_after(self) -> None:
        with pytest.raises(ValueError, match="forget_after_s"):
            ClusterState("embedded:///tmp/x", dead_after_s=30.0, forget_after_s=10.0)

    def test_a_failed_copy_of_an_online_version_moves_to_another_server(self) -> None:
        state = ClusterState("embedded:///tmp/x")
        for i in range(4):
            state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
        state.create_store("members", "long", VALUE_SCHEMA, partitions=1, replication_factor=2)
        state.open_version("members", now=100.0)
        _report_all(state, "members", 1)
        version = state.version("members", 1)
        first, second = (r.server for r in version.replicas[0])
        # One copy fails (say its disk filled up): it is dropped and another server gets one.
        state.heartbeat(first, state.servers[first].url, [_report("members", 1, 0, "ERROR", reason="map full")], now=101.0)
        servers = [r.server for r in version.replicas[0]]
        assert first not in servers and second in servers and len(servers) == 2
        third = next(s for s in servers if s != second)
        assert version.status == "ONLINE" and version.failed == {0: [first]}
        assert state.assignment_for(first) == []
        # The replacement fails too: the last server is used, never one where it failed.
        state.heartbeat(third, state.servers[third].url, [_report("members", 1, 0, "ERROR", reason="map full")], now=101.0)
        servers = [r.server for r in version.replicas[0]]
        assert first not in servers and third not in servers and len(servers) == 2
        assert version.failed == {0: [first, third]}
        # And with every other server failed, the partition keeps its one good copy.
        last = next(s for s in servers if s != second)
        state.heartbeat(last, state.servers[last].url, [_report("members", 1, 0, "ERROR", reason="map full")], now=101.0)
        assert [r.server for r in version.replicas[0]] == [second]
        table = state.routing_table(101.0)["stores"]["members"]["versions"]["1"]["partitions"]
        assert table == {"0": [state.servers[second].url]}

    def test_an_error_while_started_still_fails_the_push(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        replica = state.version("members", 1).replicas[0][0]
        state.heartbeat(replica.server, state.servers[replica.server].url, [_report("members", 1, 0, "ERROR")], now=101.0)
        assert state.version("members", 1).status == "ERROR"


class TestRestore:
    def test_a_state_restored_from_the_last_save_keeps_liveness_and_moves_generation_on(self) -> None:
        state = _state()
        saved = state.to_dict()
        state.create_store("unsaved", "long", VALUE_SCHEMA, 1, 1)
        restored = state.restored(saved, now=500.0)
        assert "unsaved" not in restored.stores and "members" in restored.stores
        assert restored.generation > state.generation and not restored.dirty
        assert restored.live_servers(101.0) == ["s0", "s1"]  # last heartbeats kept (100.0), not reset to 500
