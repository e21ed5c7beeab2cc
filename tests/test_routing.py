"""The router's I/O-free logic: routing table parsing and lookups, replica order, batch frames."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any

import pytest

from venice.errors import (
    InternalError,
    NoCurrentVersionError,
    NoReplicaError,
    StoreNotFoundError,
    UnavailableError,
    VersionNotFoundError,
)
from venice.partitioner import partition_for
from venice.protocol import decode_batch_response, encode_batch_request
from venice.routing import RoutingTable, plan_batch, rotate

A, B, C = "http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"
MEMBER = {"type": "record", "name": "Member", "fields": [{"name": "name", "type": "string"}]}
MEMBER_V2 = {
    "type": "record",
    "name": "Member",
    "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0}],
}


def routing_payload(generation: int = 7, value_schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "generation": generation,
        "stores": {
            "members": {
                "key_schema": "long",
                "value_schemas": value_schemas or {"1": MEMBER, "2": MEMBER_V2},
                "partitions": 4,
                "current_version": 3,
                "versions": {
                    "2": {"partitions": {"0": [A], "1": [A], "2": [A], "3": [A]}},
                    "3": {"partitions": {"0": [A, B + "/"], "1": [B, C], "2": [C, A], "3": []}},
                },
            },
            "fresh": {"key_schema": "string", "value_schemas": {"1": "string"}, "partitions": 2, "current_version": None},
        },
    }


@pytest.fixture
def table() -> RoutingTable:
    return RoutingTable.from_json(routing_payload())


class TestFromJson:
    def test_reads_generation_partitions_and_versions(self, table: RoutingTable) -> None:
        route = table.store("members")
        assert table.generation == 7
        assert route.partition_count == 4
        assert route.current_version == 3
        assert set(route.versions) == {2, 3}

    def test_value_codecs_are_keyed_by_integer_schema_id(self, table: RoutingTable) -> None:
        route = table.store("members")
        assert set(route.value_codecs) == {1, 2}
        assert route.value_codec(2).field_names == frozenset({"name", "age"})

    def test_replica_urls_lose_their_trailing_slash(self, table: RoutingTable) -> None:
        assert table.store("members").replicas(3, 0) == (A, B)

    def test_store_without_versions_has_no_current_version(self, table: RoutingTable) -> None:
        route = table.store("fresh")
        assert route.current_version is None
        assert route.versions == {}

    def test_malformed_payload_is_an_internal_error(self) -> None:
        with pytest.raises(InternalError):
            RoutingTable.from_json({"stores": {}})
        with pytest.raises(InternalError):
            RoutingTable.from_json({"generation": 1, "stores": {"x": {"key_schema": "long"}}})

    def test_unparseable_schema_is_an_internal_error(self) -> None:
        payload = routing_payload(value_schemas={"1": {"type": "no-such-type"}})
        with pytest.raises(InternalError):
            RoutingTable.from_json(payload)

    def test_refresh_reuses_codecs_of_unchanged_schemas(self, table: RoutingTable) -> None:
        again = RoutingTable.from_json(routing_payload(generation=8), previous=table)
        assert again.store("members").key_codec is table.store("members").key_codec
        assert again.store("members").value_codecs is table.store("members").value_codecs

    def test_refresh_rebuilds_codecs_when_schemas_change(self, table: RoutingTable) -> None:
        changed = RoutingTable.from_json(routing_payload(generation=8, value_schemas={"1": MEMBER}), previous=table)
        assert set(changed.store("members").value_codecs) == {1}
        assert changed.store("members").key_codec is not table.store("members").key_codec


class TestLookups:
    def test_unknown_store(self, table: RoutingTable) -> None:
        with pytest.raises(StoreNotFoundError):
            table.store("nope")

    def test_current_version_is_the_default(self, table: RoutingTable) -> None:
        assert table.store("members").resolve_version(None) == 3

    def test_explicit_version_must_be_in_the_table(self, table: RoutingTable) -> None:
        route = table.store("members")
        assert route.resolve_version(2) == 2
        with pytest.raises(VersionNotFoundError):
            route.resolve_version(1)

    def test_no_current_version(self, table: RoutingTable) -> None:
        with pytest.raises(NoCurrentVersionError):
            table.store("fresh").resolve_version(None)

    def test_partition_without_ready_replica(self, table: RoutingTable) -> None:
        with pytest.raises(NoReplicaError):
            table.store("members").replicas(3, 3)
        with pytest.raises(NoReplicaError):
            table.store("members").replicas(9, 0)

    def test_unknown_value_schema_is_retriable(self, table: RoutingTable) -> None:
        """A schema newer than the table means the table is stale, not that the read is wrong."""
        with pytest.raises(UnavailableError) as caught:
            table.store("members").value_codec(3)
        assert caught.value.retriable

    def test_partition_of_uses_the_shared_partitioner(self, table: RoutingTable) -> None:
        route = table.store("members")
        for key in (0, 1, 42, -7, 2**40):
            key_bytes = route.key_codec.encode(key)
            assert route.partition_of(key_bytes) == partition_for(key_bytes, 4)


class TestRotate:
    def test_rotation_wraps_around(self) -> None:
        assert rotate((A, B, C), 0) == (A, B, C)
        assert rotate((A, B, C), 1) == (B, C, A)
        assert rotate((A, B, C), 5) == (C, A, B)

    def test_single_and_empty(self) -> None:
        assert rotate((A,), 9) == (A,)
        assert rotate((), 3) == ()

    def test_consecutive_counters_spread_the_first_choice_evenly(self) -> None:
        firsts = Counter(rotate((A, B, C), n)[0] for n in range(300))
        assert firsts == {A: 100, B: 100, C: 100}

    def test_every_rotation_keeps_all_replicas_for_failover(self) -> None:
        for n in range(6):
            assert sorted(rotate((A, B, C), n)) == [A, B, C]


class TestPlanBatch:
    def test_partitions_with_the_same_replicas_start_on_different_servers(self) -> None:
        payload = routing_payload()
        payload["stores"]["members"]["versions"]["3"]["partitions"] = {str(p): [A, B] for p in range(4)}
        route = RoutingTable.from_json(payload).store("members")
        plan = plan_batch(route, 3, [0, 1, 2, 3], offset=0)
        assert plan == {(A, B): [0, 2], (B, A): [1, 3]}

    def test_every_partition_is_planned_once(self, table: RoutingTable) -> None:
        plan = plan_batch(table.store("members"), 3, [0, 1, 2], offset=5)
        assert sorted(p for parts in plan.values() for p in parts) == [0, 1, 2]

    def test_partition_without_replicas_fails_the_plan(self, table: RoutingTable) -> None:
        with pytest.raises(NoReplicaError):
            plan_batch(table.store("members"), 3, [0, 3], offset=0)


class TestBatchFrames:
    def test_request_frames_are_big_endian_partition_length_key(self) -> None:
        body = encode_batch_request([(1, b"ab"), (258, b"")])
        assert body == b"\x00\x00\x00\x01\x00\x00\x00\x02ab" + b"\x00\x00\x01\x02\x00\x00\x00\x00"

    def test_answer_frames_decode_hits_and_misses_in_order(self) -> None:
        body = struct.pack(">iI", 2, 3) + b"xyz" + struct.pack(">iI", -1, 0) + struct.pack(">iI", 1, 0)
        assert decode_batch_response(body, 3) == [(2, b"xyz"), None, (1, b"")]

    def test_truncated_answer_is_retriable(self) -> None:
        body = struct.pack(">iI", 1, 10) + b"short"
        with pytest.raises(UnavailableError):
            decode_batch_response(body, 1)
        with pytest.raises(UnavailableError):
            decode_batch_response(b"", 1)

    def test_trailing_bytes_are_retriable(self) -> None:
        with pytest.raises(UnavailableError):
            decode_batch_response(struct.pack(">iI", -1, 0) + b"!", 1)
