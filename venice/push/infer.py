"""Inferring a store's key and value schemas from a push input file.

Writing Avro schemas by hand is the main hurdle between "I have a file" and "I have a
store", so ``venice store create --infer-from FILE`` reads the whole file (not a
sample: a field that is null only on line 90 000 must still come out nullable) and
proposes schemas that every record of that file fits.

Rules, per field: booleans -> ``boolean``; integers -> ``long``; floats, or integers
mixed with floats -> ``double``; strings -> ``string``; lists of numbers -> array of
``double``, other lists -> array of their element type; objects -> nested records.
A field absent from some records, or null in some, becomes ``["null", T]`` with
default null. CSV cells are all text, so a column is typed by what all its non-missing
cells parse as: ``long``, else ``double``, else ``boolean``, else a JSON array
(``[1.0, 2.5]``), else ``string``; missing markers (empty, NA, null, NaN, ...) make it
nullable. Contradictory JSON (a field that is a number here and a string there) is an
error naming both positions, since no schema would be an honest guess.
"""

from __future__ import annotations

import os
import re
from typing import Any

import orjson

from venice.errors import InvalidInputError
from venice.push.formats import input_error, open_records
from venice.push.records import DEFAULT_KEY_FIELD, is_missing, parse_bool, parse_double, parse_long

__all__ = ["avro_name", "infer_schemas"]

_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALARS = {bool: "boolean", int: "long", float: "double", str: "string", bytes: "bytes"}
_EMPTY_ARRAY_ITEMS = "double"  # arrays seen only empty: the common case is a numeric vector


class _Conflict(Exception):
    """Values of one field have incompatible types.

    Each enclosing field prepends its name to ``path`` as the error travels outwards,
    so the message names ``address.zip`` rather than just ``zip``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def inside(self, name: str) -> _Conflict:
        self.path.insert(0, name)
        return self

    def describe(self) -> str:
        return f"field {'.'.join(self.path)} {self.reason}" if self.path else self.reason


def avro_name(text: str) -> str:
    """``text`` made into a valid Avro name (store names may hold ``-`` or ``.``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


class _Shape:
    """What the values of one field (or of the items of one array) looked like so far."""

    __slots__ = ("fields", "items", "kinds", "nullable", "present", "records")

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        """Type seen -> position of its first occurrence."""
        self.nullable = False
        self.present = 0
        """Records (of the enclosing record shape) in which this field was present."""
        self.records = 0
        """Objects observed, when this shape is a record."""
        self.items: _Shape | None = None
        self.fields: dict[str, _Shape] = {}

    def observe(self, value: Any, position: str, *, in_array: bool = False) -> None:
        if value is None:
            self.nullable = True
            return
        if isinstance(value, dict):
            self._observe_record(value, position)
            return
        if isinstance(value, list):
            self.kinds.setdefault("array", position)
            self.items = self.items or _Shape()
            for item in value:
                self.items.observe(item, position, in_array=True)
            return
        kind = _SCALARS.get(type(value))
        if kind is None:
            raise _Conflict(
                f"has a value of type {type(value).__name__}, which inference does not handle; write the schemas by hand"
            )
        if in_array and kind == "long":
            kind = "double"
        self.kinds.setdefault(kind, position)

    def _observe_record(self, value: dict[str, Any], position: str) -> None:
        self.kinds.setdefault("record", position)
        self.records += 1
        for name, item in value.items():
            field = self.fields.get(name)
            if field is None:
                field = self.fields[name] = _Shape()
            field.present += 1
            try:
                field.observe(item, position)
            except _Conflict as exc:
                raise exc.inside(name) from None

    def kind(self) -> str | None:
        """The one Avro type these values share; ``None`` when only nulls were seen."""
        kinds = set(self.kinds)
        if not kinds:
            return None
        if kinds == {"long", "double"}:
            return "double"
        if len(kinds) == 1:
            return next(iter(kinds))
        described = ", ".join(f"{kind} ({where})" for kind, where in self.kinds.items())
        raise _Conflict(f"has values of different types: {described}")

    def to_avro(self, name: str) -> Any:
        """The Avro type (not yet made nullable) of these values; records are named ``name``."""
        kind = self.kind()
        if kind is None:
            return "string"
        if kind == "array":
            items = self.items if self.items is not None else _Shape()
            item_type = items.to_avro(f"{name}_item") if items.kinds else _EMPTY_ARRAY_ITEMS
            return {"type": "array", "items": _nullable(item_type) if items.nullable else item_type}
        if kind == "record":
            return _record(name, self.fields, self.records)
        return kind


def _nullable(avro_type: Any) -> Any:
    return ["null", avro_type]


def _check_name(name: str) -> None:
    if not _AVRO_NAME.fullmatch(name):
        raise _Conflict(
            f"{name!r} is not a valid Avro field name (letters, digits and _, not starting with a digit);"
            " rename it in the file"
        )


def _field(name: str, shape: _Shape, records: int, parent: str) -> dict[str, Any]:
    _check_name(name)
    avro_type = _column_type(name, shape, parent)
    if shape.nullable or shape.present < records or shape.kind() is None:
        return {"name": name, "type": _nullable(avro_type), "default": None}
    return {"name": name, "type": avro_type}


def _record(name: str, fields: dict[str, _Shape], records: int) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [_field(n, s, records, name) for n, s in fields.items()]}


class _CsvColumn:
    """What the cells of one CSV column could all be parsed as."""

    __slots__ = ("array_items", "could", "literal", "nullable", "present")

    def __init__(self, *, literal: bool = False) -> None:
        self.literal = literal
        """Key columns take every cell at face value: "NA" may be Namibia, and a key is never null."""
        self.could = {"long": True, "double": True, "boolean": True, "array": True}
        self.nullable = False
        self.present = 0
        self.array_items = _Shape()

    def observe(self, cell: str, position: str) -> None:
        if not self.literal and is_missing(cell):
            self.nullable = True
            return
        self.present += 1
        for kind, parse in (("long", parse_long), ("double", parse_double), ("boolean", parse_bool)):
            if self.could[kind]:
                try:
                    parse(cell)
                except ValueError:
                    self.could[kind] = False
        if self.could["array"]:
            self._observe_array(cell, position)

    def _observe_array(self, cell: str, position: str) -> None:
        try:
            parsed = orjson.loads(cell) if cell.lstrip().startswith("[") else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list):
            self.could["array"] = False
            return
        try:
            self.array_items.observe(parsed, position)
        except _Conflict:
            self.could["array"] = False

    def to_avro(self, name: str) -> Any:
        if self.present == 0:
            return "string"
        for kind in ("long", "double", "boolean"):
            if self.could[kind]:
                return kind
        if self.could["array"]:
            try:
                return self.array_items.to_avro(name)
            except _Conflict:
                return "string"
        return "string"


def infer_schemas(
    path: str | os.PathLike[str],
    key_field: str = DEFAULT_KEY_FIELD,
    fmt: str | None = None,
    store_name: str = "Value",
) -> tuple[Any, Any]:
    """``(key_schema, value_schema)`` that every record of the file at ``path`` fits.

    ``key_field`` names the input field holding the key; several comma-separated names
    make a record key. The value schema is a record named after ``store_name`` with
    every other field, in first-seen order. Raises :class:`InvalidInputError` for an
    empty file, a record without the key field, or fields whose types contradict.
    """
    key_fields = [name.strip() for name in key_field.split(",") if name.strip()]
    if not key_fields:
        raise InvalidInputError("no key field given")
    record_name = avro_name(store_name)
    with open_records(path, fmt) as source:
        text_cells = source.fmt == "csv"
        columns: dict[str, _Shape | _CsvColumn] = {}
        count = 0
        for position, record in source:
            _check_key(path, position, record, key_fields, text_cells)
            count += 1
            for name, value in record.items():
                _observe(path, position, columns, name, value, text_cells, key=name in key_fields)
    if count == 0:
        raise input_error(path, None, "no records to infer schemas from (the file is empty)")
    try:
        return _schemas(columns, count, key_fields, record_name)
    except _Conflict as exc:
        raise input_error(path, None, f"cannot infer a schema: {exc.describe()}") from None


def _check_key(path: Any, position: str, record: dict[str, Any], key_fields: list[str], text_cells: bool) -> None:
    for name in key_fields:
        if name not in record:
            fields = ", ".join(record) or "none"
            raise input_error(path, position, f"key field {name!r} is absent (fields: {fields})")
        value = record[name]
        if value is None or (text_cells and not str(value).strip()):
            raise input_error(path, position, f"key field {name!r} is empty")


def _observe(
    path: Any,
    position: str,
    columns: dict[str, _Shape | _CsvColumn],
    name: str,
    value: Any,
    text_cells: bool,
    *,
    key: bool,
) -> None:
    column = columns.get(name)
    if column is None:
        column = columns[name] = _CsvColumn(literal=key) if text_cells else _Shape()
    if isinstance(column, _Shape):
        column.present += 1
    try:
        column.observe(value, position)
    except _Conflict as exc:
        raise input_error(path, position, exc.inside(name).describe()) from None


def _schemas(
    columns: dict[str, _Shape | _CsvColumn], count: int, key_fields: list[str], record_name: str
) -> tuple[Any, Any]:
    value_fields = []
    for name, column in columns.items():
        if name in key_fields:
            continue
        value_fields.append(_column_field(name, column, count, record_name))
    value_schema = {"type": "record", "name": record_name, "fields": value_fields}
    key_types = {name: _column_type(name, columns[name], record_name) for name in key_fields}
    if len(key_fields) == 1:
        return key_types[key_fields[0]], value_schema
    for name in key_fields:
        _check_name(name)
    key_schema = {
        "type": "record",
        "name": f"{record_name}_key",
        "fields": [{"name": name, "type": key_types[name]} for name in key_fields],
    }
    return key_schema, value_schema


def _column_type(name: str, column: _Shape | _CsvColumn, parent: str) -> Any:
    try:
        return column.to_avro(f"{parent}_{name}")
    except _Conflict as exc:
        raise exc.inside(name) from None


def _column_field(name: str, column: _Shape | _CsvColumn, count: int, parent: str) -> dict[str, Any]:
    if isinstance(column, _Shape):
        return _field(name, column, count, parent)
    _check_name(name)
    avro_type = _column_type(name, column, parent)
    if column.nullable or column.present == 0:
        return {"name": name, "type": _nullable(avro_type), "default": None}
    return {"name": name, "type": avro_type}
