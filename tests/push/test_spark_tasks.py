"""What the executors of a Spark push run, without Spark: plain pyarrow batches in, the
embedded log (a real backend) out. Expected partitions, keys and values come from the
architecture's formula (mmh3 of fastavro's key bytes), expected errors from the
single-process push's wording."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path
from typing import Any

import fastavro
import mmh3
import orjson
import pyarrow as pa
import pytest

from venice.pubsub import connect
from venice.push.spark_tasks import (
    FIRST_PLACEHOLDER,
    EncodeTask,
    InputSpec,
    TaskFailure,
    WriteTask,
    display_path,
    failure_in,
    normalize_uri,
    shuffle_keys,
)
from venice.structs import TopicPartition
from venice.wire import CONTROL_HEADER, SCHEMA_ID_HEADER, ControlKind, control_headers, encode_control

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "V",
    "fields": [{"name": "name", "type": "string"}, {"name": "score", "type": ["null", "double"], "default": None}],
}
FILES = ("file:/data/a.jsonl", "file:/data/b%20c.jsonl")
PARTITIONS = 3


def avro(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema, _write_hint=False), datum)
    return out.getvalue()


def spec(kind: str = "jsonl", **kw: Any) -> InputSpec:
    return InputSpec(kind=kind, key_schema="long", value_schema=VALUE_SCHEMA, partitions=PARTITIONS, key_field="id",
                     files=kw.pop("files", FILES), **kw)


def lines_batch(lines: list[bytes], file: str = "file:///data/a.jsonl", block: int = 0) -> pa.RecordBatch:
    """What Spark's text reader gives a task: lines, their file and split."""
    return pa.RecordBatch.from_pydict({
        "value": pa.array(lines, pa.binary()),
        "__venice_file": pa.array([file] * len(lines)),
        "__venice_block": pa.array([block] * len(lines), pa.int64()),
    })


def run_encode(task: EncodeTask, *batches: pa.RecordBatch) -> pa.Table:
    out = list(task(iter(batches)))
    return pa.Table.from_batches(out) if out else pa.table({})


def failure(call: Any) -> dict[str, Any]:
    with pytest.raises(TaskFailure) as caught:
        call()
    payload = failure_in(str(caught.value))  # what the driver reads back out of Spark's text
    assert payload == caught.value.payload
    return payload


# --- helpers ---------------------------------------------------------------------------------


def test_shuffle_keys_land_in_their_own_spark_partition() -> None:
    """Spark's hash partitioning is pmod(murmur3_x86_32(int, seed 42), n); Spark's own
    `SELECT hash(0), hash(1), hash(2)` gives these literal values."""
    assert [mmh3.hash(struct.pack("<i", i), 42) for i in range(3)] == [933211791, -559580957, 1765031574]
    for count in (1, 2, 3, 4, 7, 16, 100):
        keys = shuffle_keys(count)
        assert len(set(keys)) == count
        assert [mmh3.hash(struct.pack("<i", k), 42) % count for k in keys] == list(range(count))
    assert shuffle_keys(4) == [12, 6, 2, 0]  # checked against Spark 4.2's repartition(4, col)


def test_failure_marker_survives_being_embedded_in_spark_text() -> None:
    payload = {"kind": "input", "reason": "bad <<value>> with \"quotes\"\nand a newline", "at": [1, 2, 3]}
    text = f"org.apache.spark.SparkException: Job aborted\nTraceback...\nTaskFailure: {TaskFailure(payload)}\n\tat x.y"
    assert failure_in(text) == payload
    assert failure_in("no marker here") is None


def test_paths_as_spark_names_them_and_as_people_write_them() -> None:
    assert normalize_uri("file:///data/x.csv") == normalize_uri("file:/data/x.csv") == "file:/data/x.csv"
    assert display_path("file:///data/b%20c.csv") == "/data/b c.csv"
    assert display_path("hdfs://nn:8020/d/x.csv") == "hdfs://nn:8020/d/x.csv"


# --- stage 1 ------------------------------------------------------------------------------------


def test_json_lines_are_validated_encoded_partitioned_and_positioned() -> None:
    records = [{"id": i * 7919, "name": f"n{i}", "score": None if i % 2 else i / 3} for i in range(40)]
    lines = [b"\xef\xbb\xbf" + orjson.dumps(records[0]), b"", b"   "] + [orjson.dumps(r) for r in records[1:]]
    task = EncodeTask(spec())
    out = run_encode(task, lines_batch(lines[:20]), lines_batch(lines[20:]))
    keys = [avro("long", r["id"]) for r in records]
    assert out.column("k").to_pylist() == keys
    assert out.column("v").to_pylist() == [avro(VALUE_SCHEMA, {"name": r["name"], "score": r["score"]}) for r in records]
    assert out.column("vp").to_pylist() == [mmh3.hash(k, signed=False) % PARTITIONS for k in keys]
    assert out.column("sk").to_pylist() == [shuffle_keys(PARTITIONS)[p] for p in out.column("vp").to_pylist()]
    # blank lines are skipped but counted: the row numbers are line numbers within the split
    assert out.column("r").to_pylist() == [0] + list(range(3, 42))
    assert set(out.column("f").to_pylist()) == {0} and set(out.column("b").to_pylist()) == {0}


def test_rows_are_numbered_per_file_and_split() -> None:
    task = EncodeTask(spec())
    rows = [orjson.dumps({"id": i, "name": "x"}) for i in range(6)]
    out = run_encode(task, lines_batch(rows[:2], "file:/data/b%20c.jsonl", 4096), lines_batch(rows[2:4], "file:/data/a.jsonl"),
                     lines_batch(rows[4:], "file:/data/b%20c.jsonl", 4096))
    assert list(zip(out.column("f").to_pylist(), out.column("b").to_pylist(), out.column("r").to_pylist(), strict=True)) == [
        (1, 4096, 0), (1, 4096, 1), (0, 0, 0), (0, 0, 1), (1, 4096, 2), (1, 4096, 3)]


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"id": 1, "name": 2}', "value does not fit the value schema"),
    (b'{"id": 1, "nme": "x"}', "missing field 'name' required by the value schema"),
    (b'{"name": "x"}', "missing key field 'id'"),
    (b'{"id": 1, "name": "x", "extra": 1}', "field(s) not in the value schema: extra"),
    (b'[1, 2]', "expected a JSON object on each line, got an array"),
    (b'{"id": 1,', "invalid JSON at column"),
    (b'{"id": 1, "name": "\xff"}', "invalid JSON"),
])
def test_first_bad_line_fails_with_its_position_and_the_cli_reason(line: bytes, reason: str) -> None:
    good = [orjson.dumps({"id": i, "name": "ok"}) for i in range(5)]
    payload = failure(lambda: run_encode(EncodeTask(spec()), lines_batch(good), lines_batch([*good, line], block=8192)))
    assert payload["kind"] == "input"
    assert payload["at"] == [0, 8192, 5]
    assert payload["reason"].startswith(reason)


def test_csv_header_is_skipped_checked_and_cells_coerced() -> None:
    task = EncodeTask(spec("csv", header=("id", "name", "score")))
    out = run_encode(task, lines_batch([b"\xef\xbb\xbfid, name ,score", b"1,ann,0.5", b"", b"2,bob,NA", b'3,"c,y",1e3'],
                                       "file:/data/a.jsonl"))
    assert out.column("v").to_pylist() == [avro(VALUE_SCHEMA, v) for v in (
        {"name": "ann", "score": 0.5}, {"name": "bob", "score": None}, {"name": "c,y", "score": 1000.0})]
    assert out.column("r").to_pylist() == [1, 3, 4]  # the header is line 1 (row 0)


@pytest.mark.parametrize(("lines", "at", "reason"), [
    ([b"id,name", b"1,ann"], [0, 0, 0], "the header (id, name) differs from the first file's (id, name, score)"),
    ([b"id,,score", b"1,a,2"], [0, 0, 0], "header column 2 has no name (a header row is required)"),
    ([b"id,name,score", b"1,ann"], [0, 0, 1], "expected 3 cells as in the header, got 2"),
    ([b"id,name,score", b"1,\xe9,2"], [0, 0, 1], "not UTF-8 text (invalid continuation byte at byte 3)"),
    ([b"id,name,score", b'1,"multi', b'line",2'], [0, 0, 1], "malformed CSV: unexpected end of data (a quoted cell cannot span lines"),
    ([b"id,name,score", b"x,ann,1"], [0, 0, 1], "field 'id': 'x' is not a long"),
])
def test_bad_csv_lines(lines: list[bytes], at: list[int], reason: str) -> None:
    payload = failure(lambda: run_encode(EncodeTask(spec("csv", header=("id", "name", "score"))), lines_batch(lines)))
    assert payload["at"] == at
    assert reason in payload["reason"]


def test_columns_take_the_vectorized_encoder() -> None:
    batch = pa.RecordBatch.from_pydict({
        "id": pa.array([5, -3, 2**40]), "name": pa.array(["a", "", "日本"]), "score": pa.array([None, 1.5, float("nan")]),
        "__venice_file": pa.array(["file:/data/a.jsonl"] * 3), "__venice_block": pa.array([0, 0, 0], pa.int64())})
    task = EncodeTask(spec("columns"))
    out = run_encode(task, batch)
    assert task.encoder.vectorized_batches == 1
    assert out.column("v").to_pylist() == [avro(VALUE_SCHEMA, {"name": n, "score": s}) for n, s in
                                           zip(["a", "", "日本"], [None, 1.5, float("nan")], strict=True)]


def test_dataframe_rows_are_positioned_by_spark_partition() -> None:
    batch = pa.RecordBatch.from_pydict({"id": [1, 2], "name": ["a", "b"], "__venice_block": pa.array([7, 7], pa.int64())})
    bad = pa.RecordBatch.from_pydict({"id": [3, None], "name": ["c", "d"], "__venice_block": pa.array([7, 7], pa.int64())})
    task = EncodeTask(spec("dataframe", files=()))
    payload = failure(lambda: run_encode(task, batch, bad))
    assert payload == {"kind": "input", "reason": "missing key field 'id'", "at": [-1, 7, 3]}


def test_keys_and_values_over_the_limits_are_refused() -> None:
    small = spec("columns", max_key_bytes=511, max_value_bytes=64)
    long_key = pa.RecordBatch.from_pydict({"id": [1, 2], "name": ["a", "x" * 62]})  # 1 + 62 + 1 byte: 64 is fine
    run_encode(EncodeTask(small), long_key)
    too_big = pa.RecordBatch.from_pydict({"id": [1, 2], "name": ["a", "x" * 63]})
    assert failure(lambda: run_encode(EncodeTask(small), too_big))["reason"] == \
        "value of 65 bytes is larger than the store's max_value_bytes (64)"
    string_keys = InputSpec(kind="columns", key_schema="string", value_schema="string", partitions=2)
    ok = pa.RecordBatch.from_pydict({"key": ["k" * 509], "value": ["v"]})  # 2 length bytes + 509 = 511
    run_encode(EncodeTask(string_keys), ok)
    payload = failure(lambda: run_encode(EncodeTask(string_keys), pa.RecordBatch.from_pydict({"key": ["k" * 510], "value": ["v"]})))
    assert payload["reason"] == "key of 512 bytes is longer than the 511 bytes a key may have"


# --- stage 2 ---------------------------------------------------------------------------------------


def sorted_partitions(table: pa.Table) -> dict[int, pa.Table]:
    """What the shuffle and sort give each write task: one partition, ordered by key, then position."""
    ordered = table.sort_by([("vp", "ascending"), ("k", "ascending"), ("f", "ascending"), ("b", "ascending"), ("r", "ascending")])
    return {p: ordered.filter(pa.compute.equal(ordered.column("vp"), p)) for p in range(PARTITIONS)}


async def open_topic(url: str, topic: str) -> None:
    async with connect(url) as pubsub:
        await pubsub.create_topic(topic, PARTITIONS)
        async with await pubsub.producer() as producer:
            for p in range(PARTITIONS):
                await producer.send(topic, p, b"", encode_control({"store": "s"}), control_headers(ControlKind.START_OF_PUSH))


async def read_topic(url: str, topic: str) -> dict[int, list[Any]]:
    async with connect(url) as pubsub:
        ends = await pubsub.end_offsets(topic)
        found: dict[int, list[Any]] = {}
        async with await pubsub.consumer() as consumer:
            await consumer.assign({TopicPartition(topic, p): 0 for p in range(PARTITIONS)})
            while sum(len(v) for v in found.values()) < sum(ends.values()):
                for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                    found.setdefault(tp.partition, []).extend(messages)
    return found


def write(url: str, topic: str, table: pa.Table, chunk: int = 7) -> list[dict[str, Any]]:
    stats = []
    for part in sorted_partitions(table).values():
        batches = part.to_batches(max_chunksize=chunk)
        stats += pa.Table.from_batches(list(WriteTask(spec(), url, topic, 2)(iter(batches)))).to_pylist() if batches else []
    return stats


def test_each_partition_is_written_in_key_order_without_identical_repeats(tmp_path: Path) -> None:
    url, topic = f"embedded://{tmp_path / 'log'}", "s_v1"
    asyncio.run(open_topic(url, topic))
    records = [{"id": i * 31 - 500, "name": f"n{i}"} for i in range(60)]
    repeats = [records[3], records[40], records[40]]  # identical repeats, dropped
    lines = [orjson.dumps(r) for r in records + repeats]
    table = run_encode(EncodeTask(spec()), lines_batch(lines))
    stats = write(url, topic, table)
    found = asyncio.run(read_topic(url, topic))
    expected: dict[int, list[tuple[bytes, bytes]]] = {}
    for r in records:
        key = avro("long", r["id"])
        expected.setdefault(mmh3.hash(key, signed=False) % PARTITIONS, []).append((key, avro(VALUE_SCHEMA, {"name": r["name"], "score": None})))
    for p in range(PARTITIONS):
        messages = found[p]
        assert dict(messages[0].headers)[CONTROL_HEADER] == b"START_OF_PUSH"
        assert [(m.key, m.value) for m in messages[1:]] == sorted(expected.get(p, []))
        assert all(m.header(SCHEMA_ID_HEADER) == b"2" for m in messages[1:])
    assert sorted((s["partition"], s["records"]) for s in stats) == sorted((p, len(v)) for p, v in expected.items())
    assert sum(s["duplicates"] for s in stats) == 3
    assert sum(s["bytes"] for s in stats) == sum(len(k) + len(v) for v in expected.values() for k, v in v)


@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_a_key_with_two_values_fails_naming_both_positions(tmp_path: Path, chunk: int) -> None:
    url, topic = f"embedded://{tmp_path / 'log'}", "s_v1"
    asyncio.run(open_topic(url, topic))
    lines = [orjson.dumps({"id": i, "name": "a"}) for i in range(10)] + [orjson.dumps({"id": 4, "name": "a"}),
                                                                          orjson.dumps({"id": 4, "name": "b"})]
    table = run_encode(EncodeTask(spec()), lines_batch(lines))
    payload = failure(lambda: write(url, topic, table, chunk))
    assert payload == {"kind": "input", "at": [0, 0, 11], "first": [0, 0, 4],
                       "reason": f"key 4 appears twice with different values (first at {FIRST_PLACEHOLDER})"}


def test_a_retried_task_does_not_write_a_partition_twice(tmp_path: Path) -> None:
    url, topic = f"embedded://{tmp_path / 'log'}", "s_v1"
    asyncio.run(open_topic(url, topic))
    table = run_encode(EncodeTask(spec()), lines_batch([orjson.dumps({"id": i, "name": "a"}) for i in range(30)]))
    part = next(t for t in sorted_partitions(table).values() if t.num_rows)
    task = WriteTask(spec(), url, topic, 1)
    list(task(iter(part.to_batches())))
    payload = failure(lambda: list(task(iter(part.to_batches()))))
    assert payload["kind"] == "retry"
    assert f"already holds {part.num_rows} records from an earlier attempt" in payload["reason"]


def test_an_unreachable_pubsub_is_a_pubsub_failure(tmp_path: Path) -> None:
    table = run_encode(EncodeTask(spec()), lines_batch([orjson.dumps({"id": 1, "name": "a"})]))
    payload = failure(lambda: list(WriteTask(spec(), "nowhere://x", "t", 1)(iter(table.to_batches()))))
    assert payload["kind"] == "pubsub"


# --- the same bad inputs, the same answers as the single-process push --------------------------

MEMBER = {"type": "record", "name": "M", "fields": [
    {"name": "name", "type": "string"}, {"name": "score", "type": ["null", "double"], "default": None},
    {"name": "visits", "type": "int", "default": 0}, {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}]}
GOOD_JSON = [b'{"id": 1, "name": "ann", "score": 0.5, "tags": ["a"]}', b'{"id": 2, "name": "bob"}', b"",
             b'{"id": 3, "name": "cy", "visits": 7}']
GOOD_CSV = [b"id,name,score,visits,tags", b'1,ann,0.5,3,"[""a""]"', b"2,bob,NA,0,[]", b"", b"3,cy,,7,[]"]


def cli_answer(path: Path, fmt: str) -> str | None:
    """What ``venice push`` says about the file: its reader and converter, record by record."""
    from venice.errors import InvalidInputError
    from venice.push.formats import open_records
    from venice.push.records import RecordConverter
    from venice.schema import AvroCodec

    converter = RecordConverter(AvroCodec("long", kind="key"), AvroCodec(MEMBER), key_field="id", text_cells=fmt == "csv",
                                file=path)
    try:
        with open_records(path, fmt) as source:
            for position, record in source:
                converter.convert(position, record)
    except InvalidInputError as exc:
        return exc.message
    return None


def spark_answer(path: Path, fmt: str) -> str | None:
    """What the Spark push's executors say, fed the lines Spark's text reader gives them."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line.removesuffix(b"\r") for line in lines]
    header: tuple[str, ...] = ()
    if fmt == "csv" and lines:
        from venice.push.formats import csv_columns, decode_line, strip_bom
        from venice.push.spark_tasks import csv_cells

        try:  # what the driver does with the first file's header (venice.push.spark._csv_header)
            header = tuple(csv_columns(csv_cells(decode_line(strip_bom(lines[0])))))
        except ValueError as exc:
            return f"{path}: line 1: {exc}"
    task = EncodeTask(InputSpec(kind=fmt, key_schema="long", value_schema=MEMBER, partitions=2, key_field="id",
                                files=("file:/in",), header=header))
    try:
        run_encode(task, lines_batch(lines, "file:/in"))
    except TaskFailure as exc:
        _, _, row = exc.payload["at"]
        return f"{path}: line {row + 1}: {exc.payload['reason']}"
    return None


@pytest.mark.parametrize(("fmt", "index", "line"), [
    ("jsonl", 1, b'{"id": 2, "name": 5}'),
    ("jsonl", 1, b'{"id": 2}'),
    ("jsonl", 1, b'{"name": "x"}'),
    ("jsonl", 1, b'{"id": null, "name": "x"}'),
    ("jsonl", 1, b'{"id": "2", "name": "x"}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "other": 1}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "visits": 1.5}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "visits": 2147483648}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "score": true}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "tags": [1]}'),
    ("jsonl", 1, b'{"id": 2, "name": "x", "visits": null}'),
    ("jsonl", 1, b'{"id": 2, "name": "x",}'),
    ("jsonl", 1, b'"just a string"'),
    ("jsonl", 0, b'\xef\xbb\xbf{"id": 9, "name": "bom", "tags": ["\xff"]}'),
    ("csv", 2, b"2,bob,high,0,[]"),
    ("csv", 2, b"2,bob,1,1.0,[]"),
    ("csv", 2, b",bob,1,1,[]"),
    ("csv", 2, b"2,bob,1,1"),
    ("csv", 2, b"2,bob,1,1,[1]"),
    ("csv", 2, b"2,bob,1,NA,[]"),
    ("csv", 2, b'2,"bob,1,1,[]'),
    ("csv", 2, b"2,b\xe9b,1,1,[]"),
    ("csv", 2, b"  ,bob,1,1,[]"),
    ("csv", 0, b"id,name,id,visits,tags"),
    ("jsonl", None, b""),
    ("csv", None, b""),
])
def test_bad_inputs_fail_as_the_single_process_push_says(tmp_path: Path, fmt: str, index: int | None, line: bytes) -> None:
    lines = list(GOOD_JSON if fmt == "jsonl" else GOOD_CSV)
    if index is not None:
        lines[index] = line
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    expected = cli_answer(path, fmt)
    assert (expected is None) == (index is None)
    if expected is not None and expected.endswith("unexpected end of data"):
        expected += " (a quoted cell cannot span lines in a Spark push)"  # the one documented difference
    assert spark_answer(path, fmt) == expected
