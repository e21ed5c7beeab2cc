"""Avro schemas of a store and the (de)serialization of keys and values.

Keys and values travel and rest as Avro binary (schemaless: the schema is known from
the store, the value schema id from the record's ``schema-id`` header). This module is
the one place that talks to fastavro; its errors come out as :mod:`venice.errors`.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import orjson
from fastavro.validation import ValidationError, validate

from venice.errors import InvalidKeyError, InvalidValueError, SchemaError

__all__ = [
    "MAX_FIXED_SIZE",
    "MAX_KEY_BYTES",
    "MAX_SCHEMA_DEPTH",
    "AvroCodec",
    "json_default",
    "key_from_text",
    "key_too_long",
    "parse_double",
    "parse_integer",
    "parse_schema",
    "schema_to_json",
    "validate_schema",
]

MAX_KEY_BYTES = 511
"""Longest serialized key: LMDB's key size limit (its default ``MDB_MAXKEYSIZE``)."""
MAX_FIXED_SIZE = 1 << 20
"""Largest ``fixed`` size a schema may declare (1 MiB): beyond any value a store takes."""
MAX_SCHEMA_DEPTH = 64
"""Deepest nesting of types a schema may have; deeper ones are refused, not recursed into."""

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
        self._recursive = False
        if primitive is not None:
            self._fits, self._encode, self._decode = primitive
        else:
            # Imported here: both modules build on this one (for parse_schema).
            from venice.avroio import avro_reader, avro_writer
            from venice.avrotree import is_recursive, load

            # fastavro's own parse, with its "already parsed" mark: without it fastavro
            # parses the schema again on every read and write.
            hinted = fastavro.parse_schema(self.schema)
            self._recursive = is_recursive(load(self.schema))
            self._read = avro_reader(f"stored {kind}", hinted, named_types=False, recursive=self._recursive)
            self._write = avro_writer(kind, hinted, recursive=self._recursive)
        self._max_bytes = MAX_KEY_BYTES if kind == "key" else math.inf

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
        if self._recursive:
            from venice.avrotree import MAX_NESTING, nested_deeper_than

            if nested_deeper_than(datum):  # fastavro's validator would overflow the C stack
                return f"nests deeper than {MAX_NESTING} levels"
        try:
            validate(datum, self.schema, raise_errors=True)
        except ValidationError as exc:
            reasons = "; ".join(str(e) for e in exc.errors) if exc.errors else str(exc)
            return f"does not fit the {self.kind} schema: {reasons}"
        except RecursionError:
            # fastavro's message shows the datum that does not fit with repr(), which
            # recurses: a value nested about a thousand levels deep where the schema has a
            # string (JSON parsers allow 1,024 levels) does not fit, and cannot be shown.
            return f"does not fit the {self.kind} schema (it nests too deeply for the mismatch to be shown)"
        return None

    def encode(self, datum: Any) -> bytes:
        """Validate and serialize; raises InvalidKeyError / InvalidValueError.

        A key longer than :data:`MAX_KEY_BYTES` serialized is refused: LMDB cannot store it.
        """
        if self._fits is not None and self._encode is not None and self._fits(datum):
            data = self._encode(datum)
        else:
            reason = self.problem(datum)
            if reason is not None:
                raise (InvalidKeyError if self.kind == "key" else InvalidValueError)(f"{self.kind} {reason}")
            data = self.encode_unchecked(datum)
        if len(data) > self._max_bytes:
            raise InvalidKeyError(key_too_long(len(data)))
        return data

    def encode_unchecked(self, datum: Any) -> bytes:
        if self._encode is not None and self._fits is not None and self._fits(datum):
            return self._encode(datum)
        return self._write(datum)

    def decode(self, data: bytes) -> Any:
        """The datum of ``data``; InvalidValueError when it does not decode (whole input consumed)."""
        if self._decode is None:
            return self._read(data)
        try:
            return self._decode(data)
        except Exception as exc:
            raise InvalidValueError(f"stored {self.kind} does not decode with its schema: {exc}") from exc


def key_too_long(size: int) -> str:
    """The message for a key of ``size`` serialized bytes beyond :data:`MAX_KEY_BYTES`."""
    return f"key is {size} bytes serialized; keys may be at most {MAX_KEY_BYTES} bytes (the storage engine's limit)"


def key_from_text(codec: AvroCodec, text: str) -> Any:
    """Turn a key as written in a URL path into a datum of the key schema.

    Strings are taken verbatim; numbers (strictly: :func:`parse_integer`,
    :func:`parse_double`) and booleans are parsed; record and other complex keys are
    given as JSON.
    """
    kind = codec.type_name
    try:
        if kind == "string":
            return text
        if kind in ("int", "long"):
            return parse_integer(text, _INT_RANGE if kind == "int" else _LONG_RANGE, kind=kind)
        if kind in ("float", "double"):
            return parse_double(text)
        if kind == "boolean":
            if text in ("true", "false"):
                return text == "true"
            raise ValueError("expected true or false")
        if kind == "bytes":
            return text.encode()
        return orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidKeyError(f"key {_shorten(text)} is not a valid {kind}: {exc}") from exc


# --- Strict text numbers ------------------------------------------------------------------
# One grammar for every number a user writes as text (URL path keys, ?version=, CSV cells):
# ASCII digits with an optional leading '-', nothing else. Python's int() and float() take
# far more ('+1', ' 1 ', '1_0', Arabic-Indic and full-width digits), and two spellings of
# one key must not both be accepted by one part and refused by another.

_DOUBLE_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_DOUBLE_WORDS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "infinity": math.inf, "-infinity": -math.inf}


def parse_integer(text: str, bounds: tuple[int, int] = _LONG_RANGE, *, kind: str = "long") -> int:
    """An integer written in ASCII decimal digits with an optional leading ``-``, within ``bounds``.

    ``+1``, `` 1 ``, ``1_0``, ``1.0``, ``١`` (Arabic-Indic) and ``１`` (full-width) are refused:
    ``ValueError`` naming ``kind``.
    """
    # Plain digits first (the common case); isdigit alone would take '١', hence isascii.
    unsigned = len(text) < 20 and text.isdigit()
    negative = not unsigned and 1 < len(text) < 21 and text[0] == "-" and text[1:].isdigit()
    if (unsigned or negative) and text.isascii():
        number = int(text)
        if bounds[0] <= number <= bounds[1]:
            return number
    raise ValueError(f"{_shorten(text)} is not {_article(kind)} {kind} (ASCII digits with an optional '-', {bounds[0]}..{bounds[1]})")


def parse_double(text: str) -> float:
    """A decimal or scientific number in ASCII (``-1.5``, ``2e-3``), or ``nan``/``inf``/``-inf``
    (any case); no sign ``+``, spaces, ``_`` separators or non-ASCII digits."""
    if len(text) <= 400:
        special = _DOUBLE_WORDS.get(text.lower())
        if special is not None:
            return special
        if _DOUBLE_TEXT.fullmatch(text):
            return float(text)
    raise ValueError(f"{_shorten(text)} is not a number")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


# --- Full schema validation -----------------------------------------------------------------
# fastavro parses what it can use and lets through schemas the Avro specification forbids
# (an enum without symbols, ["null", "null"], a fixed of size -1 or 1e12, defaults of the
# wrong type): such a store takes no data, or data no other Avro library reads.

_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMED = ("record", "error", "enum", "fixed")
_COMPLEX = (*_NAMED, "array", "map")
_NOT_CANONICAL_IN_KEYS = {
    "map": "a map's entries have no fixed order",
    "union": "a union (nullable included) lets one key be written with different branches",
    "float": "a float has several encodings of one key (0.0 and -0.0, NaNs)",
    "double": "a double has several encodings of one key (0.0 and -0.0, NaNs)",
    "null": "a null key (or key field) holds no data",
}


def validate_schema(schema: Any, *, kind: str = "value") -> Any:
    """Check ``schema`` against the Avro specification and return it parsed.

    Refused with :class:`SchemaError`: invalid or duplicate names, records with duplicate
    or no valid fields, enums without (unique, valid) symbols, fixed sizes outside
    1..:data:`MAX_FIXED_SIZE`, empty unions, unions inside unions or with two branches of
    one type, arrays of items that encode to zero bytes (a hostile count would decode to
    billions of them), defaults that do not fit their field's type, numbers beyond 64 bits, and
    nesting deeper than :data:`MAX_SCHEMA_DEPTH`. A ``kind="key"`` schema must also have
    one binary form per key: no map, union, float, double or null anywhere in it.
    """
    if isinstance(schema, str) and schema.strip() not in _PRIMITIVES:
        if _valid_full_name(schema.strip()):
            raise SchemaError(f"unknown type {_shorten(schema.strip())}: a schema on its own can only name a primitive type")
        try:
            schema = orjson.loads(schema)
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from exc
    elif isinstance(schema, str):
        schema = schema.strip()
    try:
        orjson.dumps(schema)
    except TypeError as exc:
        raise SchemaError(f"schema is not plain JSON (numbers must fit in 64 bits): {exc}") from exc
    checker = _SchemaChecker()
    checker.check(schema, "", 0, "schema")
    parsed = parse_schema(schema)
    if kind == "key":
        _check_canonical_key(schema, checker.named, "", set())
    return parsed


class _SchemaChecker:
    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}

    def check(self, schema: Any, namespace: str, depth: int, where: str) -> None:
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(f"{where}: types nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(schema, str):
            self.resolve(schema, namespace, where)
        elif isinstance(schema, list):
            self._union(schema, namespace, depth, where)
        elif isinstance(schema, dict):
            self._complex(schema, namespace, depth, where)
        else:
            raise SchemaError(f"{where}: {_shorten(orjson.dumps(schema).decode())} is not a type")

    def resolve(self, name: str, namespace: str, where: str) -> Any:
        """The schema a type name stands for (primitives stand for themselves)."""
        if name in _PRIMITIVES:
            return name
        for candidate in ((f"{namespace}.{name}", name) if namespace and "." not in name else (name,)):
            if candidate in self.named:
                return self.named[candidate]
        raise SchemaError(f"{where}: unknown type {_shorten(name)} (named types must be defined before use)")

    def _union(self, branches: list[Any], namespace: str, depth: int, where: str) -> None:
        if not branches:
            raise SchemaError(f"{where}: a union needs at least one branch")
        seen: set[str] = set()
        for index, branch in enumerate(branches):
            if isinstance(branch, list):
                raise SchemaError(f"{where}: a union may not hold a union directly (branch {index})")
            self.check(branch, namespace, depth + 1, f"{where}[{index}]")
            identity = self._identity(branch, namespace)
            if identity in seen:
                raise SchemaError(f"{where}: a union may hold each type once; {identity!r} is there twice")
            seen.add(identity)

    def _identity(self, branch: Any, namespace: str) -> str:
        if isinstance(branch, str):
            return branch if branch in _PRIMITIVES else _full_name(branch, namespace)
        kind = branch.get("type")
        if kind in _NAMED:
            return _full_name(str(branch["name"]), str(branch.get("namespace", namespace)))
        if isinstance(kind, str) and kind not in _COMPLEX:
            return kind if kind in _PRIMITIVES else _full_name(kind, namespace)
        return str(kind)

    def _complex(self, schema: dict[str, Any], namespace: str, depth: int, where: str) -> None:
        kind = schema.get("type")
        if isinstance(kind, (dict, list)):
            self.check(kind, namespace, depth + 1, where)
            return
        if not isinstance(kind, str):
            raise SchemaError(f"{where}: a type needs a 'type' name")
        if kind in _NAMED:
            namespace = self._define(schema, namespace, where)
            where = f"{kind} {schema['name']}"
        if kind in ("record", "error"):
            self._fields(schema, namespace, depth, where)
        elif kind == "enum":
            _check_symbols(schema, where)
        elif kind == "fixed":
            size = schema.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_FIXED_SIZE:
                raise SchemaError(f"{where}: size must be an integer from 1 to {MAX_FIXED_SIZE}, not {size!r}")
        elif kind == "array":
            if "items" not in schema:
                raise SchemaError(f"{where}: an array needs 'items'")
            self.check(schema["items"], namespace, depth + 1, f"{where} items")
            if self._weightless(schema["items"], namespace, set()):
                # A block count costs a few bytes however large it is: a decoder would
                # build billions of items from ten bytes of a hostile value.
                raise SchemaError(
                    f"{where}: array items that encode to zero bytes (null, or records of nulls only) "
                    "would let a few bytes stand for billions of items; keep a count in a long instead"
                )
        elif kind == "map":
            if "values" not in schema:
                raise SchemaError(f"{where}: a map needs 'values'")
            self.check(schema["values"], namespace, depth + 1, f"{where} values")
        else:
            self.resolve(kind, namespace, where)

    def _weightless(self, schema: Any, namespace: str, seen: set[int]) -> bool:
        """Whether every datum of ``schema`` encodes to zero bytes (null, records of such)."""
        if isinstance(schema, str):
            target = self.resolve(schema, namespace, "")
            if target == "null":
                return True
            if isinstance(target, dict) and target.get("type") in ("record", "error"):
                space = _full_name(str(target["name"]), str(target.get("namespace", namespace))).rpartition(".")[0]
                return self._weightless(target, space, seen)
            return False
        if not isinstance(schema, dict) or id(schema) in seen:
            return False
        kind = schema.get("type")
        if isinstance(kind, (dict, list)):
            return self._weightless(kind, namespace, seen)
        if kind in ("record", "error"):
            space = _full_name(str(schema["name"]), str(schema.get("namespace", namespace))).rpartition(".")[0]
            seen = seen | {id(schema)}
            return all(self._weightless(f["type"], space, seen) for f in schema.get("fields") or ())
        if isinstance(kind, str) and kind not in _COMPLEX:
            return self._weightless(kind, namespace, seen)
        return False

    def _define(self, schema: dict[str, Any], namespace: str, where: str) -> str:
        """Register a named type; the namespace its inner names resolve in."""
        name, space = schema.get("name"), schema.get("namespace", namespace)
        if not isinstance(name, str) or not _valid_full_name(name):
            raise SchemaError(f"{where}: {schema['type']} name {_shorten(str(name))} is not a valid Avro name")
        if space is None:
            space = ""
        if not isinstance(space, str) or (space and not _valid_full_name(space)):
            raise SchemaError(f"{where}: namespace {_shorten(str(space))} is not a valid Avro namespace")
        full = _full_name(name, space)
        if full in self.named or full in _PRIMITIVES:
            raise SchemaError(f"{where}: type {full!r} is defined twice")
        self.named[full] = schema
        return full.rpartition(".")[0]

    def _fields(self, schema: dict[str, Any], namespace: str, depth: int, where: str) -> None:
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"{where}: a record needs a 'fields' list")
        names: set[str] = set()
        for index, field in enumerate(fields):
            if not isinstance(field, dict) or not isinstance(field.get("name"), str):
                raise SchemaError(f"{where}: field {index} needs a name")
            name = field["name"]
            if not _AVRO_NAME.fullmatch(name):
                raise SchemaError(f"{where}: field name {_shorten(name)} is not a valid Avro name")
            if name in names:
                raise SchemaError(f"{where}: field {name!r} is defined twice")
            names.add(name)
            if "type" not in field:
                raise SchemaError(f"{where}: field {name!r} needs a type")
            self.check(field["type"], namespace, depth + 1, f"{where}.{name}")
            if "default" in field:
                problem = _default_problem(field["type"], field["default"], self, namespace, 0)
                if problem:
                    raise SchemaError(f"{where}.{name}: default {_shorten(orjson.dumps(field['default']).decode())} {problem}")


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _valid_full_name(name: str) -> bool:
    return all(_AVRO_NAME.fullmatch(part) for part in name.split("."))


def _check_symbols(schema: dict[str, Any], where: str) -> None:
    symbols = schema.get("symbols")
    if not isinstance(symbols, list) or not symbols:
        raise SchemaError(f"{where}: an enum needs at least one symbol")
    for symbol in symbols:
        if not isinstance(symbol, str) or not _AVRO_NAME.fullmatch(symbol):
            raise SchemaError(f"{where}: symbol {_shorten(str(symbol))} is not a valid Avro name")
    if len(set(symbols)) != len(symbols):
        raise SchemaError(f"{where}: symbols must be unique")
    if "default" in schema and schema["default"] not in symbols:
        raise SchemaError(f"{where}: default {schema['default']!r} is not one of its symbols")


_DOUBLE_DEFAULT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


def _default_problem(schema: Any, value: Any, checker: _SchemaChecker, namespace: str, depth: int) -> str | None:
    """Why ``value`` (a JSON default) does not fit ``schema``, or ``None`` when it does."""
    if depth > 2 * MAX_SCHEMA_DEPTH:
        return "is nested too deeply"
    if isinstance(schema, str):
        schema = checker.resolve(schema, namespace, "default")
    if isinstance(schema, list):
        # Avro 1.12: a union's default matches the first branch it fits (1.11 said: the first branch).
        if any(_default_problem(b, value, checker, namespace, depth + 1) is None for b in schema):
            return None
        return "fits no branch of its union"
    kind = schema if isinstance(schema, str) else schema.get("type")
    if isinstance(kind, (dict, list)):
        return _default_problem(kind, value, checker, namespace, depth + 1)
    if isinstance(schema, dict) and kind in _NAMED:
        name = str(schema["name"])
        namespace = _full_name(name, str(schema.get("namespace", namespace) or "")).rpartition(".")[0]
    fits = _DEFAULT_FITS.get(str(kind))
    if fits is not None:
        return None if fits(value, schema) else f"is not a valid {kind}"
    if kind == "array":
        if not isinstance(value, list):
            return "is not an array"
        return next((p for v in value if (p := _default_problem(schema["items"], v, checker, namespace, depth + 1))), None)
    if kind == "map":
        if not isinstance(value, dict):
            return "is not a map (a JSON object)"
        return next(
            (p for v in value.values() if (p := _default_problem(schema["values"], v, checker, namespace, depth + 1))), None
        )
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return "is not a record (a JSON object)"
        fields = {f["name"]: f for f in schema["fields"]}
        extra = sorted(set(value) - set(fields))
        if extra:
            return f"has field(s) not in the record: {', '.join(extra)}"
        for name, field in fields.items():
            if name not in value:
                if "default" not in field:
                    return f"lacks field {name!r}, which has no default"
                continue
            problem = _default_problem(field["type"], value[name], checker, namespace, depth + 1)
            if problem:
                return f"field {name!r} {problem}"
        return None
    return None  # a named reference resolved above; nothing else reaches here


def _latin1(value: Any) -> bool:
    return isinstance(value, str) and all(ord(c) < 256 for c in value)


_DEFAULT_FITS: dict[str, Callable[[Any, Any], bool]] = {
    "null": lambda v, s: v is None,
    "boolean": lambda v, s: isinstance(v, bool),
    "int": lambda v, s: _is_integer(v, _INT_RANGE),
    "long": lambda v, s: _is_integer(v, _LONG_RANGE),
    "float": lambda v, s: _is_number(v) or v in _DOUBLE_DEFAULT_WORDS,
    "double": lambda v, s: _is_number(v) or v in _DOUBLE_DEFAULT_WORDS,
    "string": lambda v, s: isinstance(v, str),
    "bytes": lambda v, s: _latin1(v),
    "enum": lambda v, s: isinstance(v, str) and v in s["symbols"],
    "fixed": lambda v, s: _latin1(v) and len(v) == s["size"],
}


def _check_canonical_key(schema: Any, named: dict[str, dict[str, Any]], namespace: str, seen: set[str]) -> None:
    """Refuse types with more than one binary form per key (see ``_NOT_CANONICAL_IN_KEYS``)."""
    if isinstance(schema, list):
        _refuse_in_key("union")
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            if schema in _NOT_CANONICAL_IN_KEYS:
                _refuse_in_key(schema)
            return
        full = next((n for n in (_full_name(schema, namespace), schema) if n in named), schema)
        if full in seen:
            return
        seen.add(full)
        _check_canonical_key(named[full], named, full.rpartition(".")[0], seen)
        return
    kind = schema.get("type")
    if isinstance(kind, (dict, list)):
        _check_canonical_key(kind, named, namespace, seen)
        return
    if kind in _NOT_CANONICAL_IN_KEYS:
        _refuse_in_key(str(kind))
    if kind in _NAMED:
        full = _full_name(str(schema["name"]), str(schema.get("namespace", namespace) or ""))
        seen.add(full)
        namespace = full.rpartition(".")[0]
    if kind in ("record", "error"):
        for field in schema["fields"]:
            _check_canonical_key(field["type"], named, namespace, seen)
    elif kind == "array":
        _check_canonical_key(schema["items"], named, namespace, seen)
    elif kind not in _PRIMITIVES and kind not in ("enum", "fixed"):
        _check_canonical_key(str(kind), named, namespace, seen)  # {"type": "SomeNamedType"}


def _refuse_in_key(kind: str) -> None:
    raise SchemaError(f"key schema: {kind} is not allowed in a key: {_NOT_CANONICAL_IN_KEYS[kind]}")
