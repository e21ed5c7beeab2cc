"""A store's value schemas as ingestion of real-time records needs them.

:class:`ValueSchemas` implements :class:`venice.ingestion.records.RecordSchemas`: it
checks that a value is exactly one datum of its schema (trailing bytes count as not
decoding), and applies partial updates: decode the update with the update schema
derived from its value schema (:mod:`venice.writecompute`), resolve the stored value to
that schema (Avro schema resolution), apply, encode. Schemas are parsed once per id,
when first used. One instance per store incarnation on a host; new ids arrive from
assignments and from schema refreshes (:meth:`ValueSchemas.add`).
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import fastavro

from venice.errors import InternalError
from venice.ingestion.records import SkipKind, UnknownSchema, UnusableRecord
from venice.schema import parse_schema

__all__ = ["ValueSchemas"]


def _parsed(schema: Any) -> Any:
    # venice.schema.parse_schema checks and maps errors; fastavro's own parse (with its
    # hints) makes every later read and write skip re-parsing the schema.
    return fastavro.parse_schema(parse_schema(schema))


def _decode_exact(data: bytes, writer: Any, reader: Any | None, what: str) -> Any:
    buf = io.BytesIO(data)
    try:
        datum = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many unrelated types on bad bytes
        raise UnusableRecord(SkipKind.UNDECODABLE, f"{what} does not decode: {type(exc).__name__}: {exc}") from None
    if buf.tell() != len(data):
        raise UnusableRecord(SkipKind.UNDECODABLE, f"{what} has {len(data) - buf.tell()} trailing bytes")
    return datum


def _writecompute() -> ModuleType:
    try:
        return importlib.import_module("venice.writecompute")
    except ModuleNotFoundError as exc:  # until the write-compute module lands
        raise InternalError("partial updates need venice.writecompute, which is not installed") from exc


class ValueSchemas:
    """One store's value schemas by id, parsed on first use."""

    def __init__(self, schemas: Mapping[int, Any] | None = None) -> None:
        self._schemas: dict[int, Any] = {}
        self._parsed: dict[int, Any] = {}
        self._update_parsed: dict[int, Any] = {}
        self._updater: Any = None
        if schemas:
            self.add(schemas)

    def add(self, schemas: Mapping[int, Any]) -> bool:
        """Learn schemas; True when an id was new. An id never changes its schema."""
        new = False
        for schema_id, schema in schemas.items():
            if schema_id not in self._schemas:
                self._schemas[int(schema_id)] = schema
                new = True
        if new:
            self._updater = None  # built again, with every schema, on the next update
        return new

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._schemas

    def ids(self) -> frozenset[int]:
        return frozenset(self._schemas)

    def schemas(self) -> dict[int, Any]:
        return dict(self._schemas)

    def parsed(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            if schema_id not in self._schemas:
                raise UnknownSchema(schema_id)
            parsed = self._parsed[schema_id] = _parsed(self._schemas[schema_id])
        return parsed

    def _update_schema(self, schema_id: int) -> Any:
        parsed = self._update_parsed.get(schema_id)
        if parsed is None:
            update_schema = _writecompute().update_schema(self._schemas[schema_id])
            parsed = self._update_parsed[schema_id] = _parsed(update_schema)
        return parsed

    # -- RecordSchemas ------------------------------------------------------------------
    def check_value(self, schema_id: int, value: bytes) -> None:
        _decode_exact(value, self.parsed(schema_id), None, f"value of schema {schema_id}")

    def decode(self, schema_id: int, value: bytes, as_schema_id: int | None = None) -> Any:
        """The datum of ``value`` (written with ``schema_id``), resolved to ``as_schema_id``."""
        reader = None if as_schema_id is None or as_schema_id == schema_id else self.parsed(as_schema_id)
        return _decode_exact(value, self.parsed(schema_id), reader, f"value of schema {schema_id}")

    def encode(self, schema_id: int, datum: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed(schema_id), datum)
        return buf.getvalue()

    def apply_update(self, schema_id: int, update: bytes, current: tuple[int, bytes] | None) -> tuple[int, bytes]:
        """Through :class:`venice.writecompute.Updater`: the result is written with the newer
        of the update's and the stored value's schemas, so neither loses a field."""
        for needed in (schema_id, None if current is None else current[0]):
            if needed is not None and needed not in self._schemas:
                raise UnknownSchema(needed)
        # Exactly one datum of the update schema, or it is not an update at all.
        _decode_exact(update, self._update_schema(schema_id), None, f"update of schema {schema_id}")
        updater = self._updater
        if updater is None:
            updater = self._updater = _writecompute().Updater(dict(self._schemas))
        try:
            new_id, new_value = updater.apply(schema_id, update, current)
        except Exception as exc:  # noqa: BLE001 - every failure to apply is the same poison pill
            raise UnusableRecord(SkipKind.UPDATE_FAILED, f"{type(exc).__name__}: {exc}") from None
        return int(new_id), bytes(new_value)
