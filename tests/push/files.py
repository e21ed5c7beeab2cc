"""Writing real input files of every format for the push tests."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

MEMBER_AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Member",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "emb", "type": {"type": "array", "items": "double"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
"""The Avro schema of the ``members`` records of tests/push/conftest.py."""


def gzip_file(path: Path) -> Path:
    """``path`` gzipped next to itself as ``path.gz``."""
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_avro(path: Path, schema: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)
    return path


def write_parquet(path: Path, records: list[dict[str, Any]], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path
