"""Turning input records into ``(key, value)`` data of a store's schemas.

Input files are flat-ish rows (a JSON object, a CSV row, an Avro or Parquet record);
a store has a key schema and a value schema. This module decides which fields of a
row make the key and which the value, coerces CSV text cells to the schema's types,
and rejects anything that would not round-trip, with the file and position in the
message, because a push must never silently store something other than what the
file says (dropping an unknown field, truncating a number, or guessing a null).

It also holds :class:`DuplicateTracker`: the same key twice in one push is either a
harmless repeat (skipped) or a contradiction (an error), and which one it was can
only be told by remembering every key seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from venice.errors import InvalidInputError
from venice.push.formats import input_error
from venice.schema import AvroCodec, json_default, parse_integer
from venice.schema import parse_double as strict_double

__all__ = [
    "DEFAULT_KEY_FIELD",
    "MISSING_MARKERS",
    "VALUE_FIELD",
    "DuplicateTracker",
    "RecordConverter",
    "describe_key",
    "is_missing",
    "parse_bool",
    "parse_double",
    "parse_long",
    "text_coercer",
]

DEFAULT_KEY_FIELD = "key"
"""Input field holding the key when the key schema is not a record and none is named."""
VALUE_FIELD = "value"
"""Input field holding the value when the value schema is not a record."""
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none"})
"""CSV cells (case-insensitive, trimmed) meaning "no value" for a nullable field."""

_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})

Coercer = Callable[[str], Any]


# -- CSV text cells --------------------------------------------------------------------


def is_missing(cell: str) -> bool:
    """Whether a CSV cell is one of the usual "no value" spellings (NA, null, NaN, empty...)."""
    return cell.strip().lower() in MISSING_MARKERS


def parse_long(cell: str) -> int:
    """A 64-bit integer in ASCII decimal (the platform's one grammar, :func:`venice.schema.parse_integer`):
    ``1.0``, ``1e3``, ``1_000``, ``+1``, `` 1 `` and non-ASCII digits are refused."""
    try:
        return parse_integer(cell)
    except ValueError:
        raise ValueError(f"{_cell(cell)} is not a long") from None


def parse_double(cell: str) -> float:
    """A decimal or scientific number in ASCII, or nan/inf (:func:`venice.schema.parse_double`)."""
    try:
        return strict_double(cell)
    except ValueError:
        raise ValueError(f"{_cell(cell)} is not a number") from None


def _cell(cell: str) -> str:
    return repr(cell) if len(cell) <= 60 else repr(cell[:60]) + "..."


def parse_bool(cell: str) -> bool:
    """``true``/``false`` in any case, or ``1``/``0``."""
    text = cell.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{cell!r} is not a boolean (true or false)")


def _parse_json(cell: str, kind: str) -> Any:
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError:
        raise ValueError(f"{cell!r} is not JSON text of an {kind}") from None


def _named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined in ``schema``, by name.

    Parsed schemas refer to a type defined earlier by name only, so a coercer meeting
    ``"Address"`` needs this table to know what an Address is.
    """
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
            found.setdefault(schema["name"], schema)
            if "namespace" in schema and "." not in schema["name"]:
                found.setdefault(f"{schema['namespace']}.{schema['name']}", schema)
        for field in schema.get("fields", ()):
            _named_types(field["type"], found)
        for inner in ("items", "values"):
            if inner in schema:
                _named_types(schema[inner], found)
    return found


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in named:
        return named[schema]
    return schema


def _type_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def text_coercer(schema: Any, named: dict[str, Any] | None = None) -> Coercer:
    """A function turning one CSV cell into a datum of ``schema`` (``ValueError`` if it can't)."""
    named = _named_types(schema) if named is None else named
    schema = _resolve(schema, named)
    kind = _type_of(schema)
    if kind == "union":
        return _union_coercer(schema, named)
    simple: dict[str, Coercer] = {
        "long": parse_long,
        "int": parse_long,
        "double": parse_double,
        "float": parse_double,
        "boolean": parse_bool,
        "string": str,
        "enum": str,
        "bytes": str.encode,
        "fixed": str.encode,
    }
    if kind in simple:
        return _refusing_missing(simple[kind], kind)
    if kind == "null":
        return _null_coercer
    return lambda cell: _parse_json(cell, kind)


def _refusing_missing(parse: Coercer, kind: str) -> Coercer:
    """Explain an unparsable missing-marker as a missing value, which is what it is."""
    if kind in ("string", "enum", "bytes", "fixed"):
        return parse

    def coerce(cell: str) -> Any:
        try:
            return parse(cell)
        except ValueError:
            if is_missing(cell):
                raise ValueError(f"is missing ({cell!r}) but the schema does not allow null") from None
            raise

    return coerce


def _null_coercer(cell: str) -> None:
    if is_missing(cell):
        return None
    raise ValueError(f"{cell!r} is not null")


def _union_coercer(branches: list[Any], named: dict[str, Any]) -> Coercer:
    nullable = "null" in branches
    coercers = [text_coercer(b, named) for b in branches if b != "null"]

    def coerce(cell: str) -> Any:
        if nullable and is_missing(cell):
            return None
        reasons = []
        for attempt in coercers:
            try:
                return attempt(cell)
            except ValueError as exc:
                reasons.append(str(exc))
        raise ValueError(" and ".join(dict.fromkeys(reasons)) or f"{cell!r} fits no branch of the union")

    return coerce


# -- nested unknown fields ---------------------------------------------------------------

ExtraCheck = Callable[[Any, str], "str | None"]


def _extras_check(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> ExtraCheck | None:
    """A check for fields unknown to nested records, or ``None`` when nothing can nest.

    :meth:`AvroCodec.problem` catches unknown top-level fields; fastavro itself would
    silently drop unknown fields of nested records, so those are checked here.
    """
    schema = _resolve(schema, named)
    kind = _type_of(schema)
    if kind == "record":
        name = schema.get("name", "")
        if name in seen:  # recursive type: check one level, not forever
            return None
        names = frozenset(f["name"] for f in schema["fields"])
        inner = [(f["name"], _extras_check(f["type"], named, seen | {name})) for f in schema["fields"]]
        checks = [(n, c) for n, c in inner if c is not None]

        def check_record(datum: Any, path: str) -> str | None:
            if not isinstance(datum, dict):
                return None
            extra = sorted(set(datum) - names)
            if extra:
                return f"field(s) {', '.join(extra)} of {path or 'the value'} are not in the schema"
            for field, check in checks:
                problem = check(datum.get(field), f"{path}.{field}" if path else field)
                if problem:
                    return problem
            return None

        return check_record
    if kind == "union":
        records = [b for b in schema if _type_of(_resolve(b, named)) == "record"]
        return _extras_check(records[0], named, seen) if len(records) == 1 else None
    if kind in ("array", "map"):
        item_check = _extras_check(schema["items" if kind == "array" else "values"], named, seen)
        if item_check is None:
            return None

        def check_items(datum: Any, path: str) -> str | None:
            items = datum.values() if isinstance(datum, dict) else datum if isinstance(datum, list) else ()
            for item in items:
                problem = item_check(item, f"{path}[]")
                if problem:
                    return problem
            return None

        return check_items
    return None


def _nested_check(schema: Any, named: dict[str, Any]) -> ExtraCheck | None:
    """Like :func:`_extras_check` but for the *fields* of a top-level record only."""
    if _type_of(schema) != "record":
        return _extras_check(schema, named)
    checks = [(f["name"], _extras_check(f["type"], named, frozenset({schema.get("name", "")}))) for f in schema["fields"]]
    active = [(n, c) for n, c in checks if c is not None]
    if not active:
        return None

    def check(datum: Any, path: str) -> str | None:
        for field, field_check in active:
            problem = field_check(datum.get(field), field)
            if problem:
                return problem
        return None

    return check


# -- records -----------------------------------------------------------------------------


def _is_nullable(schema: Any) -> bool:
    return isinstance(schema, list) and "null" in schema


class _Field:
    """One field of a record schema, with what to do when the input lacks it."""

    __slots__ = ("coerce", "default", "has_default", "name")

    def __init__(self, spec: dict[str, Any], named: dict[str, Any], text_cells: bool) -> None:
        self.name: str = spec["name"]
        self.has_default = "default" in spec or _is_nullable(spec["type"])
        self.default = spec.get("default")
        self.coerce: Coercer | None = text_coercer(spec["type"], named) if text_cells else None

    def take(self, record: dict[str, Any]) -> Any:
        """This field's datum from ``record``; ``KeyError`` if absent and required."""
        if self.name not in record:
            if self.has_default:
                return self.default
            raise KeyError(self.name)
        raw = record[self.name]
        if self.coerce is not None and isinstance(raw, str):
            try:
                return self.coerce(raw)
            except ValueError as exc:
                raise ValueError(f"field {self.name!r}: {exc}") from None
        return raw


class RecordConverter:
    """Splits input records into key and value data of a store's schemas.

    * Key: when the key schema is a record, its fields are taken from the input fields
      of the same names; otherwise the key is the input field ``key_field`` (default
      ``"key"``).
    * Value: when the value schema is a record, its fields are taken by name (an
      absent field gets its default; an absent nullable field gets null); otherwise
      the value is the input field ``"value"``.
    * An input field used by neither is an error: it would be silently dropped.
    * ``text_cells=True`` (CSV) coerces string cells to the schema's types.

    Errors are :class:`InvalidInputError` reading ``"<file>: <position>: <reason>"``.
    """

    def __init__(
        self,
        key_codec: AvroCodec,
        value_codec: AvroCodec,
        *,
        key_field: str | None = None,
        text_cells: bool = False,
        file: str | os.PathLike[str] = "<input>",
    ) -> None:
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.file = str(file)
        self.key_is_record = key_codec.field_names is not None
        self.value_is_record = value_codec.field_names is not None
        key_named = _named_types(key_codec.schema)
        value_named = _named_types(value_codec.schema)
        if self.key_is_record:
            self._key_fields = [_Field(f, key_named, text_cells) for f in key_codec.schema["fields"]]
        else:
            spec = {"name": key_field or DEFAULT_KEY_FIELD, "type": key_codec.schema}
            self._key_fields = [_Field(spec, key_named, text_cells)]
        if self.value_is_record:
            self._value_fields = [_Field(f, value_named, text_cells) for f in value_codec.schema["fields"]]
        else:
            self._value_fields = [_Field({"name": VALUE_FIELD, "type": value_codec.schema}, value_named, text_cells)]
        self._known = frozenset(f.name for f in self._key_fields) | frozenset(f.name for f in self._value_fields)
        self._key_nested = _nested_check(key_codec.schema, key_named)
        self._value_nested = _nested_check(value_codec.schema, value_named)

    @property
    def key_field_names(self) -> list[str]:
        """Input fields that make up the key."""
        return [f.name for f in self._key_fields]

    def convert(self, position: str, record: dict[str, Any]) -> tuple[Any, Any]:
        """``(key datum, value datum)`` of one input record, validated against the schemas."""
        try:
            key = self._key(record)
            value = self._value(record)
        except ValueError as exc:
            raise self._error(position, str(exc)) from None
        extra = [name for name in record if name not in self._known]
        if extra:
            error = self._error(position, f"field(s) not in the value schema: {', '.join(extra)}")
            error.details["unknown_fields"] = extra  # a newer value schema may have them
            raise error
        self._check(position, "key", self.key_codec, self._key_nested, key)
        self._check(position, "value", self.value_codec, self._value_nested, value)
        return key, value

    def _key(self, record: dict[str, Any]) -> Any:
        for field in self._key_fields:
            raw = record.get(field.name)
            if raw is None or (field.coerce is not None and isinstance(raw, str) and not raw.strip()):
                raise ValueError(f"missing key field {field.name!r}")
        if self.key_is_record:
            return self._take_all(self._key_fields, record, "key")
        return self._key_fields[0].take(record)

    def _value(self, record: dict[str, Any]) -> Any:
        if not self.value_is_record:
            return self._take_all(self._value_fields, record, "value")[VALUE_FIELD]
        return self._take_all(self._value_fields, record, "value")

    @staticmethod
    def _take_all(fields: list[_Field], record: dict[str, Any], kind: str) -> dict[str, Any]:
        datum: dict[str, Any] = {}
        for field in fields:
            try:
                datum[field.name] = field.take(record)
            except KeyError:
                raise ValueError(f"missing field {field.name!r} required by the {kind} schema") from None
        return datum

    def _check(self, position: str, kind: str, codec: AvroCodec, nested: ExtraCheck | None, datum: Any) -> None:
        problem = codec.problem(datum)
        unknown = False
        if problem is None and nested is not None and isinstance(datum, dict):
            problem = nested(datum, "")
            unknown = problem is not None  # the nested check looks for unknown fields only
        if problem is not None:
            shown = f"{kind} {describe_key(datum)}" if kind == "key" else kind
            error = self._error(position, f"{shown} {_tidy(problem)}")
            if unknown and kind == "value":
                error.details["unknown_fields"] = True  # in a nested record; a newer value schema may have them
            raise error

    def _error(self, position: str, reason: str) -> InvalidInputError:
        return input_error(self.file, position, reason)


def _tidy(problem: str) -> str:
    """fastavro's ``of type <class 'str'>`` reads better as ``(str)``."""
    return re.sub(r" of type <class '([\w.]+)'>", r" (\1)", problem)


def describe_key(key: Any) -> str:
    """A key as a user wrote it: JSON text (``42``, ``"alice"``, ``{"a": 1}``)."""
    try:
        return orjson.dumps(key, default=json_default).decode()
    except TypeError:
        return repr(key)


# -- duplicate keys ----------------------------------------------------------------------


class DuplicateTracker:
    """Remembers every key of a push to catch the same key twice.

    The same key with the same value is a harmless repeat (the later copy is skipped);
    with a different value the file contradicts itself and the push must stop, since
    which value wins would otherwise depend on partition order.

    Memory is kept modest: per key, its serialized bytes map to one int packing a
    64-bit hash of the value with the line or record number of the first occurrence
    (positions look like ``"line 17"``/``"record 17"``). That is roughly 120 bytes per
    distinct key, so ~1.2 GB for 10 million keys. The hash is Python's own of the bytes
    (SipHash, 64 bits, computed in C and cached on the object); the tracker lives in one
    process, so its per-process seed does not matter.
    """

    def __init__(self, file: str | os.PathLike[str] = "<input>") -> None:
        self.file = str(file)
        self._seen: dict[bytes, int] = {}
        self.duplicates = 0
        """Identical repeats skipped so far."""

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, key: Any, key_bytes: bytes, value_bytes: bytes, position: str) -> bool:
        """``True`` for a new key (write it); ``False`` for an identical repeat (skip it).

        Raises :class:`InvalidInputError` when the key was seen with a different value.
        """
        value_hash = hash(value_bytes) & _HASH_MASK
        previous = self._seen.get(key_bytes)
        if previous is None:
            self._seen[key_bytes] = (_position_number(position) << 64) | value_hash
            return True
        if previous & _HASH_MASK == value_hash:
            self.duplicates += 1
            return False
        unit = position.rpartition(" ")[0] or "position"
        raise input_error(
            self.file,
            position,
            f"key {describe_key(key)} appears twice with different values (first at {unit} {previous >> 64})",
        )


    def check_encoded(self, key_bytes: bytes, value_bytes: bytes, number: int) -> int:
        """:meth:`check` for the push's hot loop, with the record's line or record ``number``
        instead of its position text: ``1`` for a new key, ``0`` for an identical repeat
        (counted), ``-1`` for the same key with another value, which the caller words by
        calling :meth:`check` with the key and position (it raises)."""
        value_hash = hash(value_bytes) & _HASH_MASK
        previous = self._seen.get(key_bytes)
        if previous is None:
            self._seen[key_bytes] = (number << 64) | value_hash
            return 1
        if previous & _HASH_MASK == value_hash:
            self.duplicates += 1
            return 0
        return -1

    def check_batch(self, keys: Sequence[bytes], values: Sequence[bytes], numbers: Sequence[int]) -> list[int] | None:
        """:meth:`check_encoded` of a whole batch: ``None`` when every key is new (the usual
        case, found with set operations in C: the keys are distinct and none was seen
        before; all are remembered), else the outcome of each record, in order."""
        seen = self._seen
        if len(set(keys)) == len(keys) and seen.keys().isdisjoint(keys):
            mask = _HASH_MASK
            seen.update(zip(keys, [(n << 64) | (hash(v) & mask) for n, v in zip(numbers, values, strict=True)], strict=True))
            return None
        check = self.check_encoded
        return [check(k, v, n) for k, v, n in zip(keys, values, numbers, strict=True)]


_HASH_MASK = (1 << 64) - 1


def _position_number(position: str) -> int:
    """``"line 17"`` -> 17 (positions of one file share their unit word, so only the number is kept)."""
    number = position.rpartition(" ")[2]
    return int(number) if number.isdigit() else 0
