"""The record workload: real-looking records beside the 100-byte strings.

Users push records, not strings: rows of 15-20 fields from CSV or Parquet. This module
generates such a data set deterministically (a seed, numpy) and writes it the three
ways the two sides load it:

* CSV (the input of ``venice push``; nullable cells left empty or written ``NA``, the
  float array as JSON text, as a spreadsheet export would have it);
* Parquet (the same rows, typed);
* RESP ``SET rec:%012d <the record as JSON>`` (the input of ``redis-cli --pipe``).

Keys are ``rec:%012d``: redis-benchmark expands ``rec:__rand_int__`` to exactly these, so
its random keys all exist on the Redis side. Venice stores them in :data:`STORE` (key
schema ``string``, value schema :data:`VALUE_SCHEMA`, 18 fields: ints, longs, doubles,
a boolean, short strings, nullable fields, a small float array).

The router answers a GET with the record as JSON; :func:`expected` gives the record of
row ``i`` as that JSON decodes (floats of the array rounded through float32, as Avro
``float`` stores them), so a check compares exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

__all__ = [
    "EMBED",
    "STORE",
    "VALUE_SCHEMA",
    "Records",
    "generate",
    "key",
    "router_get_lines",
]

STORE = "bench-records"
EMBED = 4
"""Length of the float array of every record."""
_NULL_SHARE = 0.1
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa")
_COUNTRIES = ("US", "DE", "FR", "IN", "BR", "JP", "GB", "CA", "NL", "SE")
_CITIES = ("Berlin", "Paris", "Mumbai", "Sao Paulo", "Tokyo", "London", "Toronto", "Amsterdam", "Austin", "Oslo")

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Member",
    "namespace": "bench",
    "fields": [
        {"name": "member_id", "type": "long"},
        {"name": "age", "type": "int"},
        {"name": "score", "type": "double"},
        {"name": "visits", "type": "long"},
        {"name": "ratio", "type": ["null", "double"], "default": None},
        {"name": "name", "type": "string"},
        {"name": "country", "type": "string"},
        {"name": "city", "type": ["null", "string"], "default": None},
        {"name": "active", "type": "boolean"},
        {"name": "rank", "type": "int"},
        {"name": "balance", "type": "double"},
        {"name": "clicks", "type": ["null", "long"], "default": None},
        {"name": "category", "type": "string"},
        {"name": "segment", "type": ["null", "string"], "default": None},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "updated_ms", "type": "long"},
        {"name": "weight", "type": "double"},
        {"name": "level", "type": "int"},
    ],
}
FIELDS = [f["name"] for f in VALUE_SCHEMA["fields"]]


def key(i: int) -> str:
    return f"rec:{i:012d}"


@dataclass
class Records:
    """``count`` records as columns (numpy arrays; ``None`` entries of object columns are nulls)."""

    count: int
    columns: dict[str, np.ndarray]

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as Python values (what a push of the Parquet file stores)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            cell = self.columns[name][i]
            if name == "embedding":
                out[name] = [float(x) for x in cell]
            elif cell is None:
                out[name] = None
            elif isinstance(cell, np.bool_):
                out[name] = bool(cell)
            elif isinstance(cell, np.integer):
                out[name] = int(cell)
            elif isinstance(cell, np.floating):
                out[name] = float(cell)
            else:
                out[name] = cell
        return out

    def expected(self, i: int) -> dict[str, Any]:
        """The record of row ``i`` as the router's JSON answer decodes (same as :meth:`row`:
        the array is float32 already, so its Python floats are what Avro ``float`` keeps)."""
        return self.row(i)

    # -- files ---------------------------------------------------------------------------
    def write_csv(self, path: Path) -> Path:
        """A header ``key,member_id,...`` and one line per record; nulls alternate between an
        empty cell and ``NA`` (both mean null to ``venice push``); the array is JSON text."""
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["key", *FIELDS])
            for start in range(0, self.count, 10_000):
                rows = []
                for i in range(start, min(self.count, start + 10_000)):
                    row = self.row(i)
                    cells: list[Any] = [key(i)]
                    for name in FIELDS:
                        cell = row[name]
                        if cell is None:
                            cells.append("" if i % 2 else "NA")
                        elif name == "embedding":
                            cells.append(orjson.dumps(cell).decode())
                        elif isinstance(cell, bool):
                            cells.append("true" if cell else "false")
                        else:
                            cells.append(repr(cell) if isinstance(cell, float) else cell)
                    rows.append(cells)
                writer.writerows(rows)
        return path

    def write_parquet(self, path: Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "member_id": pa.int64(), "age": pa.int32(), "score": pa.float64(), "visits": pa.int64(),
            "ratio": pa.float64(), "name": pa.string(), "country": pa.string(), "city": pa.string(),
            "active": pa.bool_(), "rank": pa.int32(), "balance": pa.float64(), "clicks": pa.int64(),
            "category": pa.string(), "segment": pa.string(), "embedding": pa.list_(pa.float32()),
            "updated_ms": pa.int64(), "weight": pa.float64(), "level": pa.int32(),
        }
        arrays = [pa.array([key(i) for i in range(self.count)], pa.string())]
        for name in FIELDS:
            column = self.columns[name]
            if name == "embedding":
                arrays.append(pa.array(list(column), types[name]))
            else:
                arrays.append(pa.array(column.tolist() if column.dtype == object else column, types[name]))
        table = pa.Table.from_arrays(arrays, names=["key", *FIELDS])
        pq.write_table(table, path, row_group_size=65_536)
        return path

    def write_resp(self, path: Path) -> Path:
        """``SET rec:... <JSON>`` per record: the input of ``redis-cli --pipe``."""
        with path.open("wb") as out:
            for start in range(0, self.count, 10_000):
                buf = io.BytesIO()
                for i in range(start, min(self.count, start + 10_000)):
                    kb, vb = key(i).encode(), orjson.dumps(self.row(i))
                    buf.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(kb), kb, len(vb), vb))
                out.write(buf.getvalue())
        return path


def _nullable(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    out = values.astype(object)
    out[rng.random(len(values)) < _NULL_SHARE] = None
    return out


def generate(count: int, seed: int = 1313) -> Records:
    """``count`` records, the same for the same ``(count, seed)``."""
    rng = np.random.default_rng(seed)
    words = np.array(_WORDS, dtype=object)
    first = words[rng.integers(0, len(_WORDS), count)]
    second = words[rng.integers(0, len(_WORDS), count)]
    names = np.array([f"{a}-{b}" for a, b in zip(first, second, strict=True)], dtype=object)
    columns: dict[str, np.ndarray] = {
        "member_id": np.arange(count, dtype=np.int64) * 7919 + 1_000_000_007,
        "age": rng.integers(18, 90, count).astype(np.int32),
        "score": np.round(rng.normal(50.0, 15.0, count), 6),
        "visits": rng.integers(0, 10**9, count).astype(np.int64),
        "ratio": _nullable(rng, np.round(rng.random(count), 6)),
        "name": names,
        "country": np.array(_COUNTRIES, dtype=object)[rng.integers(0, len(_COUNTRIES), count)],
        "city": _nullable(rng, np.array(_CITIES, dtype=object)[rng.integers(0, len(_CITIES), count)]),
        "active": rng.random(count) < 0.7,
        "rank": rng.integers(-1000, 1000, count).astype(np.int32),
        "balance": np.round(rng.normal(1000.0, 400.0, count), 2),
        "clicks": _nullable(rng, rng.integers(0, 10**12, count).astype(np.int64)),
        "category": words[rng.integers(0, 8, count)],
        "segment": _nullable(rng, words[rng.integers(8, 16, count)]),
        "embedding": np.round(rng.random((count, EMBED)), 3).astype(np.float32),
        "updated_ms": 1_700_000_000_000 + rng.integers(0, 10**10, count).astype(np.int64),
        "weight": np.round(rng.random(count) * 100, 4),
        "level": rng.integers(1, 50, count).astype(np.int32),
    }
    # object columns of python numbers are easier to compare exactly as python types
    for name in ("ratio", "clicks"):
        columns[name] = np.array([None if v is None else (float(v) if name == "ratio" else int(v)) for v in columns[name]],
                                 dtype=object)
    return Records(count, columns)


def router_get_lines(store: str, indexes: Sequence[int]) -> Iterator[str]:
    for i in indexes:
        yield f"GET /storage/{store}/{quote(key(i), safe=':')}"
