"""An Avro schema as a tree of typed nodes, with every named reference resolved.

fastavro encodes and decodes, but it offers no way to *reason* about a schema: ask
whether one schema can read another's data, derive a new schema from parts of one, or
turn a field's JSON default into the datum a reader gets. :mod:`venice.evolution` and
:mod:`venice.writecompute` do that on this tree.

Named types (records, enums, fixed) become one node each, shared by every reference,
so a recursive schema is a cyclic graph: walkers carry a set of what they have seen.
:func:`emit` writes a tree (or any part of it) back as JSON that stands alone: each
named type is defined where it is first used and referenced by name after that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from venice.errors import SchemaError
from venice.schema import parse_schema

__all__ = [
    "MISSING",
    "PRIMITIVES",
    "Array",
    "Enum",
    "Field",
    "Fixed",
    "Map",
    "Named",
    "Node",
    "Primitive",
    "Record",
    "Union",
    "default_datum",
    "describe",
    "emit",
    "is_recursive",
    "load",
    "named_types",
    "nested_deeper_than",
    "unknown_field",
    "unqualified",
]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = {"record", "error", "enum", "fixed"}
_FLOAT_MAX = 3.4028234663852886e38
_INT_RANGE = (-(1 << 31), (1 << 31) - 1)
_LONG_RANGE = (-(1 << 63), (1 << 63) - 1)


class _Missing:
    """Marks a field without a default (``None`` is a valid default: null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Node:
    """One schema node. ``props`` keeps what Avro carries along (``logicalType``, ``doc``, ...)."""

    __slots__ = ()
    kind: str


@dataclass(eq=False, slots=True)
class Primitive(Node):
    kind: str
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def logical(self) -> str | None:
        value = self.props.get("logicalType")
        return value if isinstance(value, str) else None


@dataclass(eq=False, slots=True)
class Array(Node):
    items: Node
    props: dict[str, Any] = field(default_factory=dict)
    kind: str = "array"


@dataclass(eq=False, slots=True)
class Map(Node):
    values: Node
    props: dict[str, Any] = field(default_factory=dict)
    kind: str = "map"


@dataclass(eq=False, slots=True)
class Union(Node):
    branches: list[Node]
    kind: str = "union"


@dataclass(eq=False, slots=True)
class Field:
    name: str
    type: Node
    default: Any = MISSING
    """The JSON default as written in the schema, or :data:`MISSING`."""
    aliases: list[str] = field(default_factory=list)
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Named(Node):
    fullname: str
    aliases: list[str]
    """As written (fastavro matches these unqualified)."""
    props: dict[str, Any]

    @property
    def namespace(self) -> str:
        return self.fullname.rpartition(".")[0]

    @property
    def name(self) -> str:
        return unqualified(self.fullname)

    def qualified_aliases(self) -> set[str]:
        ns = self.namespace
        return {a if "." in a or not ns else f"{ns}.{a}" for a in self.aliases}


@dataclass(eq=False, slots=True)
class Record(Named):
    fields: list[Field] = field(default_factory=list)
    kind: str = "record"


@dataclass(eq=False, slots=True)
class Enum(Named):
    symbols: list[str] = field(default_factory=list)
    default: str | None = None
    kind: str = "enum"


@dataclass(eq=False, slots=True)
class Fixed(Named):
    size: int = 0
    kind: str = "fixed"


def unqualified(fullname: str) -> str:
    return fullname.rpartition(".")[2]


def load(schema: Any) -> Node:
    """The tree of ``schema`` (JSON text, a primitive name or a parsed JSON object).

    fastavro checks the schema first, so anything it refuses is a :class:`SchemaError`
    with its explanation, and this module only has to read valid schemas.
    """
    if isinstance(schema, str):
        text = schema.strip()
        if text not in PRIMITIVES:
            try:
                schema = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise SchemaError(f"schema is not valid JSON: {exc}") from exc
        else:
            schema = text
    parse_schema(schema)
    return _Builder().build(schema, "")


class _Builder:
    def __init__(self) -> None:
        self.names: dict[str, Named] = {}

    def build(self, obj: Any, ns: str) -> Node:
        if isinstance(obj, str):
            return self._reference(obj, ns)
        if isinstance(obj, list):
            return Union([self.build(branch, ns) for branch in obj])
        if not isinstance(obj, dict):
            raise SchemaError(f"invalid Avro schema: {obj!r}")
        kind = obj.get("type")
        props = {
            k: v
            for k, v in obj.items()
            if k not in ("type", "items", "values", "name", "namespace", "aliases", "fields", "symbols", "default", "size")
        }
        if isinstance(kind, str) and kind in PRIMITIVES:
            return Primitive(kind, props)
        if kind == "array":
            return Array(self.build(obj["items"], ns), props)
        if kind == "map":
            return Map(self.build(obj["values"], ns), props)
        if kind in _NAMED_KINDS:
            return self._named(obj, str(kind), ns, props)
        raise SchemaError(f"invalid Avro schema: unknown type {kind!r}")

    def _reference(self, name: str, ns: str) -> Node:
        if name in PRIMITIVES:
            return Primitive(name)
        full = name if "." in name or not ns else f"{ns}.{name}"
        found = self.names.get(full)
        if found is None:
            raise SchemaError(f"invalid Avro schema: unknown type {name!r}")
        return found

    def _named(self, obj: dict[str, Any], kind: str, ns: str, props: dict[str, Any]) -> Named:
        name = str(obj["name"])
        if "." in name:
            full = name
        else:
            space = obj.get("namespace", ns)
            full = f"{space}.{name}" if space else name
        aliases = [str(a) for a in obj.get("aliases") or []]
        node: Named
        if kind in ("record", "error"):
            node = Record(full, aliases, props)
            self.names[full] = node
            inner = node.namespace
            for raw in obj["fields"]:
                extra = {k: v for k, v in raw.items() if k not in ("name", "type", "default", "aliases")}
                node.fields.append(
                    Field(
                        str(raw["name"]),
                        self.build(raw["type"], inner),
                        raw.get("default", MISSING),
                        [str(a) for a in raw.get("aliases") or []],
                        extra,
                    )
                )
        elif kind == "enum":
            default = obj.get("default")
            node = Enum(full, aliases, props, [str(s) for s in obj["symbols"]], str(default) if default is not None else None)
            self.names[full] = node
        else:
            node = Fixed(full, aliases, props, int(obj["size"]))
            self.names[full] = node
        return node


def named_types(node: Node) -> dict[str, Named]:
    """Every named type reachable from ``node``, by full name."""
    found: dict[str, Named] = {}
    for item in _walk(node, set()):
        if isinstance(item, Named):
            found[item.fullname] = item
    return found


def is_recursive(node: Node) -> bool:
    """Whether a named type of ``node`` contains itself (a list, a tree): only then can a
    datum nest deeper than the schema, which fastavro's C code cannot take (below)."""
    for named in named_types(node).values():
        for inner in _children(named):
            if any(item is named for item in _walk(inner, set())):
                return True
    return False


def _children(node: Node) -> list[Node]:
    if isinstance(node, Array):
        return [node.items]
    if isinstance(node, Map):
        return [node.values]
    if isinstance(node, Union):
        return list(node.branches)
    if isinstance(node, Record):
        return [f.type for f in node.fields]
    return []


MAX_NESTING = 64
"""How deep a datum of a recursive schema may nest (dicts and lists in one another). fastavro's C reader, writer and validator recurse on the C stack and crash the
process (a segfault, not an exception) a few thousand levels down; its pure-Python
reader stops at Python's recursion limit, a few hundred levels for the usual shapes."""


def nested_deeper_than(datum: Any, limit: int = MAX_NESTING) -> bool:
    """Whether containers in ``datum`` nest more than ``limit`` deep (without recursing)."""
    stack: list[tuple[Any, int]] = [(datum, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, tuple):  # fastavro's (branch name, datum): no level of its own
            stack.extend((child, depth) for child in value)
            continue
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def unknown_field(node: Node, datum: Any) -> str | None:
    """The path of a record field in ``datum`` that ``node`` does not have, or ``None``.

    fastavro ignores unknown keys of nested records when it writes, so a value or an
    update with a misspelt field would silently lose it; callers refuse it instead.
    Recurses along ``datum``: bound its nesting first (:func:`nested_deeper_than`) when
    the schema is recursive."""
    if isinstance(node, Record) and isinstance(datum, Mapping):
        names = {f.name for f in node.fields}
        for key in datum:
            if key not in names:
                return str(key)
        for f in node.fields:
            if f.name in datum:
                inner = unknown_field(f.type, datum[f.name])
                if inner:
                    return f"{f.name}.{inner}"
        return None
    if isinstance(node, Array) and isinstance(datum, list):
        for index, item in enumerate(datum):
            inner = unknown_field(node.items, item)
            if inner:
                return f"[{index}].{inner}"
    if isinstance(node, Map) and isinstance(datum, Mapping):
        for key, item in datum.items():
            inner = unknown_field(node.values, item)
            if inner:
                return f"{{{key}}}.{inner}"
    if isinstance(node, Union) and isinstance(datum, Mapping):
        records = [b for b in node.branches if isinstance(b, Record)]
        maps = [b for b in node.branches if isinstance(b, Map)]
        if len(records) == 1 and not maps:
            return unknown_field(records[0], datum)
    return None


def _walk(node: Node, seen: set[int]) -> Iterator[Node]:
    if id(node) in seen:
        return
    if isinstance(node, Named):
        seen.add(id(node))
    yield node
    if isinstance(node, Array):
        yield from _walk(node.items, seen)
    elif isinstance(node, Map):
        yield from _walk(node.values, seen)
    elif isinstance(node, Union):
        for branch in node.branches:
            yield from _walk(branch, seen)
    elif isinstance(node, Record):
        for f in node.fields:
            yield from _walk(f.type, seen)


def emit(node: Node, defined: set[str] | None = None, namespace: str = "") -> Any:
    """``node`` as schema JSON. Named types in ``defined`` are referenced by name; the
    others are defined at their first use (and added to ``defined``). ``namespace`` is
    the enclosing namespace the JSON will be read in.

    Definitions carry an explicit ``namespace``, so they mean the same wherever they land.
    """
    if defined is None:
        defined = set()
    if isinstance(node, Primitive):
        return {"type": node.kind, **node.props} if node.props else node.kind
    if isinstance(node, Array):
        return {"type": "array", "items": emit(node.items, defined, namespace), **node.props}
    if isinstance(node, Map):
        return {"type": "map", "values": emit(node.values, defined, namespace), **node.props}
    if isinstance(node, Union):
        return [emit(branch, defined, namespace) for branch in node.branches]
    assert isinstance(node, Named)
    if node.fullname in defined:
        return node.name if node.namespace == namespace else node.fullname
    defined.add(node.fullname)
    out: dict[str, Any] = {"type": node.kind, "name": node.name, "namespace": node.namespace}
    if node.aliases:
        out["aliases"] = list(node.aliases)
    if isinstance(node, Record):
        fields = []
        for f in node.fields:
            entry: dict[str, Any] = {"name": f.name, "type": emit(f.type, defined, node.namespace)}
            if f.default is not MISSING:
                entry["default"] = f.default
            if f.aliases:
                entry["aliases"] = list(f.aliases)
            entry.update(f.props)
            fields.append(entry)
        out["fields"] = fields
    elif isinstance(node, Enum):
        out["symbols"] = list(node.symbols)
        if node.default is not None:
            out["default"] = node.default
    elif isinstance(node, Fixed):
        out["size"] = node.size
    out.update(node.props)
    return out


def describe(node: Node) -> str:
    """A short human name of a type, for error messages."""
    if isinstance(node, Named):
        return f"{node.kind} {node.fullname}"
    if isinstance(node, Array):
        return f"array<{describe(node.items)}>"
    if isinstance(node, Map):
        return f"map<{describe(node.values)}>"
    if isinstance(node, Union):
        return "[" + ", ".join(describe(b) for b in node.branches) + "]"
    return node.kind


def default_datum(node: Node, value: Any) -> Any:
    """The datum a reader gets for a field of type ``node`` whose JSON default is ``value``.

    Avro writes ``bytes`` and ``fixed`` defaults as strings of code points 0-255, a
    union's default as a value of its first branch, and a record's as an object whose
    missing fields take their own defaults. Raises ``ValueError`` when the default does
    not fit the type (fastavro checks only the outermost level).
    """
    return _default(node, value, "")


def _default(node: Node, value: Any, path: str) -> Any:
    kind = node.kind
    if isinstance(node, Union):
        if not node.branches:
            raise ValueError(f"{path or 'value'}: a union with no branches has no default")
        # The spec wants the first branch; fastavro also accepts the others, in order.
        errors = []
        for branch in node.branches:
            try:
                return _default(branch, value, path)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0])
    checker = _PRIMITIVE_DEFAULTS.get(kind) if isinstance(node, Primitive) else None
    if checker is not None:
        converted = checker(value)
        if converted is _BAD:
            raise ValueError(f"{path or 'value'}: default {value!r} is not a {kind}")
        return converted
    if isinstance(node, Array):
        if not isinstance(value, list):
            raise ValueError(f"{path or 'value'}: default {value!r} is not an array")
        return [_default(node.items, item, f"{path}[]") for item in value]
    if isinstance(node, Map):
        if not isinstance(value, dict):
            raise ValueError(f"{path or 'value'}: default {value!r} is not a map")
        return {str(k): _default(node.values, v, f"{path}{{}}") for k, v in value.items()}
    if isinstance(node, Enum):
        if value not in node.symbols:
            raise ValueError(f"{path or 'value'}: default {value!r} is not a symbol of {node.fullname}")
        return value
    if isinstance(node, Fixed):
        raw = _latin1(value)
        if raw is None or len(raw) != node.size:
            raise ValueError(f"{path or 'value'}: default {value!r} is not {node.size} bytes")
        return raw
    assert isinstance(node, Record)
    if not isinstance(value, dict):
        raise ValueError(f"{path or 'value'}: default {value!r} is not a record")
    out = {}
    for f in node.fields:
        where = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            out[f.name] = _default(f.type, value[f.name], where)
        elif f.default is not MISSING:
            out[f.name] = _default(f.type, f.default, where)
        else:
            raise ValueError(f"{where}: the default record has no value for it and it has no default")
    return out


_BAD: Any = object()


def _latin1(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


def _integer(bounds: tuple[int, int]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        ok = isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
        return value if ok else _BAD

    return check


def _real(limit: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
            return float(value)  # how Java's Avro writes non-finite defaults
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _BAD
        converted = float(value)
        return converted if not math.isfinite(converted) or abs(converted) <= limit else _BAD

    return check


def _bytes_default(value: Any) -> Any:
    raw = _latin1(value)
    return _BAD if raw is None else raw


_PRIMITIVE_DEFAULTS: dict[str, Callable[[Any], Any]] = {
    "null": lambda v: None if v is None else _BAD,
    "boolean": lambda v: v if isinstance(v, bool) else _BAD,
    "int": _integer(_INT_RANGE),
    "long": _integer(_LONG_RANGE),
    "float": _real(_FLOAT_MAX),
    "double": _real(math.inf),
    "string": lambda v: v if isinstance(v, str) else _BAD,
    "bytes": _bytes_default,
}
