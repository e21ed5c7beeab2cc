"""The binary frames of the storage server's batch read (``POST /v1/batch/{store}/{version}``).

Request: per key ``u32 partition, u32 key length, key bytes``. Answer: per key, in the
same order, ``i32 schema id (-1 = missing), u32 length, value bytes``. All big-endian.
A binary format because a batch may carry thousands of keys and JSON would force
base64 of every key and value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from venice.errors import UnavailableError

__all__ = ["MISSING_SCHEMA_ID", "decode_batch_response", "encode_batch_request"]

MISSING_SCHEMA_ID = -1

_REQUEST_HEAD = struct.Struct(">II")
_ANSWER_HEAD = struct.Struct(">iI")

Hit = tuple[int, bytes]
"""``(value schema id, value bytes)`` of a found key."""


def encode_batch_request(items: Iterable[tuple[int, bytes]]) -> bytes:
    """Frames for ``(partition, key bytes)`` pairs."""
    parts: list[bytes] = []
    for partition, key in items:
        parts.append(_REQUEST_HEAD.pack(partition, len(key)))
        parts.append(key)
    return b"".join(parts)


def decode_batch_response(body: bytes, count: int) -> list[Hit | None]:
    """One entry per requested key: its hit, or ``None`` when missing.

    A truncated or overlong body means a broken replica, so it raises a retriable
    UnavailableError and the router reads the keys elsewhere.
    """
    results: list[Hit | None] = []
    append = results.append
    unpack = _ANSWER_HEAD.unpack_from
    offset, size = 0, len(body)
    head = _ANSWER_HEAD.size
    for index in range(count):
        end = offset + head
        if end > size:
            raise UnavailableError(f"batch answer truncated after {index} of {count} keys")
        schema_id, length = unpack(body, offset)
        offset = end + length
        if offset > size:
            raise UnavailableError(f"batch answer truncated inside key {index} of {count}")
        append(None if schema_id == MISSING_SCHEMA_ID else (schema_id, body[end:offset]))
    if offset != size:
        raise UnavailableError(f"batch answer has {size - offset} unexpected trailing bytes")
    return results
