"""A store's schemas as ingestion of real-time records needs them.

:class:`StoreCodecs` implements :class:`venice.ingestion.records.RecordSchemas`. Records
on a real-time topic come from any producer, so everything is checked exactly: a key
must be one datum of the key schema that LMDB can store, a value exactly one datum of
its value schema (trailing bytes do not decode), an update exactly one datum of its
update schema. Decoding goes through :class:`venice.schema.AvroCodec` (fastavro, with
the guard of :mod:`venice.avroio` against hostile nesting). Partial updates are applied
by :class:`venice.writecompute.Updater`, across schema versions.

Codecs are built once per schema id, when first used. One instance per store
incarnation on a host; new ids arrive from assignments and schema refreshes
(:meth:`StoreCodecs.add`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from venice.errors import VeniceError
from venice.ingestion.records import SkipKind, UnknownSchema, UnusableRecord
from venice.schema import MAX_KEY_BYTES, AvroCodec
from venice.writecompute import Updater, update_schema

__all__ = ["StoreCodecs"]


class StoreCodecs:
    """One store's key schema and value schemas by id, with codecs built on first use."""

    def __init__(self, value_schemas: Mapping[int, Any] | None = None, key_schema: Any = None) -> None:
        self._key = None if key_schema is None else AvroCodec(key_schema, kind="key")
        self._schemas: dict[int, Any] = {}
        self._values: dict[int, AvroCodec] = {}
        self._updates: dict[int, AvroCodec] = {}
        self._updater: Updater | None = None
        if value_schemas:
            self.add(value_schemas)

    def add(self, schemas: Mapping[int, Any]) -> bool:
        """Learn value schemas; True when an id was new. An id never changes its schema."""
        new = False
        for schema_id, schema in schemas.items():
            if schema_id not in self._schemas:
                self._schemas[int(schema_id)] = schema
                new = True
        if new:
            self._updater = None  # built again, with every schema, at the next update
        return new

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._schemas

    def ids(self) -> frozenset[int]:
        return frozenset(self._schemas)

    def schemas(self) -> dict[int, Any]:
        return dict(self._schemas)

    def _value_codec(self, schema_id: int) -> AvroCodec:
        codec = self._values.get(schema_id)
        if codec is None:
            if schema_id not in self._schemas:
                raise UnknownSchema(schema_id)
            codec = self._values[schema_id] = AvroCodec(self._schemas[schema_id])
        return codec

    def _update_codec(self, schema_id: int) -> AvroCodec:
        codec = self._updates.get(schema_id)
        if codec is None:
            if schema_id not in self._schemas:
                raise UnknownSchema(schema_id)
            try:
                derived = update_schema(self._schemas[schema_id])
            except VeniceError as exc:  # e.g. not a record schema: no update can apply
                raise UnusableRecord(SkipKind.UPDATE_FAILED, f"value schema {schema_id} takes no updates: {exc}") from None
            codec = self._updates[schema_id] = AvroCodec(derived, kind="update")
        return codec

    # -- RecordSchemas ------------------------------------------------------------------
    def check_key(self, key: bytes) -> None:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise UnusableRecord(SkipKind.BAD_KEY, f"key of {len(key)} bytes; LMDB stores keys of 1 to {MAX_KEY_BYTES} bytes")
        if self._key is not None:
            try:
                self._key.decode(key)
            except VeniceError as exc:
                raise UnusableRecord(SkipKind.BAD_KEY, f"key does not decode with the key schema: {exc}") from None

    def check_value(self, schema_id: int, value: bytes) -> None:
        codec = self._value_codec(schema_id)
        try:
            codec.decode(value)
        except VeniceError as exc:
            raise UnusableRecord(SkipKind.UNDECODABLE, f"value of schema {schema_id}: {exc}") from None

    def apply_update(self, schema_id: int, update: bytes, current: tuple[int, bytes] | None) -> tuple[int, bytes]:
        """Through :class:`venice.writecompute.Updater`: the result is written with the newer
        of the update's and the stored value's schemas, so neither loses a field."""
        for needed in (schema_id, None if current is None else current[0]):
            if needed is not None and needed not in self._schemas:
                raise UnknownSchema(needed)
        try:
            # Exactly one datum of the update schema, or it is not an update at all.
            self._update_codec(schema_id).decode(update)
        except VeniceError as exc:
            raise UnusableRecord(SkipKind.UNDECODABLE, f"update of schema {schema_id}: {exc}") from None
        updater = self._updater
        if updater is None:
            updater = self._updater = Updater(dict(self._schemas))
        try:
            new_id, new_value = updater.apply(schema_id, update, current)
        except Exception as exc:  # noqa: BLE001 - every failure to apply is the same poison pill
            raise UnusableRecord(SkipKind.UPDATE_FAILED, f"{type(exc).__name__}: {exc}") from None
        return int(new_id), bytes(new_value)
