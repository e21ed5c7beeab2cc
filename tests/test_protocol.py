"""The typed payloads the parts exchange: literal JSON in, the same JSON out, and every
malformed payload a RequestError naming the field (never a crash)."""

from __future__ import annotations

from typing import Any

import pytest

from venice.errors import RequestError, UnavailableError
from venice.protocol import (
    Assignment,
    Heartbeat,
    HeartbeatAnswer,
    ReplicaReport,
    ReplicaStatus,
    RoutingTable,
    decode_batch_request,
    decode_batch_response,
    decode_key_segment,
    encode_batch_request,
    encode_batch_response,
    encode_key_segment,
    replica_batch_path,
    replica_get_path,
)

HEARTBEAT: dict[str, Any] = {
    "url": "http://127.0.0.1:7001",
    "replicas": [
        {"store": "members", "version": 3, "partition": 1, "status": "READY", "offset": 12, "records": 10, "reason": None},
        {"store": "members", "version": 4, "partition": 0, "status": "ERROR", "offset": 0, "records": 0, "reason": "map full"},
    ],
    "draining": False,
}

ASSIGNMENT: dict[str, Any] = {
    "store": "members",
    "version": 3,
    "topic": "members_v3",
    "incarnation": "a1b2",
    "partitions_total": 4,
    "partitions": [0, 2],
    "key_schema": "long",
    "value_schemas": {"1": "string"},
    "hybrid": {"rewind_seconds": 60, "offset_lag": 100, "real_time_topic": "members_rt"},
    "rt_start_offsets": {"0": 5, "2": 0},
    "consume_rt": True,
    "rt_epoch": 2,
}

ROUTING: dict[str, Any] = {
    "generation": 17,
    "stores": {
        "members": {
            "key_schema": "long",
            "value_schemas": {"1": "string"},
            "partitions": 2,
            "current_version": 3,
            "versions": {"3": {"partitions": {"0": ["http://a:1", "http://b:2"], "1": ["http://b:2"]}}},
            "retired_versions": [1],
        }
    },
}


class TestRoundTrips:
    def test_heartbeat(self) -> None:
        heartbeat = Heartbeat.from_json(HEARTBEAT)
        assert heartbeat.replicas[0].status is ReplicaStatus.READY
        assert heartbeat.replicas[1].reason == "map full"
        assert heartbeat.to_json() == HEARTBEAT

    def test_assignment(self) -> None:
        assignment = Assignment.from_json(ASSIGNMENT)
        assert assignment.partitions == (0, 2)
        assert assignment.value_schemas == {1: "string"}
        assert assignment.rt_start_offsets == {0: 5, 2: 0}
        assert assignment.hybrid is not None and assignment.hybrid.real_time_topic == "members_rt"
        assert assignment.rt_epoch == 2
        assert assignment.to_json() == ASSIGNMENT

    def test_batch_only_assignment_has_no_hybrid_fields(self) -> None:
        plain = {k: v for k, v in ASSIGNMENT.items() if k not in ("hybrid", "rt_start_offsets", "consume_rt", "rt_epoch")}
        assert Assignment.from_json(plain).to_json() == plain

    def test_an_assignment_without_an_epoch_means_epoch_0(self) -> None:
        """What a controller from before epochs sends; checkpoints from then are epoch 0 too."""
        older = {k: v for k, v in ASSIGNMENT.items() if k != "rt_epoch"}
        assert Assignment.from_json(older).rt_epoch == 0

    def test_heartbeat_answer(self) -> None:
        answer = {"assignment": [ASSIGNMENT], "pubsub_url": "kafka://127.0.0.1:9092"}
        assert HeartbeatAnswer.from_json(answer).to_json() == answer

    def test_routing_table(self) -> None:
        table = RoutingTable.from_json(ROUTING)
        route = table.stores["members"]
        assert route.versions[3][0] == ("http://a:1", "http://b:2")
        assert route.retired_versions == frozenset({1})
        assert table.to_json() == ROUTING


def _with(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(base)
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return data


class TestHostilePayloads:
    @pytest.mark.parametrize(
        ("path", "value", "names"),
        [
            (["url"], 12, "heartbeat.url"),
            (["url"], "ftp://x", "heartbeat.url"),
            (["replicas"], {"a": 1}, "heartbeat.replicas"),
            (["replicas", 0, "status"], "BORED", "status"),
            (["replicas", 0, "version"], "3", "version"),
            (["replicas", 0, "version"], 10**30, "version"),
            (["replicas", 0, "partition"], -1, "partition"),
            (["replicas", 0, "offset"], 1.5, "offset"),
            (["replicas", 0, "records"], True, "records"),
            (["replicas", 0, "store"], None, "store"),
            (["replicas", 0], "not an object", "replicas[0]"),
            (["draining"], "yes", "draining"),
            (["url"], "http://127.0.0.1:7001/path", "heartbeat.url"),
            (["url"], "http://127.0.0.1:7001/", "heartbeat.url"),
            (["url"], "http://a b:1", "heartbeat.url"),
            (["url"], "http://user@host:1", "heartbeat.url"),
            (["url"], "http://", "heartbeat.url"),
            (["replicas", 0, "reason"], 5, "reason"),
            (["replicas", 0, "incarnation"], "x" * 65, "incarnation"),
            (["replicas", 0, "rt_lag"], -1, "rt_lag"),
            (["replicas", 0, "skipped"], "1", "skipped"),
            (["replicas", 0, "rt_lost"], -3, "rt_lost"),
            (["replicas", 0, "rt_lost"], 1.5, "rt_lost"),
            (["replicas", 0, "rt_lost"], 2**63, "rt_lost"),
        ],
    )
    def test_malformed_heartbeat_is_a_request_error(self, path: list[Any], value: Any, names: str) -> None:
        with pytest.raises(RequestError, match=names.replace("[", r"\[").replace("]", r"\]")):
            Heartbeat.from_json(_with(HEARTBEAT, path, value))

    @pytest.mark.parametrize("body", [None, [], "x", 3])
    def test_heartbeat_must_be_an_object(self, body: Any) -> None:
        with pytest.raises(RequestError):
            Heartbeat.from_json(body)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (["partitions"], [0, 9]),  # beyond partitions_total
            (["partitions_total"], 0),
            (["value_schemas"], {}),
            (["value_schemas"], {"١": "string"}),
            (["rt_start_offsets"], {"0": -5}),
            (["hybrid"], {"rewind_seconds": "60"}),
            (["rt_epoch"], -1),
            (["rt_epoch"], "2"),
            (["rt_epoch"], 2.0),
            (["rt_epoch"], True),
            (["rt_epoch"], 2**63),
        ],
    )
    def test_malformed_assignment(self, path: list[Any], value: Any) -> None:
        with pytest.raises(RequestError):
            Assignment.from_json(_with(ASSIGNMENT, path, value))

    def test_malformed_routing(self) -> None:
        with pytest.raises(RequestError, match="URL"):
            RoutingTable.from_json(_with(ROUTING, ["stores", "members", "versions", "3", "partitions", "0"], [7]))
        with pytest.raises(RequestError):
            RoutingTable.from_json(_with(ROUTING, ["stores", "members", "versions", "x"], {}))
        with pytest.raises(RequestError):
            RoutingTable.from_json(_with(ROUTING, ["generation"], "17"))


class TestReadPathsAndFrames:
    def test_paths(self) -> None:
        assert replica_get_path("a b", 3, 1, b"\x02") == "/v1/a%20b/3/1/Ag"
        assert replica_batch_path("m/x", 2) == "/v1/batch/m%2Fx/2"

    def test_key_segments(self) -> None:
        assert encode_key_segment(b"\xff\xfe\x00") == "__4A"
        assert decode_key_segment("__4A") == b"\xff\xfe\x00"
        assert decode_key_segment(b"Ag") == b"\x02"
        with pytest.raises(RequestError):
            decode_key_segment("A")  # one base64 character cannot be a byte

    def test_batch_request_frames(self) -> None:
        body = encode_batch_request([(1, b"ab"), (0, b"")])
        assert body == b"\x00\x00\x00\x01\x00\x00\x00\x02ab\x00\x00\x00\x00\x00\x00\x00\x00"
        assert decode_batch_request(body) == [(1, b"ab"), (0, b"")]

    @pytest.mark.parametrize("body", [b"\x00\x00\x00", b"\x00\x00\x00\x01\x00\x00\x00\x09ab"])
    def test_truncated_batch_request_is_a_request_error(self, body: bytes) -> None:
        with pytest.raises(RequestError):
            decode_batch_request(body)

    def test_batch_answer_frames(self) -> None:
        body = encode_batch_response([(2, b"v"), None])
        assert body == b"\x00\x00\x00\x02\x00\x00\x00\x01v\xff\xff\xff\xff\x00\x00\x00\x00"
        assert decode_batch_response(body, 2) == [(2, b"v"), None]
        with pytest.raises(UnavailableError):
            decode_batch_response(body[:-1], 2)
        with pytest.raises(UnavailableError):
            decode_batch_response(body + b"x", 2)

    def test_report_defaults(self) -> None:
        report = ReplicaReport.from_json({"store": "s", "version": 1, "partition": 0, "status": "STARTED"})
        assert (report.offset, report.records, report.reason, report.skipped, report.rt_lost) == (0, 0, None, 0, 0)
        assert "rt_lost" not in report.to_json()
        assert report.incarnation is None and "incarnation" not in report.to_json()

    def test_long_reasons_are_cut_not_refused(self) -> None:
        """A server whose failure message is long must still be heard."""
        report = ReplicaReport.from_json({"store": "s", "version": 1, "partition": 0, "status": "ERROR", "reason": "é" * 10_000})
        assert report.reason == "é" * 2000

    def test_real_time_fields_and_incarnation_round_trip(self) -> None:
        raw = {"store": "s", "version": 1, "partition": 0, "status": "READY", "offset": 3, "records": 2, "reason": None,
               "rt_offset": 40, "rt_lag": 2, "skipped": 1, "rt_lost": 7, "incarnation": "9f2c01ab34de"}
        assert ReplicaReport.from_json(raw).to_json() == raw
        assert ReplicaReport.from_json(raw).rt_lost == 7
