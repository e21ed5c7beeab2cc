"""Regenerate the bundled sample data: ``python -m venice.data.make_sample``.

``member_features.jsonl.gz`` holds 5000 made-up member-feature records, the kind of
derived data a nightly job would push (a key, a few scalar features, an embedding,
and a field that is sometimes null and sometimes absent), so quickstarts, demos and
tests have realistic input without anything to download. The generator is seeded and
the gzip header carries no timestamp, so the output is byte-for-byte reproducible.

``member_features.avsc`` is the matching value schema (``member_id`` is the key, a
``long``): ``venice store create --name members --key-schema long
--value-schema @venice/data/member_features.avsc``.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
RECORDS = 5000
SEED = 20240501
COUNTRIES = [("us", 30), ("in", 18), ("br", 8), ("gb", 7), ("fr", 5), ("de", 5), ("ca", 4),
             ("mx", 4), ("cn", 4), ("au", 3), ("es", 3), ("it", 3), ("nl", 2), ("jp", 2), ("ng", 2)]

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "MemberFeatures",
    "namespace": "com.example.features",
    "doc": "Features of one member; the key is member_id (long).",
    "fields": [
        {"name": "country", "type": "string", "doc": "ISO 3166-1 alpha-2, lower case"},
        {"name": "age", "type": "int"},
        {"name": "engagement_score", "type": "double", "doc": "0..1"},
        {"name": "sessions_7d", "type": "int"},
        {"name": "embedding", "type": {"type": "array", "items": "double"}, "doc": "8 dimensions"},
        {"name": "last_active_days", "type": ["null", "int"], "default": None,
         "doc": "days since last activity; null (or absent) when never active"},
    ],
}


def member(rng: random.Random, member_id: int) -> dict[str, Any]:
    """One member: engagement drives sessions and recency, as in real activity data."""
    engagement = rng.betavariate(2, 5)
    record: dict[str, Any] = {
        "member_id": member_id,
        "country": rng.choices([c for c, _ in COUNTRIES], weights=[w for _, w in COUNTRIES])[0],
        "age": max(18, min(90, int(rng.gauss(36, 11)))),
        "engagement_score": round(engagement, 4),
        "sessions_7d": int(rng.expovariate(1 / (1 + 40 * engagement))),
        "embedding": [round(rng.gauss(0, 0.5), 4) for _ in range(8)],
    }
    roll = rng.random()
    if roll < 0.85:
        record["last_active_days"] = int(rng.expovariate(1 / (1 + 60 * (1 - engagement))))
    elif roll < 0.93:
        record["last_active_days"] = None
    # else: the field is absent, as when an upstream job does not emit it
    return record


def main() -> None:
    rng = random.Random(SEED)
    ids = rng.sample(range(1_000_000, 100_000_000), RECORDS)
    lines = b"".join(orjson.dumps(member(rng, member_id)) + b"\n" for member_id in ids)
    with open(HERE / "member_features.jsonl.gz", "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as out:
        out.write(lines)
    (HERE / "member_features.avsc").write_bytes(orjson.dumps(VALUE_SCHEMA, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
