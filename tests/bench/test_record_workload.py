"""The record workload's data set (bench/records.py): deterministic, shaped as the issue asks,
and the same records in all three files, read back by independent readers (the push's own
CSV reader and converter, pyarrow, and a RESP parse + orjson)."""

from __future__ import annotations

from pathlib import Path

import fastavro
import orjson
import pyarrow.parquet as pq

from bench import records as rec
from venice.push.formats import open_records
from venice.push.records import RecordConverter
from venice.schema import AvroCodec


def test_deterministic_and_shaped_like_real_records() -> None:
    a, b = rec.generate(300), rec.generate(300)
    assert [a.row(i) for i in range(300)] == [b.row(i) for i in range(300)]
    assert rec.generate(300, seed=2).row(5) != a.row(5)
    assert 15 <= len(rec.VALUE_SCHEMA["fields"]) <= 20
    rows = [a.row(i) for i in range(300)]
    for name in ("ratio", "city", "clicks", "segment"):
        nulls = sum(r[name] is None for r in rows)
        assert 5 < nulls < 100, name  # about 10% nulls
    assert all(len(r["embedding"]) == rec.EMBED for r in rows)
    # every row is a valid datum of the value schema
    parsed = fastavro.parse_schema(rec.VALUE_SCHEMA)
    assert all(fastavro.validation.validate(r, parsed, raise_errors=False) for r in rows)
    assert rec.key(42) == "rec:000000000042"  # redis-benchmark's rec:__rand_int__


def test_csv_reads_back_through_the_push_reader_as_the_rows(tmp_path: Path) -> None:
    made = rec.generate(200)
    path = made.write_csv(tmp_path / "r.csv")
    text = path.read_text()
    assert ",NA," in text and ",," in text  # both spellings of a null a user's export has
    converter = RecordConverter(AvroCodec("string", kind="key"), AvroCodec(rec.VALUE_SCHEMA), text_cells=True)
    with open_records(path) as source:
        got = [converter.convert(pos, record) for pos, record in source]
    assert [k for k, _ in got] == [rec.key(i) for i in range(200)]
    assert [v for _, v in got] == [made.expected(i) for i in range(200)]


def test_parquet_and_resp_hold_the_same_records(tmp_path: Path) -> None:
    made = rec.generate(120)
    table = pq.read_table(made.write_parquet(tmp_path / "r.parquet")).to_pylist()
    assert [row.pop("key") for row in table] == [rec.key(i) for i in range(120)]
    assert table == [made.expected(i) for i in range(120)]
    resp = made.write_resp(tmp_path / "r.resp").read_bytes().split(b"\r\n")
    assert resp[:3] == [b"*3", b"$3", b"SET"]
    keys, values = resp[4::7], resp[6::7]
    assert [k.decode() for k in keys] == [rec.key(i) for i in range(120)]
    assert [orjson.loads(v) for v in values] == [made.expected(i) for i in range(120)]


def test_router_lines() -> None:
    assert list(rec.router_get_lines("s", [3])) == ["GET /storage/s/rec:000000000003"]
