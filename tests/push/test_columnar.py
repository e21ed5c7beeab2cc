"""The vectorized encoder of the push path against fastavro, on many generated batches.

Every expected key and value is fastavro's ``schemaless_writer`` on the row as a Python
dict (the independent answer); every expected error is what the single-process push's
:class:`RecordConverter` says about that row.
"""

from __future__ import annotations

import io
import math
import random
import struct
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from venice.errors import InvalidInputError
from venice.push.columnar import ColumnarEncoder
from venice.push.records import RecordConverter
from venice.schema import AvroCodec

ADDRESS = {"type": "record", "name": "Address", "fields": [
    {"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "int"]}]}
COLOR = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}
VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "visits", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "active", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "country", "type": ["null", "string"], "default": None},
        {"name": "weight", "type": ["double", "null"], "default": 0.0},
        {"name": "embedding", "type": {"type": "array", "items": "double"}},
        {"name": "small", "type": {"type": "array", "items": "float"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "color", "type": COLOR},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "home", "type": ADDRESS},
        {"name": "work", "type": ["null", "Address"], "default": None},
        {"name": "history", "type": {"type": "array", "items": "Address"}},
        {"name": "maybe_list", "type": ["null", {"type": "array", "items": "long"}], "default": None},
        {"name": "nothing", "type": "null"},
    ],
}
ADDRESS_ARROW = pa.struct([("city", pa.string()), ("zip", pa.int32())])
ARROW_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("name", pa.string()),
    ("score", pa.float64()),
    ("visits", pa.int32()),
    ("total", pa.int64()),
    ("ratio", pa.float64()),
    ("active", pa.bool_()),
    ("blob", pa.binary()),
    ("country", pa.string()),
    ("weight", pa.float64()),
    ("embedding", pa.list_(pa.float64())),
    ("small", pa.list_(pa.float32())),
    ("tags", pa.list_(pa.string())),
    ("color", pa.string()),
    ("digest", pa.binary(4)),
    ("home", ADDRESS_ARROW),
    ("work", ADDRESS_ARROW),
    ("history", pa.list_(ADDRESS_ARROW)),
    ("maybe_list", pa.list_(pa.int64())),
    ("nothing", pa.null()),
])

EXTREME_LONGS = [0, 1, -1, 63, 64, -64, -65, 127, 128, 8191, 8192, -8193, 2**31 - 1, -(2**31), 2**35, -(2**49),
                 2**56 - 1, 2**62, 2**63 - 1, -(2**63)]
EXTREME_INTS = [v for v in EXTREME_LONGS if -(2**31) <= v < 2**31]
SPECIAL_DOUBLES = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, -2.5, 1e-300,
                   struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]]  # a NaN with a payload
STRINGS = ["", "a", "é", "日本語", "🙂👍🏽", "a\u0301", "line\nbreak", "x" * 200, "\x00nul", "'quote\""]


def avro(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema, _write_hint=False), datum)
    return out.getvalue()


def address(rng: random.Random) -> dict[str, Any]:
    return {"city": rng.choice(STRINGS), "zip": rng.choice([None, *EXTREME_INTS])}


def make_row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": rng.choice([i, *EXTREME_LONGS]),
        "name": rng.choice(STRINGS) + str(i % 3),
        "score": rng.choice([*SPECIAL_DOUBLES, rng.uniform(-1e6, 1e6)]),
        "visits": rng.choice(EXTREME_INTS),
        "total": rng.choice(EXTREME_LONGS),
        "ratio": rng.choice([0.1, -3.5, math.nan, math.inf, 1e39, -1e-50, 3.4028234663852886e38]),
        "active": rng.random() < 0.5,
        "blob": bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20))),
        "country": rng.choice([None, *STRINGS]),
        "weight": rng.choice([None, 1.5, math.nan, -0.0]),
        "embedding": [rng.uniform(-1, 1) for _ in range(rng.randrange(0, 6))],
        "small": [rng.choice([0.5, -1.25, math.inf]) for _ in range(rng.randrange(0, 4))],
        "tags": [rng.choice(STRINGS) for _ in range(rng.randrange(0, 4))],
        "color": rng.choice(COLOR["symbols"]),
        "digest": bytes(rng.randrange(256) for _ in range(4)),
        "home": address(rng),
        "work": rng.choice([None, address(rng)]),
        "history": [address(rng) for _ in range(rng.randrange(0, 3))],
        "maybe_list": rng.choice([None, [], [rng.choice(EXTREME_LONGS) for _ in range(3)]]),
        "nothing": None,
    }


def expected(rows: list[dict[str, Any]], key_schema: Any, value_schema: Any, key_field: str = "id") -> tuple[list[bytes], list[bytes]]:
    keys = [avro(key_schema, row[key_field]) for row in rows]
    values = [avro(value_schema, {k: v for k, v in row.items() if k != key_field}) for row in rows]
    return keys, values


def encoder(key_schema: Any = "long", value_schema: Any = VALUE_SCHEMA, **kw: Any) -> ColumnarEncoder:
    return ColumnarEncoder(AvroCodec(key_schema, kind="key"), AvroCodec(value_schema), key_field=kw.pop("key_field", "id"), **kw)


@pytest.mark.parametrize("seed", range(40))
def test_generated_batches_encode_like_fastavro(seed: int) -> None:
    rng = random.Random(seed)
    rows = [make_row(rng, i) for i in range(rng.randrange(1, 120))]
    batch = pa.RecordBatch.from_pylist(rows, schema=ARROW_SCHEMA)
    encoded = encoder().encode(batch)
    assert encoded.vectorized
    keys, values = expected(rows, "long", VALUE_SCHEMA)
    assert encoded.keys.to_pylist() == keys
    assert encoded.values.to_pylist() == values


def test_sliced_batches_and_chunked_tables() -> None:
    rng = random.Random(99)
    rows = [make_row(rng, i) for i in range(300)]
    batch = pa.RecordBatch.from_pylist(rows, schema=ARROW_SCHEMA)
    keys, values = expected(rows, "long", VALUE_SCHEMA)
    enc = encoder()
    for start, length in [(0, 1), (7, 50), (123, 177), (299, 1)]:
        part = enc.encode(batch.slice(start, length))
        assert part.vectorized
        assert part.values.to_pylist() == values[start : start + length]
        assert part.keys.to_pylist() == keys[start : start + length]
    table = pa.Table.from_batches([batch.slice(0, 100), batch.slice(100, 200)])
    assert enc.encode(table).values.to_pylist() == values


def test_one_byte_known_answers() -> None:
    """Literal Avro bytes, independent of fastavro: zig-zag varints and a nullable string."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": ["null", "string"]}]}
    batch = pa.RecordBatch.from_pylist(
        [{"k": "a", "n": 0, "s": None}, {"k": "é", "n": -1, "s": "hi"}, {"k": "", "n": 64, "s": ""}, {"k": "x", "n": -(2**63), "s": None}],
        schema=pa.schema([("k", pa.string()), ("n", pa.int64()), ("s", pa.string())]),
    )
    encoded = encoder("string", schema, key_field="k").encode(batch)
    assert encoded.vectorized
    assert encoded.keys.to_pylist() == [b"\x02a", b"\x04\xc3\xa9", b"\x00", b"\x02x"]
    assert encoded.values.to_pylist() == [
        b"\x00\x00", b"\x01\x02\x04hi", b"\x80\x01\x02\x00", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00"]


@pytest.mark.parametrize(("key_schema", "value_schema", "arrow_key", "arrow_value", "keys", "values"), [
    ("string", "string", pa.string(), pa.string(), STRINGS, list(reversed(STRINGS))),
    ("bytes", "double", pa.binary(), pa.float64(), [s.encode() for s in STRINGS], SPECIAL_DOUBLES),
    ("int", "float", pa.int32(), pa.float32(), EXTREME_INTS[:10], [0.5, -1.0, math.nan, math.inf, 0.0, 2.5, -7.0, 1e-3, 3.0, 4.0]),
    ("long", "boolean", pa.uint32(), pa.bool_(), [0, 1, 2**32 - 1], [True, False, True]),
    ("long", {"type": "array", "items": "double"}, pa.int64(), pa.list_(pa.float64()), [1, 2, 3], [[], [math.nan], [1.0, -0.0]]),
    ("long", ["null", "long"], pa.int8(), pa.int64(), [-128, 0, 127], [None, -(2**63), None]),
    ("long", "double", pa.uint64(), pa.int64(), [0, 2**63 - 1], [2**53 + 1, -(2**62)]),
])
def test_primitive_keys_and_values(key_schema: Any, value_schema: Any, arrow_key: pa.DataType, arrow_value: pa.DataType,
                                   keys: list[Any], values: list[Any]) -> None:
    count = min(len(keys), len(values))
    batch = pa.RecordBatch.from_arrays([pa.array(keys[:count], arrow_key), pa.array(values[:count], arrow_value)], names=["key", "value"])
    encoded = ColumnarEncoder(AvroCodec(key_schema, kind="key"), AvroCodec(value_schema)).encode(batch)
    assert encoded.vectorized
    assert encoded.keys.to_pylist() == [avro(key_schema, k) for k in batch.column(0).to_pylist()]
    assert encoded.values.to_pylist() == [avro(value_schema, v) for v in batch.column(1).to_pylist()]


def test_record_key_and_absent_value_fields_with_defaults() -> None:
    key_schema = {"type": "record", "name": "K", "fields": [{"name": "user", "type": "string"}, {"name": "day", "type": "int"}]}
    value_schema = {"type": "record", "name": "V", "fields": [
        {"name": "clicks", "type": "long"},
        {"name": "source", "type": "string", "default": "web"},
        {"name": "note", "type": ["null", "string"]},
        {"name": "rate", "type": ["double", "null"], "default": 0.25},
    ]}
    rows = [{"day": d, "clicks": d * 10, "user": u} for u, d in [("ann", 1), ("bob", -2), ("日本", 2**31 - 1)]]
    batch = pa.RecordBatch.from_pylist(rows, schema=pa.schema([("day", pa.int32()), ("clicks", pa.int64()), ("user", pa.string())]))
    encoded = encoder(key_schema, value_schema).encode(batch)
    assert encoded.vectorized
    assert encoded.keys.to_pylist() == [avro(key_schema, {"user": r["user"], "day": r["day"]}) for r in rows]
    assert encoded.values.to_pylist() == [
        avro(value_schema, {"clicks": r["clicks"], "source": "web", "note": None, "rate": 0.25}) for r in rows]


def test_pandas_frame_keeps_nan_and_takes_none_as_null() -> None:
    pd = pytest.importorskip("pandas")  # the spark extra brings it
    schema = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "double"}, {"name": "s", "type": ["null", "string"]}]}
    frame = pd.DataFrame({"key": [1, 2, 3], "x": [0.5, float("nan"), -1.0], "s": ["a", None, "c"]})
    encoded = encoder("long", schema, key_field="key").encode(frame)
    assert encoded.vectorized
    assert encoded.values.to_pylist() == [avro(schema, {"x": r["x"], "s": r["s"]}) for r in frame.to_dict("records")]


# --- batches the vectorized path does not take, encoded record by record -----------------------


def test_types_it_cannot_prove_fall_back_to_fastavro_record_by_record() -> None:
    value_schema = {"type": "record", "name": "V", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "either", "type": ["null", "string", "long"]},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
    ]}
    rows = [{"key": i, "at": 1_700_000_000_000 + i, "either": [None, "s", "7"][i % 3], "attrs": {"a": i}} for i in range(9)]
    batch = pa.RecordBatch.from_pylist(rows, schema=pa.schema([
        ("key", pa.int64()), ("at", pa.int64()), ("either", pa.string()), ("attrs", pa.struct([("a", pa.int64())]))]))
    encoded = encoder("long", value_schema, key_field="key").encode(batch)
    assert not encoded.vectorized
    assert encoded.values.to_pylist() == [
        avro(value_schema, {k: v for k, v in r.items() if k != "key"}) for r in batch.to_pylist()]


# --- bad rows: the first one fails the batch, as the single-process push words it ---------------


def cli_error(value_schema: Any, rows: list[dict[str, Any]], key_schema: Any = "long", key_field: str = "id") -> str:
    """What the single-process push's converter says about the first bad row."""
    converter = RecordConverter(AvroCodec(key_schema, kind="key"), AvroCodec(value_schema), key_field=key_field, file="in.parquet")
    for i, row in enumerate(rows):
        try:
            converter.convert(f"record {i + 1}", row)
        except InvalidInputError as exc:
            return exc.message
    raise AssertionError("no row is invalid")


SMALL = {"type": "record", "name": "S", "fields": [
    {"name": "n", "type": "int"}, {"name": "c", "type": COLOR}, {"name": "d", "type": {"type": "fixed", "name": "D", "size": 2}},
    {"name": "tags", "type": {"type": "array", "items": "string"}}]}
SMALL_ARROW = pa.schema([("id", pa.int64()), ("n", pa.int64()), ("c", pa.string()), ("d", pa.binary()), ("tags", pa.list_(pa.string()))])


def good(i: int) -> dict[str, Any]:
    return {"id": i, "n": i, "c": "RED", "d": b"ab", "tags": ["t"]}


@pytest.mark.parametrize(("bad", "arrow_schema", "message"), [
    ({"n": 2**31}, SMALL_ARROW, "in.parquet: record 5: value does not fit the value schema"),
    ({"n": None}, SMALL_ARROW, "in.parquet: record 5: value does not fit"),
    ({"c": "PURPLE"}, SMALL_ARROW, "in.parquet: record 5: value does not fit"),
    ({"d": b"abc"}, SMALL_ARROW, "in.parquet: record 5: value does not fit"),
    ({"tags": None}, SMALL_ARROW, "in.parquet: record 5: value does not fit"),
    ({"tags": ["ok", None]}, SMALL_ARROW, "in.parquet: record 5: value does not fit"),
    ({"id": None}, SMALL_ARROW, "in.parquet: record 5: missing key field 'id'"),
    ({"extra": 1}, SMALL_ARROW.append(pa.field("extra", pa.int64())), "in.parquet: record 1: field(s) not in the value schema: extra"),
])
def test_bad_rows_fail_with_the_position_and_reason_of_the_cli(bad: dict[str, Any], arrow_schema: pa.Schema, message: str) -> None:
    rows = [good(i) for i in range(9)]
    rows[4] = {**rows[4], **bad}
    rows = [{name: row.get(name) for name in arrow_schema.names} for row in rows]
    batch = pa.RecordBatch.from_pylist(rows, schema=arrow_schema)
    enc = encoder("long", SMALL, file="in.parquet")
    with pytest.raises(InvalidInputError) as caught:
        enc.encode(batch, lambda i: f"record {i + 1}")
    assert caught.value.message.startswith(message)
    assert caught.value.message == cli_error(SMALL, rows)
    details = caught.value.details  # an extra field's error also lists the fields (for a schema proposal)
    assert {k: details[k] for k in ("file", "position")} == {"file": "in.parquet", "position": caught.value.message.split(": ")[1]}


def test_missing_columns_and_wrong_types_are_the_cli_errors() -> None:
    rows = [{"id": 1, "n": 1, "c": "RED", "d": b"ab"}]  # no "tags", which has no default
    batch = pa.RecordBatch.from_pylist(rows)
    with pytest.raises(InvalidInputError, match="missing field 'tags' required by the value schema"):
        encoder("long", SMALL, file="in.parquet").encode(batch)
    floats = pa.RecordBatch.from_pylist([{**good(1), "n": 1.0}])  # a float where an int belongs
    with pytest.raises(InvalidInputError) as caught:
        encoder("long", SMALL, file="in.parquet").encode(floats)
    assert caught.value.message == cli_error(SMALL, floats.to_pylist())


def test_nulls_inside_a_null_struct_are_not_errors() -> None:
    """A null `work` address has null children; only non-null rows are checked."""
    schema = {"type": "record", "name": "V", "fields": [{"name": "work", "type": ["null", ADDRESS]}]}
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, 2]), pa.StructArray.from_arrays([pa.array(["x", None]), pa.array([1, None], pa.int32())], names=["city", "zip"],
                                                       mask=pa.array([False, True]))],
        names=["id", "work"])
    encoded = encoder("long", schema).encode(batch)
    assert encoded.vectorized
    assert encoded.values.to_pylist() == [avro(schema, {"work": {"city": "x", "zip": 1}}), avro(schema, {"work": None})]


def test_invalid_utf8_in_a_string_column_is_not_passed_through() -> None:
    raw = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, 2], np.int32)), pa.py_buffer(b"\xff\xfe")])
    batch = pa.RecordBatch.from_arrays([pa.array([1]), raw], names=["key", "value"])
    with pytest.raises(InvalidInputError, match=r"^in.avro: record 1: cannot read the row: .*utf-8"):
        ColumnarEncoder(AvroCodec("long", kind="key"), AvroCodec("string"), file="in.avro").encode(batch)


# --- records of a row format (JSON lines), put in columns -----------------------------------------

RECORD_SCHEMA = {"type": "record", "name": "R", "fields": [
    {"name": "name", "type": "string"},
    {"name": "score", "type": "double"},
    {"name": "visits", "type": "int", "default": 7},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "note", "type": ["null", "string"]},
    {"name": "rate", "type": ["double", "null"], "default": 0.5},
    {"name": "home", "type": ["null", ADDRESS], "default": None},
    {"name": "embedding", "type": {"type": "array", "items": "double"}},
]}


def cli_push(records: list[dict[str, Any]], value_schema: Any = RECORD_SCHEMA) -> tuple[list[bytes], list[bytes]] | str:
    """What the single-process push does with the records: the bytes it writes, or its error."""
    key_codec, value_codec = AvroCodec("long", kind="key"), AvroCodec(value_schema)
    converter = RecordConverter(key_codec, value_codec, key_field="id", file="in.jsonl")
    keys, values = [], []
    for i, record in enumerate(records):
        try:
            key, value = converter.convert(f"line {i + 1}", record)
        except InvalidInputError as exc:
            return exc.message
        keys.append(avro("long", key))
        values.append(avro(value_schema, value))
    return keys, values


def json_row(rng: random.Random, i: int) -> dict[str, Any]:
    row: dict[str, Any] = {"id": i, "name": rng.choice(STRINGS), "score": rng.choice([1, -2, 0.25, 1e300, 2**52]),
                           "embedding": [rng.choice([0.5, 3, -1e-9]) for _ in range(rng.randrange(4))]}
    for name, choices in (("visits", [0, -5, 2**31 - 1]), ("tags", [[], ["a", "日"]]), ("note", [None, "n"]),
                          ("rate", [1.25, 3]), ("home", [None, {"city": "x", "zip": -1}, {"city": "y", "zip": 5}])):
        if rng.random() < 0.6:
            row[name] = rng.choice(choices)  # else absent: the field's default (or null)
    return row


@pytest.mark.parametrize("seed", range(20))
def test_json_records_are_encoded_in_columns_like_the_single_process_push(seed: int) -> None:
    rng = random.Random(seed)
    records = [json_row(rng, i) for i in range(rng.randrange(1, 80))]
    enc = encoder("long", RECORD_SCHEMA, file="in.jsonl")
    encoded = enc.encode_records([(f"line {i + 1}", r) for i, r in enumerate(records)])
    assert (encoded.keys.to_pylist(), encoded.values.to_pylist()) == cli_push(records)
    assert encoded.vectorized


@pytest.mark.parametrize(("change", "why"), [
    ({"score": True}, "a boolean among numbers is no double"),
    ({"visits": 1.0}, "1.0 is no int"),
    ({"visits": 2**31}, "out of int range"),
    ({"rate": None}, "a null where the field's default is 0.5: valid, and not the default"),
    ({"visits": None}, "a null where the default is 7"),
    ({"name": None}, "a null for a string"),
    ({"home": {"city": "x"}}, "a nested field absent, without a default"),
    ({"home": {"city": "x", "zip": None}}, "a nested null: valid, but in columns it looks like an absent field"),
    ({"home": {"city": "x", "zip": 1, "extra": 2}}, "a nested field unknown"),
    ({"unknown": 1}, "a field unknown, in a later record only"),
    ({"embedding": [1.5, False]}, "a boolean among the floats of an array"),
    ({"tags": "abc"}, "a string for an array"),
    ({"id": "12"}, "a string key"),
])
def test_json_records_the_columns_cannot_prove_are_judged_one_by_one(change: dict[str, Any], why: str) -> None:
    rng = random.Random(1)
    records = [json_row(rng, i) for i in range(30)]
    records[17] = {**records[17], **change}
    encoded_or_error: Any
    try:
        encoded = encoder("long", RECORD_SCHEMA, file="in.jsonl").encode_records([(f"line {i + 1}", r) for i, r in enumerate(records)])
        encoded_or_error = (encoded.keys.to_pylist(), encoded.values.to_pylist())
    except InvalidInputError as exc:
        encoded_or_error = exc.message
    assert encoded_or_error == cli_push(records), why
