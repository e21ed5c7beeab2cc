"""Avro schemas of a store and the (de)serialization of keys and values.

Keys and values travel and rest as Avro binary (schemaless: the schema is known from
the store, the value schema id from the record's ``schema-id`` header). This module is
the one place that talks to fastavro; its errors come out as :mod:`venice.errors`.
"""

from __future__ import annotations

import base64
import io
import math
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


class AvroCodec:
    """Encodes, decodes and validates data of one Avro schema."""

    def __init__(self, schema: Any, *, kind: str = "value") -> None:
        self.schema = parse_schema(schema)
        self.kind = kind
        self.type_name = _type_name(self.schema)
        self._field_names: frozenset[str] | None = None
        if isinstance(self.schema, dict) and self.schema.get("type") == "record":
            self._field_names = frozenset(f["name"] for f in self.schema["fields"])

    @property
    def field_names(self) -> frozenset[str] | None:
        """Top-level field names when the schema is a record, else ``None``."""
        return self._field_names

    def problem(self, datum: Any) -> str | None:
        """Why ``datum`` does not fit the schema, or ``None`` when it does."""
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
        reason = self.problem(datum)
        if reason is not None:
            raise (InvalidKeyError if self.kind == "key" else InvalidValueError)(f"{self.kind} {reason}")
        return self.encode_unchecked(datum)

    def encode_unchecked(self, datum: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, datum)
        return buf.getvalue()

    def decode(self, data: bytes) -> Any:
        try:
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
