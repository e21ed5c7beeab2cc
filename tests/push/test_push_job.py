"""The push job against an in-process fake controller (an httpx transport) and an
in-memory pub-sub implementing the PubSub interface: the wire protocol, duplicate
handling, and that every failure after the version opened is reported to the controller.
(The end-to-end push against real processes is tested with the cluster.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from venice.errors import InvalidInputError, PubSubError, PushError, SchemaError, StoreNotFoundError
from venice.partitioner import partition_for
from venice.pubsub.base import Consumer, Headers, Producer, PubSub
from venice.push.job import PushSummary, push
from venice.schema import AvroCodec
from venice.wire import CONTROL_HEADER, SCHEMA_ID_HEADER

from .files import write_csv, write_jsonl

VALUE_SCHEMA = {
    "type": "record",
    "name": "V",
    "fields": [{"name": "name", "type": "string"}, {"name": "score", "type": ["null", "double"], "default": None}],
}
PARTITIONS = 3


class MemoryProducer(Producer):
    def __init__(self, log: MemoryPubSub) -> None:
        self.log = log

    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> None:
        if self.log.fail_after is not None and len(self.log.records) >= self.log.fail_after:
            raise PubSubError("broker went away")
        self.log.records.append((topic, partition, key, value, tuple(headers)))

    async def flush(self) -> None:
        self.log.flushes += 1

    async def close(self) -> None:
        self.log.closed = True


class MemoryPubSub(PubSub):
    """Just enough of a backend: a list of every record sent."""

    def __init__(self, url: str, fail_after: int | None = None) -> None:
        self.url = url
        self.records: list[tuple[str, int, bytes, bytes | None, tuple[tuple[str, bytes], ...]]] = []
        self.flushes = 0
        self.closed = False
        self.fail_after = fail_after

    async def create_topic(self, topic: str, partitions: int) -> None: ...
    async def delete_topic(self, topic: str) -> None: ...
    async def list_topics(self) -> set[str]:
        return set()

    async def partition_count(self, topic: str) -> int:
        return PARTITIONS

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {}

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        return {}

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        return {}

    async def producer(self) -> Producer:
        return MemoryProducer(self)

    async def consumer(self) -> Consumer:
        raise NotImplementedError

    async def close(self) -> None: ...

    def data(self) -> list[tuple[int, bytes, bytes | None, dict[str, bytes]]]:
        return [(p, k, v, dict(h)) for _, p, k, v, h in self.records if CONTROL_HEADER not in dict(h)]

    def controls(self, kind: str) -> dict[int, dict[str, Any]]:
        return {
            p: orjson.loads(v or b"{}")
            for _, p, _, v, h in self.records
            if dict(h).get(CONTROL_HEADER) == kind.encode()
        }


class FakeController:
    """The controller endpoints a push uses, as an httpx transport."""

    def __init__(self, final_status: str = "ONLINE", key_schema: Any = "long") -> None:
        self.final_status = final_status
        self.key_schema = key_schema
        self.calls: list[tuple[str, str, Any]] = []
        self.status = "STARTED"

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        path = request.url.path
        self.calls.append((request.method, path, body))
        if path == "/stores/missing":
            return httpx.Response(404, json={"error": {"code": "STORE_NOT_FOUND", "message": "store 'missing' does not exist"}})
        if request.method == "GET" and path == "/stores/members":
            return httpx.Response(200, json={
                "name": "members", "key_schema": self.key_schema, "partitions": PARTITIONS,
                "value_schemas": {"1": {"type": "record", "name": "Old", "fields": []}, "2": VALUE_SCHEMA},
            })
        if request.method == "POST" and path == "/stores/members/versions":
            return httpx.Response(201, json={"version": 4, "topic": "members_v4", "partitions": PARTITIONS, "pubsub_url": "memory://"})
        if request.method == "POST" and path == "/stores/members/versions/4/end":
            self.status = self.final_status
            return httpx.Response(200, json={})
        if request.method == "POST" and path == "/stores/members/versions/4/error":
            self.status = "ERROR"
            return httpx.Response(200, json={})
        if request.method == "GET" and path == "/stores/members/versions/4":
            reason = "replica s1 failed: disk full" if self.status == "ERROR" else None
            return httpx.Response(200, json={"version": 4, "status": self.status, "reason": reason, "partitions": PARTITIONS,
                                             "replicas": {"0": [{"status": "READY"}], "1": [{"status": "STARTED"}], "2": []}})
        return httpx.Response(500, json={"error": {"code": "INTERNAL", "message": f"unexpected {request.method} {path}"}})

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.calls if method in (None, m)]


async def run(
    controller: FakeController, path: Path, pubsub: MemoryPubSub | None = None, store: str = "members", **kwargs: Any
) -> tuple[PushSummary, MemoryPubSub]:
    log = pubsub or MemoryPubSub("memory://")
    kwargs.setdefault("key_field", "id")
    async with httpx.AsyncClient(transport=controller.transport()) as http:
        summary = await push(
            "http://controller", store, path, progress=False, poll_interval_s=0.01, http=http,
            pubsub_factory=lambda url: log, **kwargs,
        )
    return summary, log


ROWS = [{"id": i, "name": f"m{i}", "score": i / 2} for i in range(20)]


async def test_push_writes_every_record_to_its_partition_between_control_messages(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    controller = FakeController()
    summary, log = await run(controller, path)

    key_codec, value_codec = AvroCodec("long", kind="key"), AvroCodec(VALUE_SCHEMA)
    data = log.data()
    assert len(data) == 20
    for partition, key, value, headers in data:
        assert partition == partition_for(key, PARTITIONS)
        assert headers[SCHEMA_ID_HEADER] == b"2"  # the latest value schema
        decoded_key = key_codec.decode(key)
        assert value_codec.decode(value) == {"name": f"m{decoded_key}", "score": decoded_key / 2}
    assert set(log.controls("START_OF_PUSH")) == set(range(PARTITIONS))
    end = log.controls("END_OF_PUSH")
    assert {p: end[p]["records"] for p in end} == {p: sum(1 for d in data if d[0] == p) for p in range(PARTITIONS)}
    first_data = next(i for i, r in enumerate(log.records) if CONTROL_HEADER not in dict(r[4]))
    assert all(CONTROL_HEADER in dict(r[4]) for r in log.records[:first_data])
    assert all(r[0] == "members_v4" for r in log.records)
    assert log.closed

    assert ("POST", "/stores/members/versions/4/end", {"records": 20}) in controller.calls
    assert "/stores/members/versions/4/error" not in controller.paths()
    assert (summary.store, summary.version, summary.records, summary.duplicates) == ("members", 4, 20, 0)
    assert summary.bytes == sum(len(k) + len(v or b"") for _, k, v, _ in data)
    assert summary.describe().startswith(f"pushed members v4: 20 records, {summary.bytes / 1000:.1f} kB in ")
    big = PushSummary("members", 3, 10000, 1_234_567, 2.31, 4329.0)
    assert big.describe() == "pushed members v3: 10000 records, 1.2 MB in 2.3 s (4329 records/s)"


async def test_identical_duplicates_are_skipped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*ROWS[:5], ROWS[2], ROWS[3]])
    summary, log = await run(FakeController(), path)
    assert summary.records == 5 and summary.duplicates == 2 and len(log.data()) == 5
    assert sum(v["records"] for v in log.controls("END_OF_PUSH").values()) == 5


async def test_conflicting_duplicate_fails_and_reports_the_version(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*ROWS[:5], {"id": 3, "name": "other"}])
    controller = FakeController()
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, path)
    message = f"{path}: line 6: key 3 appears twice with different values (first at line 4)"
    assert caught.value.message == message
    assert ("POST", "/stores/members/versions/4/error", {"reason": message}) in controller.calls
    assert "/stores/members/versions/4/end" not in controller.paths()


async def test_csv_input_is_coerced(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", ["id", "name", "score"], [["1", "a", "0.5"], ["2", "b", "NA"]])
    summary, log = await run(FakeController(), path)
    codec = AvroCodec(VALUE_SCHEMA)
    values = [codec.decode(v) for _, _, v, _ in log.data() if v is not None]
    assert summary.records == 2
    assert sorted(values, key=lambda v: v["name"]) == [{"name": "a", "score": 0.5}, {"name": "b", "score": None}]


async def test_bad_first_record_fails_before_a_version_is_opened(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "name": "a"}])
    controller = FakeController()
    with pytest.raises(InvalidInputError, match="line 1: key"):
        await run(controller, path)
    assert controller.paths("POST") == []


async def test_empty_input_fails_before_a_version_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("")
    controller = FakeController()
    with pytest.raises(InvalidInputError, match="no records to push"):
        await run(controller, path)
    assert controller.paths("POST") == []


async def test_missing_store(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    with pytest.raises(StoreNotFoundError, match="store 'missing' does not exist"):
        await run(FakeController(), path, store="missing")


async def test_pubsub_failure_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    controller = FakeController()
    with pytest.raises(PubSubError, match="broker went away"):
        await run(controller, path, pubsub=MemoryPubSub("memory://", fail_after=8))
    assert ("POST", "/stores/members/versions/4/error", {"reason": "broker went away"}) in controller.calls


async def test_version_error_raises_push_error_without_reporting_again(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    controller = FakeController(final_status="ERROR")
    with pytest.raises(PushError, match=r"version 4 of 'members' failed \(ERROR\): replica s1 failed: disk full"):
        await run(controller, path)
    assert "/stores/members/versions/4/error" not in controller.paths()


async def test_timeout_waiting_for_online_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    controller = FakeController(final_status="STARTED")
    with pytest.raises(PushError, match=r"timed out after 0.05 s .* \(status STARTED; 1/3 partitions have a ready replica\)"):
        await run(controller, path, timeout_s=0.05)
    assert "/stores/members/versions/4/error" in controller.paths()


async def test_cancellation_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", ROWS)
    controller = FakeController(final_status="STARTED")
    task = asyncio.ensure_future(run(controller, path, timeout_s=30))
    while "/stores/members/versions/4/end" not in controller.paths():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("POST", "/stores/members/versions/4/error", {"reason": "push interrupted"}) in controller.calls



async def test_values_are_written_with_the_chosen_schema_id(tmp_path: Path) -> None:
    rows = [{"id": i} for i in range(5)]  # schema 1 of the fake store is an empty record
    summary, log = await run(FakeController(), write_jsonl(tmp_path / "old.jsonl", rows), value_schema_id=1)
    assert summary.records == 5
    assert {headers[SCHEMA_ID_HEADER] for _, _, _, headers in log.data()} == {b"1"}
    assert {value for _, _, value, _ in log.data()} == {b""}  # an empty record is zero bytes of Avro


async def test_an_unknown_schema_id_fails_before_a_version_is_opened(tmp_path: Path) -> None:
    controller = FakeController()
    with pytest.raises(SchemaError, match=r"store 'members' has no value schema 3 \(it has 1, 2\)"):
        await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS), value_schema_id=3)
    assert controller.paths("POST") == []


async def test_new_fields_in_the_first_record_fail_with_the_schema_to_register(tmp_path: Path) -> None:
    rows = [{**row, "city": "Oslo" if row["id"] % 2 else None, "visits": row["id"]} for row in ROWS]
    controller = FakeController()
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, write_jsonl(tmp_path / "new.jsonl", rows))
    assert controller.paths("POST") == []  # no version was opened
    message = caught.value.message
    assert message.startswith(f"{tmp_path / 'new.jsonl'}: line 1: field(s) not in the value schema: city, visits\n")
    assert message.endswith("venice store add-value-schema --controller http://controller members --value-schema @members-v3.avsc")
    proposed = caught.value.details["proposed_schema"]
    assert proposed == {**VALUE_SCHEMA, "fields": [
        *VALUE_SCHEMA["fields"],
        {"name": "city", "type": ["null", "string"], "default": None},
        {"name": "visits", "type": ["null", "long"], "default": None},
    ]}  # fmt: skip
    assert orjson.loads(message[message.index("{") : message.rindex("}") + 1]) == proposed


async def test_new_fields_later_in_the_file_fail_the_version_with_the_proposal(tmp_path: Path) -> None:
    rows = [*ROWS, {"id": 99, "name": "late", "nested": {"a": [1.5]}}]
    controller = FakeController()
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, write_jsonl(tmp_path / "late.jsonl", rows))
    assert "line 21: field(s) not in the value schema: nested" in caught.value.message
    assert caught.value.details["proposed_schema"]["fields"][-1]["name"] == "nested"
    reported = [body for method, path, body in controller.calls if path == "/stores/members/versions/4/error"]
    assert len(reported) == 1 and "line 21: field(s) not in the value schema: nested" in reported[0]["reason"]


async def test_a_file_an_existing_newer_schema_fits_says_so(tmp_path: Path) -> None:
    controller = FakeController()
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS), value_schema_id=1)
    assert caught.value.message.endswith(
        "value schema 2 of store 'members' has every field of this file: push with --value-schema-id 2 (the default)"
    )
    assert "proposed_schema" not in caught.value.details


# -- issue 13: sorted partitions, shipped in runs, every input format through the batch encoders --


def _partition_keys(log: MemoryPubSub) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for partition, key, _, _ in log.data():
        out.setdefault(partition, []).append(key)
    return out


async def test_each_partition_is_shipped_sorted_by_key_bytes(tmp_path: Path) -> None:
    rows = [{"id": i, "name": f"m{i}", "score": None} for i in (7, -3, 1000, 2**40, 0, 55, -2**33, 12, 9, 31)]
    summary, log = await run(FakeController(), write_jsonl(tmp_path / "m.jsonl", rows))
    assert summary.records == len(rows)
    by_partition = _partition_keys(log)
    key_codec = AvroCodec("long", kind="key")
    assert sorted(key_codec.decode(k) for keys in by_partition.values() for k in keys) == sorted(r["id"] for r in rows)
    for keys in by_partition.values():
        assert keys == sorted(keys)  # bytewise: LMDB's order, so the servers append
    end = log.controls("END_OF_PUSH")
    assert {p: end[p]["records"] for p in end} == {p: len(by_partition.get(p, [])) for p in range(PARTITIONS)}


async def test_a_push_larger_than_the_sort_buffer_ships_sorted_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import venice.push.job as job

    monkeypatch.setattr(job, "SORT_BUFFER_BYTES", 1)  # every batch is a run of its own
    monkeypatch.setattr(job, "_BATCH_ROWS", 50)
    rows = [{"id": (i * 7919) % 1000, "name": f"m{i}"} for i in range(1000)]
    rows.append(dict(rows[10]))  # an identical repeat in a later run: still found and skipped
    summary, log = await run(FakeController(), write_jsonl(tmp_path / "m.jsonl", rows))
    assert summary.records == 1000 and summary.duplicates == 1
    value_codec, key_codec = AvroCodec(VALUE_SCHEMA), AvroCodec("long", kind="key")
    got = {key_codec.decode(k): value_codec.decode(v) for _, k, v, _ in log.data()}
    assert got == {r["id"]: {"name": r["name"], "score": None} for r in rows}
    assert len(log.data()) == 1000


async def test_a_conflicting_duplicate_in_a_later_run_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import venice.push.job as job

    monkeypatch.setattr(job, "SORT_BUFFER_BYTES", 1)
    monkeypatch.setattr(job, "_BATCH_ROWS", 10)
    rows = [{"id": i, "name": f"m{i}"} for i in range(40)] + [{"id": 3, "name": "other"}]
    controller = FakeController()
    with pytest.raises(InvalidInputError, match=r"line 41: key 3 appears twice with different values \(first at line 4\)"):
        await run(controller, write_jsonl(tmp_path / "m.jsonl", rows))
    assert "/stores/members/versions/4/error" in controller.paths("POST")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "avro", "parquet"])
async def test_every_format_pushes_the_same_bytes(tmp_path: Path, fmt: str) -> None:
    from .files import write_avro, write_parquet

    rows = [{"id": i, "name": f"m{i}", "score": (None if i % 3 == 0 else i / 4)} for i in range(300)]
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "m.jsonl", rows)
    elif fmt == "csv":
        path = write_csv(tmp_path / "m.csv", ["id", "name", "score"],
                         [[str(r["id"]), r["name"], "NA" if r["score"] is None else repr(r["score"])] for r in rows])
    elif fmt == "avro":
        schema = {"type": "record", "name": "In", "fields": [{"name": "id", "type": "long"}, *VALUE_SCHEMA["fields"]]}
        path = write_avro(tmp_path / "m.avro", schema, rows)
    else:
        path = write_parquet(tmp_path / "m.parquet", rows)
    summary, log = await run(FakeController(), path)
    key_codec, value_codec = AvroCodec("long", kind="key"), AvroCodec(VALUE_SCHEMA)
    expected = {key_codec.encode(r["id"]): value_codec.encode({"name": r["name"], "score": r["score"]}) for r in rows}
    assert {k: v for _, k, v, _ in log.data()} == expected
    assert summary.records == 300


async def test_a_bad_csv_cell_deep_in_the_file_names_its_line(tmp_path: Path) -> None:
    rows = [[str(i), f"m{i}", "1.5"] for i in range(5000)]
    rows[4321][2] = "+1.5"  # the platform's number grammar has no '+'
    controller = FakeController()
    with pytest.raises(InvalidInputError, match=r"line 4323: field 'score': '\+1\.5' is not a number"):
        await run(controller, write_csv(tmp_path / "m.csv", ["id", "name", "score"], rows))
    assert "/stores/members/versions/4/error" in controller.paths("POST")


async def test_a_malformed_second_line_fails_the_opened_version(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "name": "a"}\n{"id": 2, "name": \n')
    controller = FakeController()
    with pytest.raises(InvalidInputError, match="line 2: invalid JSON"):
        await run(controller, path)
    assert "/stores/members/versions" in controller.paths("POST")  # the first record was good: a version opened
    assert "/stores/members/versions/4/error" in controller.paths("POST")
