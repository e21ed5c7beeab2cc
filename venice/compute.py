"""Read compute: per key, a projection of fields plus vector functions, run near the data.

A spec (JSON, the body of ``POST /compute/{store}`` without its keys)::

    {"project": ["name"],
     "compute": [{"op": "dot_product", "field": "embedding", "vector": [0.1, ...], "as": "score"},
                 {"op": "cosine_similarity", "field": "embedding", "vector": [...], "as": "cos"},
                 {"op": "hadamard_product", "field": "embedding", "vector": [...], "as": "prod"},
                 {"op": "count", "field": "tags", "as": "n_tags"}]}

For each key the result is an object with the projected fields (in the store's newest
value schema) and one entry per op, named by ``as``: the dot product, the cosine
similarity (0.0 when either vector is all zeros) and the element-wise product of a
``float``/``double`` array field with ``vector``, and the number of items of an array or
map field; ``null`` where the field is null. Values must be records.

:class:`ComputeSpec` checks a spec (every problem is a :class:`~venice.errors.RequestError`
naming what is wrong); :class:`Computer` checks it against the store's schema (a field
that does not exist, or is not a numeric array, is a 400 naming the field) and runs it
over stored values. Values of the newest schema are not decoded whole: each record is
walked field by field, skipping what the spec does not need, and float arrays are read
straight into numpy (a record of 64 floats costs a few microseconds instead of the
~15 µs of a full decode); the vector functions then run once per batch as matrix
products. Values of older schemas are decoded into the newest schema first. No I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from venice.avrotree import Array, Enum, Field, Fixed, Map, Node, Primitive, Record, Union, load
from venice.errors import InternalError, RequestError, UnknownSchemaError, VeniceError
from venice.evolution import ValueDecoder

if TYPE_CHECKING:
    import numpy as np
else:

    class _NumpyOnFirstUse:
        """numpy, imported when a computation first needs it: every storage server imports
        this module (server/compute.py), and numpy costs ~16 MB of resident memory (9 MB of
        it anonymous) that a server which never computes would carry. The first attribute
        looked up replaces this stand-in with the module itself."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy
            return getattr(numpy, name)

    np = _NumpyOnFirstUse()

__all__ = [
    "MAX_OPS",
    "MAX_PROJECT",
    "MAX_RESULT_NUMBERS",
    "MAX_VECTOR_LENGTH",
    "MAX_WORK",
    "OPS",
    "ComputeOp",
    "ComputeSpec",
    "Computer",
]

OPS = ("dot_product", "cosine_similarity", "hadamard_product", "count")
VECTOR_OPS = frozenset(OPS[:3])
MAX_OPS = 64
MAX_PROJECT = 256
MAX_VECTOR_LENGTH = 65_536
"""Longest vector one op may carry (512 KiB of doubles)."""
MAX_TOTAL_VECTOR = 262_144
"""Most numbers all the vectors of one spec may carry together."""
MAX_NAME = 255
MAX_WORK = 50_000_000
"""Most numbers one request may multiply: keys x the vectors' lengths (a vector op over
10,000 keys takes vectors of up to 5,000 numbers; fewer keys, longer vectors)."""
MAX_RESULT_NUMBERS = 5_000_000
"""Most numbers element-wise products may return for one request (keys x their lengths)."""


@dataclass(frozen=True, slots=True)
class ComputeOp:
    op: str
    field: str
    name: str
    """The key of its result (``as``)."""
    vector: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ComputeSpec:
    project: tuple[str, ...]
    ops: tuple[ComputeOp, ...]

    @classmethod
    def from_json(cls, value: Any, *, allowed: frozenset[str] = frozenset({"project", "compute"})) -> ComputeSpec:
        """The spec of a parsed JSON object; RequestError naming the problem."""
        if not isinstance(value, dict):
            raise RequestError("a compute spec is a JSON object with 'project' and/or 'compute'")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise RequestError(f"unknown entry {unknown[0][:50]!r} in the compute spec (expected: {', '.join(sorted(allowed))})")
        project = value.get("project", [])
        if not isinstance(project, list) or len(project) > MAX_PROJECT:
            raise RequestError(f"project: a list of at most {MAX_PROJECT} field names")
        for name in project:
            _name(name, "project")
        if len(set(project)) != len(project):
            raise RequestError("project: a field is named twice")
        raw_ops = value.get("compute", [])
        if not isinstance(raw_ops, list) or len(raw_ops) > MAX_OPS:
            raise RequestError(f"compute: a list of at most {MAX_OPS} operations")
        ops = tuple(_op(raw, i) for i, raw in enumerate(raw_ops))
        if not project and not ops:
            raise RequestError("a compute spec needs at least one projected field or operation")
        names = [*project, *(op.name for op in ops)]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise RequestError(f"result name {twice!r} is used twice (a projected field and an 'as', or two 'as')")
        if sum(len(op.vector) for op in ops) > MAX_TOTAL_VECTOR:
            raise RequestError(f"the vectors of one spec may hold at most {MAX_TOTAL_VECTOR} numbers together")
        return cls(tuple(project), ops)

    def check_cost(self, keys: int) -> None:
        """RequestError when ``keys`` keys would make this spec too costly to run or answer."""
        work = keys * sum(len(op.vector) for op in self.ops)
        if work > MAX_WORK:
            raise RequestError(
                f"{keys} keys x {work // max(keys, 1)} vector numbers is {work:,} multiplications; "
                f"a request may do at most {MAX_WORK:,} (send fewer keys or shorter vectors)"
            )
        out = keys * sum(len(op.vector) for op in self.ops if op.op == "hadamard_product")
        if out > MAX_RESULT_NUMBERS:
            raise RequestError(
                f"hadamard_product over {keys} keys would return {out:,} numbers; a request may return at most "
                f"{MAX_RESULT_NUMBERS:,}"
            )

    def to_json(self) -> dict[str, Any]:
        ops: list[dict[str, Any]] = []
        for op in self.ops:
            entry: dict[str, Any] = {"op": op.op, "field": op.field, "as": op.name}
            if op.op in VECTOR_OPS:
                entry["vector"] = list(op.vector)
            ops.append(entry)
        return {"project": list(self.project), "compute": ops}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def from_bytes(cls, raw: bytes) -> ComputeSpec:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the compute spec is not valid JSON: {exc}") from None
        return cls.from_json(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise RequestError(f"{where}: {str(value)[:60]!r} is not a name (a string of 1 to {MAX_NAME} characters)")
    return value


def _op(raw: Any, index: int) -> ComputeOp:
    where = f"compute[{index}]"
    if not isinstance(raw, dict):
        raise RequestError(f"{where}: an operation is an object with 'op', 'field' and 'as'")
    op = raw.get("op")
    if op not in OPS:
        raise RequestError(f"{where}.op: {str(op)[:60]!r} is not one of {', '.join(OPS)}")
    expected = {"op", "field", "as"} | ({"vector"} if op in VECTOR_OPS else set())
    unknown = sorted(set(raw) - expected)
    if unknown:
        raise RequestError(f"{where}: unknown entry {unknown[0][:50]!r} for {op}")
    field = _name(raw.get("field"), f"{where}.field")
    name = _name(raw.get("as"), f"{where}.as")
    if op not in VECTOR_OPS:
        return ComputeOp(op, field, name)
    vector = raw.get("vector")
    if not isinstance(vector, list) or not 0 < len(vector) <= MAX_VECTOR_LENGTH:
        raise RequestError(f"{where}.vector: a list of 1 to {MAX_VECTOR_LENGTH} numbers, for field {field!r}")
    for item in vector:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise RequestError(f"{where}.vector: {str(item)[:40]!r} is not a number (field {field!r})")
        if (isinstance(item, float) and not math.isfinite(item)) or (isinstance(item, int) and abs(item) > 1 << 1023):
            raise RequestError(f"{where}.vector: {item!r} is not a finite number (field {field!r})")
    return ComputeOp(op, field, name, tuple(float(x) for x in vector))


# -- the schema side ------------------------------------------------------------------------


def _without_null(node: Node) -> tuple[Node, bool]:
    """``["null", T]`` -> ``(T, True)``; anything else -> ``(node, False)``."""
    if isinstance(node, Union):
        others = [b for b in node.branches if not (isinstance(b, Primitive) and b.kind == "null")]
        if len(others) == 1 and len(node.branches) == 2:
            return others[0], True
    return node, False


def _float_items(node: Node) -> str | None:
    """``"<f4"``/``"<f8"`` for an array of float/double (nullable or not), else ``None``."""
    inner, _ = _without_null(node)
    if isinstance(inner, Array) and isinstance(inner.items, Primitive) and inner.items.kind in ("float", "double"):
        return "<f4" if inner.items.kind == "float" else "<f8"
    return None


class Computer:
    """A spec checked against one store's value schemas, ready to run over stored values."""

    def __init__(self, schemas: Mapping[int, Any], spec: ComputeSpec) -> None:
        self.spec = spec
        self.decoder = ValueDecoder(schemas)
        newest = load(schemas[self.decoder.newest_id])
        if not isinstance(newest, Record):
            raise RequestError("read compute needs record values: this store's value schema is not a record")
        fields = {f.name: f for f in newest.fields}
        for name in spec.project:
            if name not in fields:
                raise RequestError(f"project: the value schema has no field {name!r}", field=name)
        for op in spec.ops:
            found = fields.get(op.field)
            if found is None:
                raise RequestError(f"{op.op}: the value schema has no field {op.field!r}", field=op.field)
            if op.op == "count":
                inner, _ = _without_null(found.type)
                if not isinstance(inner, (Array, Map)):
                    raise RequestError(f"count: field {op.field!r} is not a list or a map", field=op.field)
            elif _float_items(found.type) is None:
                raise RequestError(f"{op.op}: field {op.field!r} is not an array of float or double", field=op.field)
        self._vectors = {id(op): np.asarray(op.vector, dtype=np.float64) for op in spec.ops if op.op in VECTOR_OPS}
        self._walk = _compile_walk(newest, spec)
        self._newest_id = self.decoder.newest_id
        self._order = [*spec.project, *(op.name for op in spec.ops)]

    def run(self, stored: Sequence[tuple[int, bytes] | None]) -> list[dict[str, Any] | None]:
        """The result of each ``(schema id, Avro bytes)``; ``None`` for a missing key.

        RequestError (naming the field) when a vector's length differs from the field's."""
        rows: list[dict[str, Any] | None] = []
        for item in stored:
            if item is None:
                rows.append(None)
                continue
            schema_id, data = item
            try:
                if schema_id == self._newest_id and self._walk is not None:
                    rows.append(self._walk(data))
                else:
                    rows.append(self._from_datum(self.decoder.decode(schema_id, data)))
            except VeniceError as exc:
                if isinstance(exc, UnknownSchemaError):
                    raise
                raise InternalError(f"a stored value does not decode: {exc.message}") from exc
            except (IndexError, ValueError, struct.error) as exc:
                raise InternalError(f"a stored value does not decode: {exc}") from exc
        return self._finish(rows)

    def _from_datum(self, datum: Any) -> dict[str, Any]:
        row: dict[str, Any] = {name: datum.get(name) for name in self.spec.project}
        for op in self.spec.ops:
            value = datum.get(op.field)
            if op.op == "count":
                row[op.name] = None if value is None else len(value)
            else:
                row[op.name] = None if value is None else np.asarray(value, dtype=np.float64)
        return row

    def _finish(self, rows: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
        """Run the vector functions over all rows at once (matrix products)."""
        for op in self.spec.ops:
            if op.op == "count":
                continue
            vector = self._vectors[id(op)]
            present = [(i, row[op.name]) for i, row in enumerate(rows) if row is not None and row[op.name] is not None]
            if not present:
                continue
            for i, array in present:
                if len(array) != len(vector):
                    raise RequestError(
                        f"{op.op}: field {op.field!r} holds {len(array)} numbers in the value of key #{i}, "
                        f"the vector {len(vector)}",
                        field=op.field,
                    )
            matrix = np.vstack([array for _, array in present]).astype(np.float64, copy=False)
            if op.op == "hadamard_product":
                out: list[Any] = (matrix * vector).tolist()
            else:
                dots = matrix @ vector
                if op.op == "cosine_similarity":
                    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
                    with np.errstate(divide="ignore", invalid="ignore"):
                        dots = np.where(norms > 0.0, dots / np.where(norms > 0.0, norms, 1.0), 0.0)
                out = dots.tolist()
            for (i, _), result in zip(present, out, strict=True):
                row = rows[i]
                assert row is not None
                row[op.name] = result
        order = self._order
        return [None if row is None else {name: row[name] for name in order} for row in rows]


# -- walking a record without decoding it ------------------------------------------------------

Skip = Callable[[bytes, int], int]


def _long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n, shift = b & 0x7F, 7
    pos += 1
    while True:
        b = data[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


_FIXED_SIZE = {"null": 0, "boolean": 1, "float": 4, "double": 8}


def _skipper(node: Node, memo: dict[int, Skip]) -> Skip:
    """A function skipping one datum of ``node``: ``(data, pos) -> next pos``."""
    found = memo.get(id(node))
    if found is not None:
        return found
    if isinstance(node, Primitive):
        if node.kind in _FIXED_SIZE:
            size = _FIXED_SIZE[node.kind]
            skip: Skip = lambda data, pos: pos + size
        elif node.kind in ("int", "long"):
            skip = lambda data, pos: _long(data, pos)[1]
        else:  # bytes, string

            def skip(data: bytes, pos: int) -> int:
                length, pos = _long(data, pos)
                return pos + length

    elif isinstance(node, Enum):
        skip = lambda data, pos: _long(data, pos)[1]
    elif isinstance(node, Fixed):
        size = node.size
        skip = lambda data, pos: pos + size
    elif isinstance(node, (Array, Map)):
        skip = _block_skipper(node, memo)
    elif isinstance(node, Union):
        branches: list[Skip] = []
        memo[id(node)] = lambda data, pos: _union_skip(branches, data, pos)
        branches.extend(_skipper(b, memo) for b in node.branches)
        return memo[id(node)]
    elif isinstance(node, Record):
        parts: list[Skip] = []

        def skip(data: bytes, pos: int) -> int:
            for part in parts:
                pos = part(data, pos)
            return pos

        memo[id(node)] = skip  # before the fields: a recursive record refers to itself
        parts.extend(_skipper(f.type, memo) for f in node.fields)
        return skip
    else:  # pragma: no cover - every node kind is handled above
        raise InternalError(f"cannot skip a {node.kind}")
    memo[id(node)] = skip
    return skip


def _union_skip(branches: list[Skip], data: bytes, pos: int) -> int:
    index, pos = _long(data, pos)
    return branches[index](data, pos)


def _block_skipper(node: Array | Map, memo: dict[int, Skip]) -> Skip:
    item = _skipper(node.items if isinstance(node, Array) else node.values, memo)
    is_map = isinstance(node, Map)

    def skip(data: bytes, pos: int) -> int:
        while True:
            count, pos = _long(data, pos)
            if count == 0:
                return pos
            if count < 0:  # a block that says its size in bytes: jump over it
                size, pos = _long(data, pos)
                pos += size
                continue
            for _ in range(count):
                if is_map:
                    length, pos = _long(data, pos)
                    pos += length
                pos = item(data, pos)

    return skip


def _counter(node: Array | Map, memo: dict[int, Skip]) -> Callable[[bytes, int], tuple[int, int]]:
    item = _skipper(node.items if isinstance(node, Array) else node.values, memo)
    is_map = isinstance(node, Map)

    def count_items(data: bytes, pos: int) -> tuple[int, int]:
        total = 0
        while True:
            count, pos = _long(data, pos)
            if count == 0:
                return total, pos
            if count < 0:
                count = -count
                size, pos = _long(data, pos)
                total += count
                pos += size
                continue
            total += count
            for _ in range(count):
                if is_map:
                    length, pos = _long(data, pos)
                    pos += length
                pos = item(data, pos)

    return count_items


def _float_reader(dtype: str) -> Callable[[bytes, int], tuple[Any, int]]:
    width = 4 if dtype == "<f4" else 8

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        blocks = []
        while True:
            count, pos = _long(data, pos)
            if count == 0:
                break
            if count < 0:
                count = -count
                _, pos = _long(data, pos)
            blocks.append(np.frombuffer(data, dtype=dtype, count=count, offset=pos))
            pos += count * width
        if len(blocks) == 1:
            return blocks[0], pos
        return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=dtype)), pos

    return read


_PRIMITIVE_READERS: dict[str, Callable[[bytes, int], tuple[Any, int]]] = {
    "null": lambda data, pos: (None, pos),
    "boolean": lambda data, pos: (data[pos] == 1, pos + 1),
    "int": _long,
    "long": _long,
    "float": lambda data, pos: (struct.unpack_from("<f", data, pos)[0], pos + 4),
    "double": lambda data, pos: (struct.unpack_from("<d", data, pos)[0], pos + 8),
}


def _string(data: bytes, pos: int) -> tuple[Any, int]:
    length, pos = _long(data, pos)
    return data[pos : pos + length].decode("utf-8"), pos + length


def _bytes(data: bytes, pos: int) -> tuple[Any, int]:
    length, pos = _long(data, pos)
    return data[pos : pos + length], pos + length


def _value_reader(node: Node) -> Callable[[bytes, int], tuple[Any, int]] | None:
    """A reader of a projected field's datum, for the simple types (else ``None``)."""
    inner, nullable = _without_null(node)
    if isinstance(inner, Primitive) and not inner.props.get("logicalType"):
        base = _PRIMITIVE_READERS.get(inner.kind) or (_string if inner.kind == "string" else _bytes)
    elif isinstance(inner, Enum):
        symbols = list(inner.symbols)

        def base(data: bytes, pos: int) -> tuple[Any, int]:
            index, pos = _long(data, pos)
            return symbols[index], pos

    else:
        return None
    if not nullable:
        return base
    assert isinstance(node, Union)
    null_first = isinstance(node.branches[0], Primitive) and node.branches[0].kind == "null"

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _long(data, pos)
        if (index == 0) == null_first:
            return None, pos
        return base(data, pos)

    return read


def _nullable(node: Node, reader: Callable[[bytes, int], tuple[Any, int]]) -> Callable[[bytes, int], tuple[Any, int]]:
    """``reader`` of the non-null branch of ``node``, returning ``None`` for null."""
    if not isinstance(node, Union):
        return reader
    null_index = next(i for i, b in enumerate(node.branches) if isinstance(b, Primitive) and b.kind == "null")

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _long(data, pos)
        if index == null_index:
            return None, pos
        return reader(data, pos)

    return read


def _compile_walk(record: Record, spec: ComputeSpec) -> Callable[[bytes], dict[str, Any]] | None:
    """A function from a value's bytes to its row (projections read, arrays in numpy),
    or ``None`` when a projected field is of a type this walk does not read (the full
    decoder then does it)."""
    memo: dict[int, Skip] = {}
    wanted: dict[str, list[tuple[str, Callable[[bytes, int], tuple[Any, int]]]]] = {}
    for name in spec.project:
        field = next(f for f in record.fields if f.name == name)
        reader = _value_reader(field.type)
        if reader is None:
            return None
        wanted.setdefault(name, []).append((name, reader))
    for op in spec.ops:
        field = next(f for f in record.fields if f.name == op.field)
        inner, _ = _without_null(field.type)
        if op.op == "count":
            assert isinstance(inner, (Array, Map))
            reader = _nullable(field.type, _counter(inner, memo))
        else:
            dtype = _float_items(field.type)
            assert dtype is not None
            reader = _nullable(field.type, _float_reader(dtype))
        wanted.setdefault(op.field, []).append((op.name, reader))
    last = max(i for i, f in enumerate(record.fields) if f.name in wanted)
    steps: list[tuple[Field, Skip | None, list[tuple[str, Callable[[bytes, int], tuple[Any, int]]]]]] = []
    for field in record.fields[: last + 1]:
        readers = wanted.get(field.name)
        steps.append((field, None if readers else _skipper(field.type, memo), readers or []))
    plan = [(skip, readers) for _, skip, readers in steps]

    def walk(data: bytes) -> dict[str, Any]:
        row: dict[str, Any] = {}
        pos = 0
        for skip, readers in plan:
            if skip is not None:
                pos = skip(data, pos)
                continue
            start = pos
            for name, reader in readers:  # a field counted and projected is read twice
                row[name], pos = reader(data, start)
        return row

    return walk
