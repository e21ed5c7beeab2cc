"""``python -m bench.evolution``: microseconds per call of value decoding and partial updates.

Readers decode every value they answer (:class:`venice.evolution.ValueDecoder`) and
storage replicas apply every partial update (:mod:`venice.writecompute`), so both are
hot. This prints, for a typical 8-field record, our path next to the alternatives it
was chosen over. Single-threaded, in-process; each figure is the best of several runs
(the machine is shared, so the minimum is the least disturbed one). Not a test.
"""

from __future__ import annotations

import argparse
import io
import timeit
from collections.abc import Callable
from typing import Any

import fastavro

from venice.evolution import ValueDecoder
from venice.schema import AvroCodec
from venice.writecompute import Updater, WriteCompute, ops_to_update

V1: dict[str, Any] = {
    "type": "record",
    "name": "Member",
    "namespace": "com.acme",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "visits", "type": "long", "default": 0},
        {"name": "score", "type": "double", "default": 0.0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "attrs", "type": {"type": "map", "values": "long"}, "default": {}},
        {"name": "active", "type": "boolean", "default": True},
    ],
}
V2: dict[str, Any] = {**V1, "fields": [*V1["fields"], {"name": "country", "type": "string", "default": "NO"},
                                       {"name": "age", "type": ["null", "int"], "default": None}]}  # fmt: skip
VALUE = {"id": 12345, "name": "Ann Example", "email": "ann@example.com", "visits": 42, "score": 3.5,
         "tags": ["a", "bb", "ccc"], "attrs": {"x": 1, "y": 2}, "active": True}  # fmt: skip
OPS = {"increment": {"visits": 1}, "add_to_list": {"tags": ["dd"]}, "put_in_map": {"attrs": {"z": 3}}}


def encode(schema: Any, datum: Any) -> bytes:
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, fastavro.parse_schema(schema), datum)
    return stream.getvalue()


def best_us(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000, help="calls per run (default 20000)")
    n = parser.parse_args(argv).number

    v1_bytes, v2_bytes = encode(V1, VALUE), encode(V2, {**VALUE, "country": "SE", "age": 30})
    decoder = ValueDecoder({1: V1, 2: V2})
    hinted1, hinted2 = fastavro.parse_schema(V1), fastavro.parse_schema(V2)
    unhinted2 = fastavro.parse_schema(V2, _write_hint=False)
    codec2 = AvroCodec(V2)
    string_decoder = ValueDecoder({1: "string"})
    string_bytes = encode("string", "x" * 100)
    read = fastavro.schemaless_reader
    assert decoder.decode(1, v1_bytes) == {**read(io.BytesIO(v1_bytes), hinted1, hinted2)}

    compute = WriteCompute(V2)
    update = compute.from_ops(OPS)
    update_bytes = compute.encode_update(update)
    decoded_update = compute.decode_update(update_bytes)
    current = compute.decode_value(v2_bytes)
    updater = Updater({1: V1, 2: V2})
    updater.apply(2, update_bytes, (1, v1_bytes))

    rows = [
        ("decode, newest schema: ValueDecoder.decode", lambda: decoder.decode(2, v2_bytes)),
        ("  fastavro, hinted parse (what it uses)", lambda: read(io.BytesIO(v2_bytes), hinted2, None)),
        ("  fastavro, _write_hint=False parse", lambda: read(io.BytesIO(v2_bytes), unhinted2, None)),
        ("  AvroCodec.decode (venice.schema)", lambda: codec2.decode(v2_bytes)),
        ("decode, older schema: ValueDecoder.decode", lambda: decoder.decode(1, v1_bytes)),
        ("  fastavro resolving reader, hinted", lambda: read(io.BytesIO(v1_bytes), hinted1, hinted2)),
        ("decode, primitive string schema", lambda: string_decoder.decode(1, string_bytes)),
        ("ops_to_update (3 ops)", lambda: compute.from_ops(OPS)),
        ("decode_update", lambda: compute.decode_update(update_bytes)),
        ("apply (3 ops on a decoded value)", lambda: compute.apply(decoded_update, current)),
        ("encode_value", lambda: compute.encode_value(current)),
        ("Updater.apply, same schema (bytes in/out)", lambda: updater.apply(2, update_bytes, (2, v2_bytes))),
        ("Updater.apply, value of the older schema", lambda: updater.apply(2, update_bytes, (1, v1_bytes))),
        ("ops_to_update, module-level (cached)", lambda: ops_to_update(OPS, V2)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  µs/call")
    for name, call in rows:
        print(f"{name:<{width}}  {best_us(call, n):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
