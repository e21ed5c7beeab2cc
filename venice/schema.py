"""Avro schemas of a store and the (de)serialization of keys and values.

Keys and values travel and rest as Avro binary (schemaless: the schema is known from
the store, the value schema id from the record's ``schema-id`` header). This module is
the one place that talks to fastavro; its errors come out as :mod:`venice.errors`.
"""

from __future__ import annotations

import base64
import io
import math
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import orjson
from fastavro.validation import ValidationError, validate

from venice.errors import InvalidKeyError, InvalidValueError, SchemaError

__all__ = ["AvroCodec", "json_default", "key_from_text", "parse_schema", "schema_to_json"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def parse_schema(schema: str | dict[str, Any] | list[Any]) -> Any:
    """Parse an Avro schema given as JSON text, a bare primitive name or a parsed object."""
    if isinstance(schema, str):
        text = schema.strip()
        if text in _PRIMITIVES:
            schema = text
        else:
            try:
                schema = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise SchemaError(f"schema is not valid JSON: {exc}") from exc
    if isinstance(schema, dict) and schema.get("type") == "record" and not isinstance(schema.get("fields"), list):
        raise SchemaError("invalid Avro schema: a record needs a 'fields' list")
    try:
        return fastavro.parse_schema(schema, _write_hint=False)
    except Exception as exc:  # fastavro raises several unrelated types here
        raise SchemaError(f"invalid Avro schema: {exc}") from exc


def schema_to_json(schema: Any) -> str:
    """Canonical-enough JSON text of a schema, for storage and display."""
    return orjson.dumps(schema).decode()


def json_default(obj: Any) -> Any:
    """orjson ``default=`` hook: Avro ``bytes``/``fixed`` become base64 text."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return "union"


# --- Primitive schemas without fastavro -------------------------------------------------
# Keys are encoded on every read and values decoded on every answer; for the primitive
# schemas most keys (and many values) have, these direct codecs of the Avro binary
# encoding cost a fraction of fastavro's per-call set-up (a BytesIO, a schema walk).

_INT_RANGE = (-(1 << 31), (1 << 31) - 1)
_LONG_RANGE = (-(1 << 63), (1 << 63) - 1)
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_FLOAT_MAX = 3.4028234663852886e38


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the zig-zag varint at ``pos``."""
    b = data[pos]
    n = b & 0x7F
    shift = 7
    pos += 1
    while b & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        b = data[pos]
        n |= (b & 0x7F) << shift
        shift += 7
        pos += 1
    return (n >> 1) ^ -(n & 1), pos


def _decode_length_prefixed(data: bytes) -> bytes:
    # Lengths under 8192 (one or two varint bytes, the common case) without a loop.
    size = len(data)
    if size and data[0] < 0x80:
        n, pos = data[0], 1
    elif size > 1 and data[1] < 0x80:
        n, pos = (data[0] & 0x7F) | (data[1] << 7), 2
    else:
        n, pos = 1, 0
    if not n & 1 and size == pos + (n >> 1):
        return data[pos:]
    length, pos = _read_long(data, 0)
    if length < 0 or pos + length != len(data):
        raise ValueError(f"length {length} does not match the {len(data) - pos} bytes that follow")
    return data[pos:]


def _decode_integer(data: bytes, bounds: tuple[int, int]) -> int:
    value, pos = _read_long(data, 0)
    if pos != len(data) or not bounds[0] <= value <= bounds[1]:
        raise ValueError("not a single varint in range")
    return value


def _decode_fixed(data: bytes, codec: struct.Struct) -> float:
    if len(data) != codec.size:
        raise ValueError(f"expected {codec.size} bytes, got {len(data)}")
    return float(codec.unpack(data)[0])


def _decode_boolean(data: bytes) -> bool:
    if data not in (b"\x00", b"\x01"):
        raise ValueError("expected one byte 0 or 1")
    return data == b"\x01"


def _decode_null(data: bytes) -> None:
    if data:
        raise ValueError("null is zero bytes")
    return None


def _is_integer(datum: Any, bounds: tuple[int, int]) -> bool:
    return isinstance(datum, int) and not isinstance(datum, bool) and bounds[0] <= datum <= bounds[1]


def _is_number(datum: Any) -> bool:
    return isinstance(datum, (int, float)) and not isinstance(datum, bool)


# type -> (fits(datum), encode(datum) -> bytes, decode(bytes) -> datum)
_PRIMITIVE_CODECS: dict[str, tuple[Any, Any, Any]] = {
    "string": (
        lambda d: isinstance(d, str),
        lambda d: _zigzag(len(b := d.encode())) + b,
        lambda data: _decode_length_prefixed(data).decode("utf-8"),
    ),
    "bytes": (
        lambda d: isinstance(d, (bytes, bytearray)),
        lambda d: _zigzag(len(d)) + bytes(d),
        _decode_length_prefixed,
    ),
    "long": (lambda d: _is_integer(d, _LONG_RANGE), _zigzag, lambda data: _decode_integer(data, _LONG_RANGE)),
    "int": (lambda d: _is_integer(d, _INT_RANGE), _zigzag, lambda data: _decode_integer(data, _INT_RANGE)),
    "boolean": (lambda d: isinstance(d, bool), lambda d: b"\x01" if d else b"\x00", _decode_boolean),
    "float": (
        lambda d: _is_number(d) and (abs(d) <= _FLOAT_MAX or not math.isfinite(d)),
        lambda d: _FLOAT.pack(d),
        lambda data: _decode_fixed(data, _FLOAT),
    ),
    "double": (_is_number, lambda d: _DOUBLE.pack(d), lambda data: _decode_fixed(data, _DOUBLE)),
    "null": (lambda d: d is None, lambda d: b"", _decode_null),
}


class AvroCodec:
    """Encodes, decodes and validates data of one Avro schema."""

    def __init__(self, schema: Any, *, kind: str = "value") -> None:
        self.schema = parse_schema(schema)
        self.kind = kind
        self.type_name = _type_name(self.schema)
        self._field_names: frozenset[str] | None = None
        if isinstance(self.schema, dict) and self.schema.get("type") == "record":
            self._field_names = frozenset(f["name"] for f in self.schema["fields"])
        primitive = _PRIMITIVE_CODECS.get(self.schema) if isinstance(self.schema, str) else None
        self._fits: Callable[[Any], bool] | None = None
        self._encode: Callable[[Any], bytes] | None = None
        self._decode: Callable[[bytes], Any] | None = None
        if primitive is not None:
            self._fits, self._encode, self._decode = primitive

    @property
    def field_names(self) -> frozenset[str] | None:
        """Top-level field names when the schema is a record, else ``None``."""
        return self._field_names

    def problem(self, datum: Any) -> str | None:
        """Why ``datum`` does not fit the schema, or ``None`` when it does."""
        if self._fits is not None and self._fits(datum):
            return None  # a primitive that fits (one that does not gets fastavro's explanation)
        if self._field_names is not None and isinstance(datum, dict):
            extra = sorted(set(datum) - self._field_names)
            if extra:
                return f"field(s) not in the {self.kind} schema: {', '.join(extra)}"
        if self.type_name in ("float", "double") and isinstance(datum, float) and not math.isfinite(datum):
            return None
        try:
            validate(datum, self.schema, raise_errors=True)
        except ValidationError as exc:
            reasons = "; ".join(str(e) for e in exc.errors) if exc.errors else str(exc)
            return f"does not fit the {self.kind} schema: {reasons}"
        return None

    def encode(self, datum: Any) -> bytes:
        """Validate and serialize; raises InvalidKeyError / InvalidValueError."""
        if self._fits is not None and self._encode is not None and self._fits(datum):
            return self._encode(datum)
        reason = self.problem(datum)
        if reason is not None:
            raise (InvalidKeyError if self.kind == "key" else InvalidValueError)(f"{self.kind} {reason}")
        return self.encode_unchecked(datum)

    def encode_unchecked(self, datum: Any) -> bytes:
        if self._encode is not None and self._fits is not None and self._fits(datum):
            return self._encode(datum)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, datum)
        return buf.getvalue()

    def decode(self, data: bytes) -> Any:
        try:
            if self._decode is not None:
                return self._decode(data)
            return fastavro.schemaless_reader(io.BytesIO(data), self.schema, None)
        except Exception as exc:
            raise InvalidValueError(f"stored {self.kind} does not decode with its schema: {exc}") from exc


def key_from_text(codec: AvroCodec, text: str) -> Any:
    """Turn a key as written in a URL path into a datum of the key schema.

    Strings are taken verbatim; numbers and booleans are parsed; record and other
    complex keys are given as JSON.
    """
    kind = codec.type_name
    try:
        if kind == "string":
            return text
        if kind in ("int", "long"):
            return int(text, 10)
        if kind in ("float", "double"):
            return float(text)
        if kind == "boolean":
            if text in ("true", "false"):
                return text == "true"
            raise ValueError("expected true or false")
        if kind == "bytes":
            return text.encode()
        return orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidKeyError(f"key {text!r} is not a valid {kind}: {exc}") from exc
