"""Wire format of records on version and real-time topics.

* Kafka key: the key serialized with the store's key schema (Avro binary).
* Kafka value: the value serialized with one of the store's value schemas (Avro binary),
  or null for a delete. Header ``schema-id`` holds that schema's id as ASCII digits
  (absent: 1).
* Partial updates (real-time topics of stores with write compute): header ``venice-op``
  is ``update`` and the value is the Avro binary of the *update schema* derived from
  value schema ``schema-id`` (see :mod:`venice.writecompute` and docs/hybrid.md).
* Partition: ``venice.partitioner.partition_for(key bytes, P)``, on version and
  real-time topics alike, so any Kafka producer can write a real-time topic.
* Control messages carry header ``venice-control`` whose value names the kind
  (``START_OF_PUSH``, ``END_OF_PUSH``). They have an empty key, a JSON value and are
  written to every partition. ``END_OF_PUSH`` says how many data records the push
  wrote to that partition (``{"records": N}``), so a server can check what it applied.

Real-time topics (``<store>_rt``, docs/hybrid.md) take data records only, from any
producer, so servers read their headers strictly (:func:`parse_schema_id`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from venice.structs import Message

__all__ = [
    "CONTROL_HEADER",
    "OP_HEADER",
    "SCHEMA_ID_HEADER",
    "UPDATE_OP",
    "ControlKind",
    "control_headers",
    "control_kind",
    "control_payload",
    "data_headers",
    "encode_control",
    "is_update",
    "parse_schema_id",
    "schema_id_of",
    "update_headers",
]

SCHEMA_ID_HEADER = "schema-id"
CONTROL_HEADER = "venice-control"
OP_HEADER = "venice-op"
"""Marks a real-time record that is not a whole value; its only value today is :data:`UPDATE_OP`."""
UPDATE_OP = b"update"
_MAX_SCHEMA_ID_DIGITS = 9


class ControlKind(str, Enum):
    START_OF_PUSH = "START_OF_PUSH"
    END_OF_PUSH = "END_OF_PUSH"


_HEADERS_BY_SCHEMA: dict[int, list[tuple[str, bytes]]] = {}


def data_headers(schema_id: int) -> list[tuple[str, bytes]]:
    headers = _HEADERS_BY_SCHEMA.get(schema_id)
    if headers is None:
        headers = _HEADERS_BY_SCHEMA[schema_id] = [(SCHEMA_ID_HEADER, str(schema_id).encode())]
    return headers


def update_headers(schema_id: int) -> list[tuple[str, bytes]]:
    """Headers of a partial update derived from value schema ``schema_id``."""
    return [(SCHEMA_ID_HEADER, str(schema_id).encode()), (OP_HEADER, UPDATE_OP)]


def control_headers(kind: ControlKind) -> list[tuple[str, bytes]]:
    return [(CONTROL_HEADER, kind.value.encode())]


def encode_control(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def control_kind(message: Message) -> ControlKind | None:
    """The control kind of ``message``, or ``None`` for a data record."""
    raw = message.header(CONTROL_HEADER)
    if raw is None:
        return None
    return ControlKind(raw.decode())


def control_payload(message: Message) -> dict[str, Any]:
    return orjson.loads(message.value) if message.value else {}


def schema_id_of(message: Message) -> int:
    raw = message.header(SCHEMA_ID_HEADER)
    return int(raw) if raw is not None else 1


def parse_schema_id(raw: bytes | None) -> int | None:
    """A ``schema-id`` header read strictly, as records from any producer must be:
    absent -> 1; ASCII digits naming an id >= 1 -> that id; anything else -> ``None``."""
    if raw is None:
        return 1
    if not 0 < len(raw) <= _MAX_SCHEMA_ID_DIGITS or not raw.isdigit():
        return None
    value = int(raw)
    return value if value >= 1 else None


def is_update(message: Message) -> bool:
    """Whether a real-time record is a partial update (header ``venice-op: update``)."""
    return message.header(OP_HEADER) == UPDATE_OP
