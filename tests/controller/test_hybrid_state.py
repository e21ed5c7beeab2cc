"""Hybrid stores and value-schema evolution in the controller's metadata (I/O-free; every
time is given): settings and their bounds, the real-time topic's create and delete lists,
start offsets, which versions consume, replica reports, schema registration, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from controller.persistence import MetadataFile
from controller.state import UNCHANGED, ClusterState, Hybrid
from venice import protocol
from venice.errors import ConflictError, RequestError, SchemaError, StoreNotFoundError
from venice.protocol import ReplicaReport, ReplicaStatus

MEMBER = {
    "type": "record",
    "name": "Member",
    "fields": [{"name": "visits", "type": "long"}, {"name": "tags", "type": {"type": "array", "items": "string"}}],
}
MEMBER_V2 = {**MEMBER, "fields": [*MEMBER["fields"], {"name": "city", "type": ["null", "string"], "default": None}]}
# The update schema of MEMBER, as docs/hybrid.md writes it out (an independent literal).
MEMBER_UPDATE = {
    "type": "record", "name": "MemberUpdate", "namespace": "",
    "doc": "Partial update of Member (venice write compute)",
    "fields": [
        {"name": "visits", "default": {}, "type": [
            {"type": "record", "name": "NoOp", "namespace": "", "fields": []},
            "long",
            {"type": "record", "name": "visits_Increment", "namespace": "", "fields": [{"name": "by", "type": "long"}]}]},
        {"name": "tags", "default": {}, "type": [
            "NoOp",
            {"type": "array", "items": "string"},
            {"type": "record", "name": "tags_ListOps", "namespace": "", "fields": [
                {"name": "add", "type": {"type": "array", "items": "string"}, "default": []},
                {"name": "remove", "type": {"type": "array", "items": "string"}, "default": []}]}]}],
}  # fmt: skip
HOUR = Hybrid(rewind_seconds=3600, offset_lag=10)


def _state(servers: int = 2, **store: Any) -> ClusterState:
    state = ClusterState("embedded:///tmp/x")
    for i in range(servers):
        state.heartbeat(f"s{i}", f"http://127.0.0.1:{7000 + i}", [], now=100.0)
    state.create_store("members", "long", MEMBER, partitions=3, replication_factor=2, **store)
    return state


def _report(number: int, partition: int, status: str = "READY", **extra: Any) -> ReplicaReport:
    return ReplicaReport(store="members", version=number, partition=partition, status=ReplicaStatus(status), **extra)


def _ready(state: ClusterState, number: int, now: float = 101.0, **extra: Any) -> None:
    """The push job reported end-of-push and every replica of version ``number`` is READY."""
    version = state.version("members", number)
    if version.records is None:
        state.end_of_push("members", number, 0)
    for partition, replicas in version.replicas.items():
        for replica in replicas:
            state.heartbeat(replica.server, state.servers[replica.server].url, [_report(number, partition, **extra)], now=now)


def _assignments(state: ClusterState, server: str = "s0") -> dict[int, protocol.Assignment]:
    """The heartbeat answer's entries, read back with the servers' own parser."""
    return {a["version"]: protocol.Assignment.from_json(a) for a in state.assignment_for(server)}


class TestSettings:
    def test_a_hybrid_store_is_described_with_its_topic_and_asks_for_it(self) -> None:
        state = _state(hybrid=HOUR)
        info = state.describe_store(state.store("members"))
        assert info["hybrid"] == {"rewind_seconds": 3600, "offset_lag": 10, "real_time_topic": "members_rt"}
        assert info["write_compute"] is False and "update_schemas" not in info
        assert state.topics_to_create == {"members_rt"}
        assert "members_rt" not in state.live_topics()  # not created yet: nothing of that name is ours

    def test_a_batch_only_store_has_no_hybrid_anything(self) -> None:
        state = _state()
        info = state.describe_store(state.store("members"))
        assert info["hybrid"] is None and info["write_compute"] is False
        assert state.topics_to_create == set()
        state.open_version("members", now=100.0)
        assert "hybrid" not in state.assignment_for("s0")[0]
        assert _assignments(state)[1].hybrid is None

    def test_write_compute_describes_one_update_schema_per_value_schema(self) -> None:
        state = _state(hybrid=HOUR, write_compute=True)
        info = state.describe_store(state.store("members"))
        assert info["write_compute"] is True
        assert info["update_schemas"] == {"1": MEMBER_UPDATE}
        state.add_value_schema("members", MEMBER_V2)
        update_schemas = state.describe_store(state.store("members"))["update_schemas"]
        assert set(update_schemas) == {"1", "2"}
        assert [f["name"] for f in update_schemas["2"]["fields"]] == ["visits", "tags", "city"]
        fastavro.parse_schema(update_schemas["2"])  # a schema any producer's Avro library takes

    def test_write_compute_needs_hybrid_and_a_record(self) -> None:
        state = _state()
        with pytest.raises(RequestError, match="write compute needs a hybrid store"):
            state.create_store("wc", "long", MEMBER, 2, 1, write_compute=True)
        with pytest.raises(SchemaError, match="partial updates need a record value schema"):
            state.create_store("wc", "long", "string", 2, 1, hybrid=HOUR, write_compute=True)
        assert "wc" not in state.stores
        with pytest.raises(RequestError, match="write compute needs a hybrid store"):
            state.update_store("members", write_compute=True)
        assert state.store("members").write_compute is False
        state.update_store("members", hybrid=HOUR, write_compute=True)
        assert state.store("members").write_compute is True

    @pytest.mark.parametrize(
        ("rewind", "lag"),
        [(-1, 0), (30 * 86400 + 1, 0), (0, -1), (0, 10**9 + 1), (True, 0), (0, 1.5), ("60", 0), (0, None)],
    )
    def test_out_of_bounds_settings_change_nothing(self, rewind: Any, lag: Any) -> None:
        state = _state()
        generation = state.generation
        with pytest.raises(RequestError, match="hybrid"):
            state.update_store("members", hybrid=Hybrid(rewind, lag))
        with pytest.raises(RequestError, match="hybrid"):
            state.create_store("other", "long", MEMBER, 2, 1, hybrid=Hybrid(rewind, lag))
        assert state.store("members").hybrid is None and "other" not in state.stores
        assert state.topics_to_create == set() and state.generation == generation

    def test_settings_at_their_bounds_are_taken(self) -> None:
        state = _state(hybrid=Hybrid(30 * 86400, 10**9))
        assert state.describe_store(state.store("members"))["hybrid"]["offset_lag"] == 10**9
        state.update_store("members", hybrid=Hybrid(0, 0))
        assert state.describe_store(state.store("members"))["hybrid"]["rewind_seconds"] == 0

    def test_write_compute_must_be_a_boolean(self) -> None:
        with pytest.raises(RequestError, match="true or false"):
            _state().update_store("members", hybrid=HOUR, write_compute=1)  # type: ignore[arg-type]


class TestRealTimeTopic:
    def test_made_hybrid_then_batch_only(self) -> None:
        state = _state()
        state.update_store("members", hybrid=HOUR, write_compute=True)
        assert state.topics_to_create == {"members_rt"}
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        assert state.topics_to_create == set() and "members_rt" in state.live_topics()
        state.update_store("members", hybrid=None)
        store = state.store("members")
        assert store.hybrid is None and store.write_compute is False  # write compute needs hybrid
        assert "members_rt" in state.topics_to_delete and "members_rt" not in state.live_topics()

    def test_changing_settings_of_a_hybrid_store_keeps_its_topic(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.update_store("members", hybrid=Hybrid(60, 5))
        assert state.topics_to_create == set() and state.topics_to_delete == set()
        state.update_store("members", keep_versions=3, hybrid=UNCHANGED)
        assert state.store("members").hybrid == Hybrid(60, 5)

    def test_a_store_deleted_and_created_again_waits_for_the_old_topic_to_go(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 4, 1: 4, 2: 4})
        state.delete_store("members")
        assert "members_rt" in state.topics_to_delete and state.topics_to_create == set()
        state.create_store("members", "long", MEMBER, 3, 2, hybrid=HOUR)
        assert state.topics_to_create == {"members_rt"}
        assert state.topic_creation_waits("members_rt")
        # Until it is created anew, the name is not live: the janitor may delete the old one.
        assert "members_rt" not in state.live_topics()
        state.topics_to_delete.discard("members_rt")  # what the janitor does once it is deleted
        assert not state.topic_creation_waits("members_rt")

    def test_creation_waits_for_a_name_kafka_confuses_with_it(self) -> None:
        state = ClusterState("embedded:///tmp/x")
        state.create_store("a.b", "long", MEMBER, 2, 1, hybrid=HOUR)
        state.delete_store("a.b")
        state.create_store("a_b", "long", MEMBER, 2, 1, hybrid=HOUR)
        assert state.topics_to_delete == {"a.b_rt"} and state.topics_to_create == {"a_b_rt"}
        assert state.topic_creation_waits("a_b_rt")

    def test_creations_no_store_wants_are_dropped(self) -> None:
        state = _state(hybrid=HOUR)
        state.topics_to_create.add("gone_rt")
        state.drop_unwanted_creations()
        assert state.topics_to_create == {"members_rt"}
        assert state.partitions_of_rt("members_rt") == 3 and state.partitions_of_rt("gone_rt") is None

    def test_a_missing_topic_is_created_again(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.rt_topic_missing("members")
        assert state.topics_to_create == {"members_rt"}
        with pytest.raises(StoreNotFoundError):
            state.rt_topic_missing("nope")


class TestStartOffsets:
    def test_the_first_version_starts_at_the_beginning_and_later_ones_rewind(self) -> None:
        state = _state(hybrid=Hybrid(rewind_seconds=60, offset_lag=10))
        assert state.rt_offsets_plan("members", 100.0) is None  # the topic is not created yet
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        assert state.rt_offsets_plan("members", 100.0) == ("members_rt", None, 1)
        state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 2, 2: 0}, rt_epoch=1)
        _ready(state, 1)
        assert state.rt_offsets_plan("members", 100.5) == ("members_rt", 40_500, 1)  # (100.5 s - 60 s) in ms
        assert state.rt_offsets_plan("members", 50.0) == ("members_rt", 0, 1)  # never before the epoch
        version = state.open_version("members", now=101.0, rt_start_offsets={0: 7, 1: 8, 2: 9})
        assert version.rt_start_offsets == {0: 7, 1: 8, 2: 9}
        described = state.describe_version(state.store("members"), version)
        assert described["rt_start_offsets"] == {"0": 7, "1": 8, "2": 9}
        assert _assignments(state)[2].rt_start_offsets == {0: 7, 1: 8, 2: 9}

    def test_batch_only_stores_plan_nothing(self) -> None:
        state = _state()
        assert state.rt_offsets_plan("members", 100.0) is None
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 1, 1: 1, 2: 1})
        assert version.rt_start_offsets == {}

    @pytest.mark.parametrize("offsets", [{0: 0, 1: 0}, {0: 0, 1: 0, 2: 0, 3: 0}, {0: 0, 1: 0, 2: -1}])
    def test_offsets_that_do_not_fit_the_store_open_nothing(self, offsets: dict[int, int]) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        with pytest.raises((ConflictError, RequestError)):
            state.open_version("members", now=100.0, rt_start_offsets=offsets)
        assert state.store("members").versions == {} and state.store("members").next_version == 1

    def test_offsets_of_a_topic_replaced_meanwhile_are_not_taken(self) -> None:
        """Offsets asked of the old topic while the store was made batch-only and hybrid
        again (the new topic not created yet) would point into the wrong topic."""
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        assert state.rt_offsets_plan("members", 100.0) == ("members_rt", None, 1)
        state.update_store("members", hybrid=None)
        state.update_store("members", hybrid=HOUR)
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 9, 1: 9, 2: 9})
        assert version.rt_start_offsets == {}
        state.topics_to_delete.clear()  # the janitor deleted the old topic...
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})  # ...and made the new one
        assert version.rt_start_offsets == {0: 0, 1: 0, 2: 0}

    def test_versions_opened_before_the_topic_exists_get_its_beginning(self) -> None:
        state = _state(hybrid=HOUR)
        early = state.open_version("members", now=100.0)
        assert early.rt_start_offsets == {}
        assignment = _assignments(state)[1]
        assert assignment.hybrid is not None and assignment.rt_start_offsets == {} and assignment.consume_rt
        state.rt_topic_created("members_rt", {0: 3, 1: 0, 2: 5})
        assert early.rt_start_offsets == {0: 3, 1: 0, 2: 5}
        assert _assignments(state)[1].rt_start_offsets == {0: 3, 1: 0, 2: 5}

    def test_a_store_made_hybrid_gives_its_live_versions_the_new_topics_beginning(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        _ready(state, 1)
        state.open_version("members", now=100.0)
        _ready(state, 2)
        state.open_version("members", now=100.0)
        state.fail_version("members", 3, "test")
        state.update_store("members", hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        store = state.store("members")
        assert store.versions[1].rt_start_offsets == store.versions[2].rt_start_offsets == {0: 0, 1: 0, 2: 0}
        assert store.versions[3].rt_start_offsets == {}  # not live
        # Made batch-only again: the offsets were into a topic that is going away.
        state.update_store("members", hybrid=None)
        assert store.versions[2].rt_start_offsets == {}
        assert _assignments(state)[2].hybrid is None


class TestRealTimeEpochs:
    """Which incarnation of ``<store>_rt`` the start offsets (and the servers' checkpoints)
    are offsets of: a new one whenever the store is to get a new topic of that name."""

    def test_made_batch_only_and_hybrid_again_is_a_new_epoch_with_the_new_topics_offsets(self) -> None:
        state = _state(hybrid=HOUR)
        assert state.store("members").rt_epoch == 1
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 0, 2: 0}, rt_epoch=1)
        _ready(state, 1, rt_offset=12, rt_lag=0)
        assert (_assignments(state)[1].rt_epoch, _assignments(state)[1].rt_start_offsets) == (1, {0: 0, 1: 0, 2: 0})
        state.update_store("members", hybrid=None)
        assert state.store("members").rt_epoch == 1
        assert "rt_epoch" not in state.assignment_for("s0")[0]  # batch-only: no hybrid fields at all
        state.update_store("members", hybrid=HOUR)
        # The new epoch reaches servers before its topic can exist, with no offsets yet.
        assignment = _assignments(state)[1]
        assert (assignment.rt_epoch, assignment.rt_start_offsets, assignment.consume_rt) == (2, {}, True)
        replicas = state.describe_version(state.store("members"), state.version("members", 1))["replicas"]
        assert {r["rt_offset"] for rs in replicas.values() for r in rs} == {None}  # of the old topic: forgotten
        state.topics_to_delete.clear()  # the janitor deleted the old topic...
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})  # ...and made the new one
        assignment = _assignments(state)[1]
        assert (assignment.rt_epoch, assignment.rt_start_offsets) == (2, {0: 0, 1: 0, 2: 0})
        info = state.describe_store(state.store("members"))
        assert info["rt_epoch"] == 2 and info["versions"][0]["rt_epoch"] == 2

    def test_changing_hybrid_settings_keeps_the_epoch(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.update_store("members", hybrid=Hybrid(60, 5))
        assert state.store("members").rt_epoch == 1 and state.topics_to_create == set()

    def test_a_store_made_hybrid_later_starts_its_epochs_at_one(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        assert state.store("members").rt_epoch == 0 and _assignments(state)[1].rt_epoch == 0
        state.update_store("members", hybrid=HOUR)
        assert state.store("members").rt_epoch == 1 and _assignments(state)[1].rt_epoch == 1

    def test_a_topic_found_missing_is_a_new_epoch_and_live_versions_start_over(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.open_version("members", now=100.0, rt_start_offsets={0: 4, 1: 5, 2: 6}, rt_epoch=1)
        _ready(state, 1, rt_offset=30, rt_lag=0)
        state.rt_topic_missing("members")
        assert state.store("members").rt_epoch == 2 and state.version("members", 1).rt_start_offsets == {}
        state.rt_topic_missing("members")  # asked again before the janitor made it: still one new epoch
        assert state.store("members").rt_epoch == 2
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        assert _assignments(state)[1].rt_start_offsets == {0: 0, 1: 0, 2: 0} and _assignments(state)[1].rt_epoch == 2

    def test_offsets_of_an_older_epoch_are_not_taken_even_once_the_new_topic_exists(self) -> None:
        """The janitor may have made the new topic (and handed out its offsets) while a
        version's offsets were asked of the old one."""
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.update_store("members", hybrid=None)
        state.update_store("members", hybrid=HOUR)
        state.topics_to_delete.clear()
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 9, 1: 9, 2: 9}, rt_epoch=1)
        assert version.rt_start_offsets == {}
        version = state.fail_version("members", 1, "test")
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 1, 1: 2, 2: 3}, rt_epoch=2)
        assert version.rt_start_offsets == {0: 1, 1: 2, 2: 3}


class TestWhoConsumes:
    def test_current_started_and_deferred_versions_consume_backups_do_not(self) -> None:
        state = _state(servers=2, hybrid=HOUR, keep_versions=3)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 0, 2: 0})
        assert _assignments(state)[1].consume_rt  # STARTED
        _ready(state, 1)
        state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 0, 2: 0})
        _ready(state, 2)
        assert state.store("members").current_version == 2
        assignments = _assignments(state)
        assert (assignments[1].consume_rt, assignments[2].consume_rt) == (False, True)  # backup, current
        state.open_version("members", now=100.0, defer_swap=True, rt_start_offsets={0: 0, 1: 0, 2: 0})
        _ready(state, 3)
        assignments = _assignments(state)
        assert state.store("members").current_version == 2
        assert (assignments[2].consume_rt, assignments[3].consume_rt) == (True, True)  # current, deferred swap
        state.rollback("members")  # back to 1: 1 consumes again; 2 and 3 are newer than it
        assignments = _assignments(state)
        assert all(a.consume_rt for a in assignments.values())
        described = state.describe_store(state.store("members"))["versions"]
        assert [v["consume_rt"] for v in described] == [True, True, True]

    def test_a_first_version_online_with_deferred_swap_consumes(self) -> None:
        state = _state(hybrid=HOUR)
        state.open_version("members", now=100.0, defer_swap=True)
        _ready(state, 1)
        assert state.store("members").current_version is None
        assert _assignments(state)[1].consume_rt


class TestReports:
    def test_real_time_progress_and_poison_pills_are_kept_and_described(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 0, 2: 0})
        state.end_of_push("members", 1, 0)
        # Each replica of a partition skips the same records; partition 2's replicas report 4 and 3 (one lags).
        skipped = {0: (1, 1), 1: (0, 0), 2: (4, 3)}
        for partition, replicas in version.replicas.items():
            for index, replica in enumerate(replicas):
                report = _report(1, partition, rt_offset=50 + index, rt_lag=index * 7, skipped=skipped[partition][index])
                state.heartbeat(replica.server, state.servers[replica.server].url, [report], now=101.0)
        described = state.describe_version(state.store("members"), version)
        assert described["poison_pills"] == 1 + 0 + 4
        assert described["rt_lag"] == 7
        for partition, replicas in described["replicas"].items():
            assert [(r["rt_offset"], r["rt_lag"], r["skipped"]) for r in replicas] == [
                (50 + i, i * 7, skipped[int(partition)][i]) for i in range(2)
            ]
        summary = state.describe_store(state.store("members"))["versions"][0]
        assert (summary["poison_pills"], summary["rt_lag"]) == (5, 7) and "replicas" not in summary

    def test_a_version_with_no_reports_has_no_lag(self) -> None:
        state = _state(hybrid=HOUR)
        version = state.open_version("members", now=100.0)
        described = state.describe_version(state.store("members"), version)
        assert (described["rt_lag"], described["poison_pills"], described["rt_lost"]) == (None, 0, 0)

    def test_records_lost_to_retention_are_kept_and_described(self) -> None:
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        version = state.open_version("members", now=100.0, rt_start_offsets={0: 0, 1: 0, 2: 0})
        state.end_of_push("members", 1, 0)
        lost = {0: (40, 40), 1: (0, 0), 2: (7, 9)}  # partition 2's replicas found the log at two moments
        for partition, replicas in version.replicas.items():
            for index, replica in enumerate(replicas):
                report = _report(1, partition, rt_offset=50, rt_lag=0, rt_lost=lost[partition][index])
                state.heartbeat(replica.server, state.servers[replica.server].url, [report], now=101.0)
        described = state.describe_version(state.store("members"), version)
        assert described["rt_lost"] == 40 + 0 + 9
        assert {p: tuple(r["rt_lost"] for r in rs) for p, rs in described["replicas"].items()} == {
            "0": (40, 40), "1": (0, 0), "2": (7, 9)
        }
        assert state.describe_store(state.store("members"))["versions"][0]["rt_lost"] == 49


class TestRoutingTable:
    def test_entries_carry_hybrid_and_write_compute(self) -> None:
        state = _state(hybrid=HOUR, write_compute=True)
        state.create_store("plain", "long", MEMBER, 2, 1)
        table = protocol.RoutingTable.from_json(orjson.loads(orjson.dumps(state.routing_table(100.0))))
        members, plain = table.stores["members"], table.stores["plain"]
        assert members.hybrid == protocol.HybridConfig(3600, 10, "members_rt") and members.write_compute
        assert plain.hybrid is None and not plain.write_compute

    def test_a_new_value_schema_reaches_the_routing_table_and_assignments(self) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        generation = state.generation
        state.add_value_schema("members", MEMBER_V2)
        assert state.generation > generation
        assert state.routing_table(100.0)["stores"]["members"]["value_schemas"] == {"1": MEMBER, "2": MEMBER_V2}
        assert _assignments(state)[1].value_schemas == {1: MEMBER, 2: MEMBER_V2}


class TestValueSchemas:
    def test_a_compatible_schema_gets_the_next_id_and_an_identical_one_its_own(self) -> None:
        state = _state()
        assert state.add_value_schema("members", MEMBER_V2) == (2, True)
        assert state.add_value_schema("members", MEMBER_V2) == (2, False)
        reordered = {"fields": MEMBER["fields"], "name": "Member", "type": "record"}
        assert state.add_value_schema("members", reordered) == (1, False)
        assert state.add_value_schema("members", orjson.dumps(MEMBER_V2).decode()) == (2, False)  # as JSON text
        assert sorted(state.store("members").value_schemas) == [1, 2]

    def test_primitive_names_and_their_object_form_are_the_same_schema(self) -> None:
        state = ClusterState("embedded:///tmp/x")
        state.create_store("s", "long", "string", 2, 1)
        assert state.add_value_schema("s", {"type": "string"}) == (1, False)
        assert state.add_value_schema("s", " string ") == (1, False)

    @pytest.mark.parametrize(
        ("schema", "field", "reader", "writer"),
        [
            # A new field without a default: the new schema cannot read schema 1's data.
            ({**MEMBER, "fields": [*MEMBER["fields"], {"name": "age", "type": "int"}]}, "age", "new", 1),
            # A type change with no promotion.
            ({**MEMBER, "fields": [{"name": "visits", "type": "string"}, MEMBER["fields"][1]]}, "visits", "new", 1),
            # Widening long -> double: the new schema reads old data, but old readers cannot read a double.
            ({**MEMBER, "fields": [{"name": "visits", "type": "double"}, MEMBER["fields"][1]]}, "visits", 1, "new"),
            # Dropping a field without a default: old readers miss it.
            ({**MEMBER, "fields": [MEMBER["fields"][1]]}, "visits", 1, "new"),
        ],
    )
    def test_incompatible_schemas_are_refused_naming_the_field(self, schema: Any, field: str, reader: Any, writer: Any) -> None:
        state = _state()
        generation = state.generation
        with pytest.raises(SchemaError) as caught:
            state.add_value_schema("members", schema)
        assert f"field {field}" in caught.value.message
        assert caught.value.details == {"field": field, "reader": reader, "writer": writer}
        assert list(state.store("members").value_schemas) == [1] and state.generation == generation

    def test_every_earlier_schema_is_checked(self) -> None:
        state = _state()
        state.add_value_schema("members", MEMBER_V2)
        # Compatible with schema 2 (both have city), not with schema 1: without a default, the
        # new schema cannot read schema 1's data, which has no city.
        v3 = {**MEMBER, "fields": [*MEMBER["fields"], {"name": "city", "type": ["null", "string"]}]}
        with pytest.raises(SchemaError) as caught:
            state.add_value_schema("members", v3)
        assert caught.value.details["writer"] == 1 and caught.value.details["field"] == "city"

    def test_invalid_and_oversized_schemas_are_refused(self) -> None:
        state = _state()
        with pytest.raises(SchemaError, match="value schema"):
            state.add_value_schema("members", {"type": "record", "name": "Member"})
        with pytest.raises(SchemaError, match="at most 262144 bytes"):
            state.add_value_schema("members", {**MEMBER_V2, "doc": "x" * (256 << 10)})
        with pytest.raises(SchemaError):
            state.add_value_schema("members", None)
        with pytest.raises(StoreNotFoundError):
            state.add_value_schema("nope", MEMBER_V2)
        assert list(state.store("members").value_schemas) == [1]

    def test_a_store_holds_at_most_max_value_schemas(self) -> None:
        state = ClusterState("embedded:///tmp/x")
        state.create_store("s", "long", {"type": "record", "name": "R", "fields": []}, 2, 1)
        store = state.store("s")
        for i in range(2, 1001):
            store.value_schemas[i] = {"type": "record", "name": "R", "fields": [], "doc": str(i)}
        with pytest.raises(RequestError, match="1000 value schemas"):
            state.add_value_schema("s", {"type": "record", "name": "R", "fields": [], "doc": "one more"})


class TestPersistence:
    def test_hybrid_metadata_survives_a_restart(self, tmp_path: Path) -> None:
        state = _state(hybrid=HOUR, write_compute=True)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.open_version("members", now=100.0, rt_start_offsets={0: 1, 1: 2, 2: 3})
        _ready(state, 1, rt_offset=9, rt_lag=0, skipped=2, rt_lost=5)
        state.update_store("members", hybrid=None)
        state.update_store("members", hybrid=HOUR, write_compute=True)  # epoch 2
        state.add_value_schema("members", MEMBER_V2)
        state.create_store("other", "long", MEMBER, 2, 1, hybrid=HOUR)  # its topic still to create
        state.delete_store("other")
        state.create_store("other", "long", MEMBER, 2, 1, hybrid=HOUR)
        metadata = MetadataFile(tmp_path)
        metadata.save(state)
        loaded = metadata.load("embedded:///tmp/x", 15.0)
        for name in ("members", "other"):
            assert loaded.describe_store(loaded.store(name)) == state.describe_store(state.store(name))
        assert loaded.assignment_for("s0") == state.assignment_for("s0")
        assert loaded.store("members").hybrid == HOUR and loaded.store("members").rt_epoch == 2
        assert loaded.version("members", 1).rt_start_offsets == {}  # of epoch 1's topic: forgotten
        assert loaded.describe_version(loaded.store("members"), loaded.version("members", 1))["rt_lost"] == 3 * 5
        assert loaded.topics_to_create == {"other_rt", "members_rt"}
        assert loaded.topics_to_delete == {"other_rt", "members_rt"}

    def test_a_format_3_file_loads_with_epoch_0_as_its_servers_checkpoints_have(self, tmp_path: Path) -> None:
        """Servers' checkpoints written before epochs read as epoch 0: so must the store, or
        every replica would start over and apply its real-time writes twice."""
        state = _state(hybrid=HOUR)
        state.rt_topic_created("members_rt", {0: 0, 1: 0, 2: 0})
        state.open_version("members", now=100.0, rt_start_offsets={0: 1, 1: 2, 2: 3}, rt_epoch=1)
        saved = state.to_dict()
        saved["format"] = 3
        for store in saved["stores"]:
            del store["rt_epoch"]
            for version in store["versions"].values():
                for replicas in version["replicas"].values():
                    for replica in replicas:
                        del replica["rt_lost"]
        (tmp_path / "controller-state.json").write_bytes(orjson.dumps(saved, option=orjson.OPT_NON_STR_KEYS))
        loaded = MetadataFile(tmp_path).load("embedded:///tmp/x", 15.0)
        assignment = _assignments(loaded)[1]
        assert (assignment.rt_epoch, assignment.rt_start_offsets) == (0, {0: 1, 1: 2, 2: 3})

    def test_a_format_2_file_loads_as_batch_only(self, tmp_path: Path) -> None:
        state = _state()
        state.open_version("members", now=100.0)
        saved = state.to_dict()
        saved["format"] = 2
        for store in saved["stores"]:
            del store["hybrid"], store["write_compute"]
            for version in store["versions"].values():
                del version["rt_start_offsets"]
                for replicas in version["replicas"].values():
                    for replica in replicas:
                        del replica["rt_offset"], replica["rt_lag"], replica["skipped"]
        del saved["topics_to_create"]
        (tmp_path / "controller-state.json").write_bytes(orjson.dumps(saved, option=orjson.OPT_NON_STR_KEYS))
        loaded = MetadataFile(tmp_path).load("embedded:///tmp/x", 15.0)
        info = loaded.describe_store(loaded.store("members"))
        assert info["hybrid"] is None and info["write_compute"] is False
        assert loaded.version("members", 1).rt_start_offsets == {} and loaded.topics_to_create == set()
