"""The data set both sides hold, and the files the loaders and load generators read.

Keys are ``key:%012d`` (the format redis-benchmark's ``key:__rand_int__`` expands to, so
its random keys all exist); values are 100 ASCII bytes. Venice stores them as a store
with Avro key schema ``string`` and value schema ``string``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import orjson

__all__ = [
    "STORE",
    "VALUE_BYTES",
    "batch_request_lines",
    "key",
    "router_get_lines",
    "sample_indexes",
    "server_get_lines",
    "value",
    "write_jsonl",
    "write_resp",
]

STORE = "bench"
VALUE_BYTES = 100
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def key(i: int) -> str:
    return f"key:{i:012d}"


def value(i: int) -> str:
    """100 ASCII characters, different for every key."""
    head = f"v{i:012d}:"
    shift = i % len(_ALPHABET)
    body = (_ALPHABET[shift:] + _ALPHABET[:shift]) * 2
    return (head + body)[:VALUE_BYTES]


def write_jsonl(path: Path, count: int) -> Path:
    """``{"key": ..., "value": ...}`` per line: the input of ``venice push``."""
    with path.open("wb") as out:
        for start in range(0, count, 10_000):
            out.write(
                b"".join(
                    orjson.dumps({"key": key(i), "value": value(i)}) + b"\n"
                    for i in range(start, min(count, start + 10_000))
                )
            )
    return path


def _resp_set(k: str, v: str) -> bytes:
    kb, vb = k.encode(), v.encode()
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(kb), kb, len(vb), vb)


def write_resp(path: Path, count: int) -> Path:
    """The same records as RESP ``SET`` commands: the input of ``redis-cli --pipe``."""
    with path.open("wb") as out:
        for start in range(0, count, 10_000):
            out.write(b"".join(_resp_set(key(i), value(i)) for i in range(start, min(count, start + 10_000))))
    return path


def sample_indexes(count: int, size: int, seed: int = 11) -> list[int]:
    """``size`` uniformly random key indexes (with repeats) out of ``count``."""
    rng = random.Random(seed)
    return [rng.randrange(count) for _ in range(size)]


def server_get_lines(indexes: Sequence[int], version: int, partition_of: object, encode_key: object) -> Iterator[str]:
    """``GET /v1/{store}/{version}/{partition}/{key b64url}``: a storage server's read path.

    ``encode_key(text) -> bytes`` is the store's Avro key codec; ``partition_of(bytes)``
    the partitioner.
    """
    for i in indexes:
        kb = encode_key(key(i))  # type: ignore[operator]
        b64 = base64.urlsafe_b64encode(kb).rstrip(b"=").decode()
        yield f"GET /v1/{STORE}/{version}/{partition_of(kb)}/{b64}"  # type: ignore[operator]


def router_get_lines(indexes: Sequence[int]) -> Iterator[str]:
    for i in indexes:
        yield f"GET /storage/{STORE}/{quote(key(i), safe=':')}"


def batch_request_lines(indexes: Sequence[int], batch: int) -> Iterator[str]:
    """``POST /storage/{store} {"keys": [...]}`` with ``batch`` keys per request."""
    for start in range(0, len(indexes) - batch + 1, batch):
        keys = [key(i) for i in indexes[start : start + batch]]
        yield f"POST /storage/{STORE} " + orjson.dumps({"keys": keys}).decode()
