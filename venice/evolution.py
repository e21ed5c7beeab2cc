"""Value-schema evolution: which schema may follow which, and reading old values as new.

A store's value schema changes over time while data written with the older ones stays
stored (pushed versions, nearline writes) and producers move to the new one at their
own pace. So a store registers schema N+1 only when it can read data written with
every earlier schema *and* every earlier schema can read data written with it ("full"
compatibility under Avro's schema resolution): any reader may then meet any writer.

The rules (Avro's, as fastavro applies them, made into a check on schemas rather than
a failure on some datum months later):

* same primitive type, or a promotion: ``int`` -> ``long`` -> ``float`` -> ``double``,
  ``string`` <-> ``bytes`` (never when a ``logicalType`` is involved);
* records, enums and fixed match by unqualified name or by a reader alias; record
  fields match by name, then by the reader field's aliases; a reader field the writer
  lacks needs a default that fits its type; writer fields the reader lacks are skipped;
* an enum reader must know every writer symbol or have a default; fixed sizes agree;
* arrays and maps resolve their items and values;
* a writer union needs every branch readable; a reader union reads a writer type with
  its first branch that matches it.

Paths in messages name record fields by dots, array items by ``[]`` and map values by
``{}``: ``address.zip``, ``tags[]``, ``scores{}``.

:class:`ValueDecoder` is what readers use on every read: it turns ``(schema_id, avro
bytes)`` into a datum of the store's newest schema (defaults filled) with schemas
parsed once and a direct path for the newest id. :func:`propose_schema` drafts the
schema to add for a push file with fields the newest schema lacks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

from venice.avroio import avro_reader
from venice.avrotree import (
    MISSING,
    Array,
    Enum,
    Fixed,
    Map,
    Named,
    Node,
    Primitive,
    Record,
    Union,
    default_datum,
    describe,
    emit,
    is_recursive,
    load,
)
from venice.errors import InvalidInputError, InvalidValueError, SchemaError, UnknownSchemaError
from venice.push.infer import _Conflict, _CsvColumn, _Shape, avro_name
from venice.schema import AvroCodec

__all__ = [
    "ValueDecoder",
    "check_compatible",
    "propose_schema",
    "read_problem",
    "resolve_datum",
]

Convert = Callable[[Any], Any]

_PROMOTIONS = frozenset({
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
})  # fmt: skip


class _Incompatible(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def describe(self) -> str:
        return f"{'field ' + self.path if self.path else 'at the top level'}: {self.reason}"


# --- Compatibility and resolution: one set of rules -------------------------------------
# The check and the conversion of old data are one walk, so what the check accepts is
# exactly what the decoder can convert.


def _names_match(reader: Named, writer: Named) -> bool:
    if reader.kind != writer.kind:
        return False
    if reader.name == writer.name:
        return True
    return writer.fullname in reader.qualified_aliases() or writer.fullname in reader.aliases or writer.name in reader.aliases


def _matches(reader: Node, writer: Node) -> bool:
    """Whether a reader union branch is the one that reads ``writer`` (shallow, as Avro picks it)."""
    if isinstance(reader, Primitive) and isinstance(writer, Primitive):
        return reader.kind == writer.kind or (writer.kind, reader.kind) in _PROMOTIONS
    if isinstance(reader, Array) and isinstance(writer, Array):
        return _loosely_matches(reader.items, writer.items)
    if isinstance(reader, Map) and isinstance(writer, Map):
        return _loosely_matches(reader.values, writer.values)
    if isinstance(reader, Named) and isinstance(writer, Named):
        if isinstance(reader, Fixed) and isinstance(writer, Fixed) and reader.size != writer.size:
            return False
        return _names_match(reader, writer)
    return False


def _loosely_matches(reader: Node, writer: Node) -> bool:
    return isinstance(reader, Union) or isinstance(writer, Union) or _matches(reader, writer)


def _identity(datum: Any) -> Any:
    return datum


def _utf8(raw: bytes) -> str:
    return raw.decode("utf-8")


def _utf8_bytes(text: str) -> bytes:
    return text.encode("utf-8")


_PROMOTE: dict[tuple[str, str], Convert] = {
    ("int", "float"): float, ("int", "double"): float, ("long", "float"): float, ("long", "double"): float,
    ("string", "bytes"): _utf8_bytes, ("bytes", "string"): _utf8,
}  # fmt: skip

# Python type of a decoded datum -> the Avro kinds it can come from, in preference order.
_KINDS_OF_TYPE: dict[type, tuple[str, ...]] = {
    type(None): ("null",),
    bool: ("boolean",),
    int: ("int", "long", "float", "double"),
    float: ("double", "float"),
    str: ("string", "enum"),
    bytes: ("bytes", "fixed"),
    list: ("array",),
    dict: ("map", "record"),
}
_PY_GROUP = {"record": dict, "map": dict, "string": str, "enum": str, "bytes": bytes, "fixed": bytes}


class _Cell:
    """Stands in for a record conversion still being built (recursive schemas)."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: Convert = _identity

    def __call__(self, datum: Any) -> Any:
        return self.target(datum)


class _Compiler:
    """Checks that ``reader`` reads ``writer`` and builds the conversion of writer datums.

    ``tags_in``: union values of named types arrive as ``(fullname, datum)`` (fastavro's
    ``return_named_type``), needed when a union has two branches that decode to the same
    Python type (a record and a map, an enum and a string, ...). ``tags_out``: produce
    that form for the reader's unions, so re-encoding keeps the branch. A conversion of
    ``None`` means the datum is already right.
    """

    def __init__(self, *, tags_in: bool = False, tags_out: bool = False) -> None:
        self.tags_in = tags_in
        self.tags_out = tags_out
        self._building: dict[tuple[int, int], _Cell] = {}
        self._done: dict[tuple[int, int], Convert | None] = {}

    def compile(self, writer: Node, reader: Node, path: str) -> Convert | None:
        if isinstance(writer, Union):
            return self._from_union(writer, reader, path)
        if isinstance(reader, Union):
            branch = next((b for b in reader.branches if _matches(b, writer)), None)
            if branch is None:
                raise _Incompatible(path, f"written as {describe(writer)}, which no branch of {describe(reader)} reads")
            convert = self.compile(writer, branch, path)
            if self.tags_out and isinstance(branch, Named):
                return _tagging(branch.fullname, convert)
            return convert
        if isinstance(writer, Primitive) and isinstance(reader, Primitive):
            return self._primitive(writer, reader, path)
        if isinstance(writer, Array) and isinstance(reader, Array):
            items = self.compile(writer.items, reader.items, f"{path}[]")
            return None if items is None else (lambda datum: [items(item) for item in datum])
        if isinstance(writer, Map) and isinstance(reader, Map):
            values = self.compile(writer.values, reader.values, f"{path}{{}}")
            return None if values is None else (lambda datum: {k: values(v) for k, v in datum.items()})
        if isinstance(writer, Named) and isinstance(reader, Named) and writer.kind == reader.kind:
            if not _names_match(reader, writer):
                raise _Incompatible(
                    path,
                    f"written as {describe(writer)}, read as {describe(reader)}: the names differ and no reader alias matches",
                )
            if isinstance(writer, Record) and isinstance(reader, Record):
                return self._record(writer, reader, path)
            if isinstance(writer, Enum) and isinstance(reader, Enum):
                return _enum(writer, reader, path)
            if isinstance(writer, Fixed) and isinstance(reader, Fixed) and writer.size != reader.size:
                raise _Incompatible(path, f"fixed {writer.fullname} is {writer.size} bytes written, {reader.size} read")
            return None
        raise _Incompatible(path, f"written as {describe(writer)}, which cannot be read as {describe(reader)}")

    def _primitive(self, writer: Primitive, reader: Primitive, path: str) -> Convert | None:
        if writer.kind == reader.kind:
            return None
        if (writer.kind, reader.kind) not in _PROMOTIONS:
            raise _Incompatible(path, f"written as {writer.kind}, which cannot be read as {reader.kind}")
        if writer.logical or reader.logical:
            raise _Incompatible(path, f"written as {_describe_logical(writer)}, read as {_describe_logical(reader)}: "
                                      "a logical type is never promoted")  # fmt: skip
        return _PROMOTE.get((writer.kind, reader.kind))  # None: int -> long, float -> double are the same in Python

    def _record(self, writer: Record, reader: Record, path: str) -> Convert | None:
        key = (id(writer), id(reader))
        if key in self._done:
            return self._done[key]
        cell = self._building.get(key)
        if cell is not None:  # a recursive reference: the conversion is not built yet
            return cell
        cell = self._building[key] = _Cell()
        self._done[key] = result = self._record_plan(writer, reader, path, cell)
        del self._building[key]
        return result

    def _record_plan(self, writer: Record, reader: Record, path: str, cell: _Cell) -> Convert | None:
        by_name = {f.name: f for f in writer.fields}
        plan: list[tuple[str, str | None, Convert | None, Any, bool]] = []
        for field in reader.fields:
            where = f"{path}.{field.name}" if path else field.name
            source = by_name.get(field.name) or next((by_name[a] for a in field.aliases if a in by_name), None)
            if source is not None:
                plan.append((field.name, source.name, self.compile(source.type, field.type, where), None, False))
                continue
            if field.default is MISSING:
                raise _Incompatible(where, "the reader's field has no default and the writer's data does not have it")
            try:
                value = default_datum(field.type, field.default)
            except ValueError as exc:
                raise _Incompatible(where, f"the reader's default does not fit the field's type: {exc}") from None
            plan.append((field.name, None, None, value, isinstance(value, (list, dict))))
        identity = len(plan) == len(writer.fields) and all(p[1] == p[0] and p[2] is None for p in plan)
        if identity:
            return None  # the cell keeps _identity for any recursive use
        cell.target = _record_converter(tuple(plan))
        return cell.target

    def _from_union(self, writer: Union, reader: Node, path: str) -> Convert | None:
        targets: list[tuple[Convert | None, str | None]] = []
        identity = True
        for branch in writer.branches:
            chosen: Node | None = reader
            tag = None
            if isinstance(reader, Union):
                chosen = next((b for b in reader.branches if _matches(b, branch)), None)
                if chosen is None:
                    raise _Incompatible(path, f"written as {describe(branch)} (a branch of the writer's union), "
                                              f"which no branch of {describe(reader)} reads")  # fmt: skip
                if self.tags_out and isinstance(chosen, Named):
                    tag = chosen.fullname
            assert chosen is not None
            convert = self.compile(branch, chosen, path)
            targets.append((convert, tag))
            # Unchanged when nothing is converted and a tag comes out exactly as it went in.
            tag_in = branch.fullname if self.tags_in and isinstance(branch, Named) else None
            identity = identity and convert is None and tag_in == tag
        if identity:
            return None
        return _union_converter(writer, targets)


def _describe_logical(node: Primitive) -> str:
    return f"{node.kind} ({node.logical})" if node.logical else node.kind


def _tagging(name: str, convert: Convert | None) -> Convert:
    if convert is None:
        return lambda datum: (name, datum)
    return lambda datum: (name, convert(datum))


def _enum(writer: Enum, reader: Enum, path: str) -> Convert | None:
    known = frozenset(reader.symbols)
    unknown = [s for s in writer.symbols if s not in known]
    if not unknown:
        return None
    if reader.default is None:
        raise _Incompatible(path, f"enum {reader.fullname} lacks writer symbol(s) {', '.join(unknown)} and has no default")
    default = reader.default
    return lambda symbol: symbol if symbol in known else default


def _record_converter(plan: tuple[tuple[str, str | None, Convert | None, Any, bool], ...]) -> Convert:
    def convert(datum: Any) -> Any:
        out = {}
        for name, source, inner, default, fresh in plan:
            if source is None:
                out[name] = copy.deepcopy(default) if fresh else default
            elif inner is None:
                out[name] = datum[source]
            else:
                out[name] = inner(datum[source])
        return out

    return convert


def _union_converter(writer: Union, targets: list[tuple[Convert | None, str | None]]) -> Convert:
    by_name = {b.fullname: i for i, b in enumerate(writer.branches) if isinstance(b, Named)}
    by_type: dict[type, int] = {}
    for pytype, kinds in _KINDS_OF_TYPE.items():
        for kind in kinds:
            index = next((i for i, b in enumerate(writer.branches) if b.kind == kind), None)
            if index is not None:
                by_type[pytype] = index
                break
    # Logical types decode to other Python types (datetime, Decimal, UUID, ...).
    logical = next((i for i, b in enumerate(writer.branches) if isinstance(b, Primitive) and b.logical), None)

    def convert(datum: Any) -> Any:
        if type(datum) is tuple:
            name, datum = datum
            index = by_name[name]
        else:
            found = by_type.get(type(datum), logical)
            if found is None:
                raise ValueError(f"a {type(datum).__name__} fits no branch of the union")
            index = found
        inner, tag = targets[index]
        if inner is not None:
            datum = inner(datum)
        return datum if tag is None else (tag, datum)

    return convert


def _problem(reader: Node, writer: Node) -> _Incompatible | None:
    try:
        _Compiler().compile(writer, reader, "")
    except _Incompatible as exc:
        return exc
    return None


def read_problem(reader: Any, writer: Any) -> str | None:
    """Why data written with schema ``writer`` cannot be read with schema ``reader``;
    ``None`` when it can. Either schema as JSON text, a primitive name or parsed JSON."""
    problem = _problem(load(reader), load(writer))
    return None if problem is None else problem.describe()


def check_compatible(existing: Sequence[Any], new: Any) -> None:
    """Raise :class:`SchemaError` unless ``new`` may join a store whose value schemas are
    ``existing`` (ids 1, 2, ... in order): ``new`` must read data written with each of
    them, and each of them must read data written with ``new``.

    The error names the schemas (which reads, which wrote) and the field path, also in
    ``details`` (``field``, ``reader``, ``writer``: a schema id or ``"new"``).
    """
    new_tree = load(new)
    for schema_id, old in enumerate(existing, start=1):
        old_tree = load(old)
        for reader, writer, reader_id, writer_id in (
            (new_tree, old_tree, "new", schema_id),
            (old_tree, new_tree, schema_id, "new"),
        ):
            problem = _problem(reader, writer)
            if problem is not None:
                raise SchemaError(
                    f"{_schema_label(reader_id)} cannot read data written with {_schema_label(writer_id)}: {problem.describe()}",
                    field=problem.path,
                    reader=reader_id,
                    writer=writer_id,
                )


def _schema_label(schema_id: int | str) -> str:
    return "the new schema" if schema_id == "new" else f"value schema {schema_id}"


# --- Decoding values of any registered schema as the newest ----------------------------


def _ambiguous(tree: Node) -> bool:
    """Whether some union of ``tree`` has two branches that decode to one Python type."""
    seen: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Union):
            groups = [_PY_GROUP[b.kind] for b in node.branches if b.kind in _PY_GROUP]
            if len(groups) != len(set(groups)):
                return True
            stack.extend(node.branches)
        elif isinstance(node, Array):
            stack.append(node.items)
        elif isinstance(node, Map):
            stack.append(node.values)
        elif isinstance(node, Record):
            stack.extend(f.type for f in node.fields)
    return False


@dataclass(slots=True)
class _Schema:
    """One registered value schema, parsed once."""

    schema_id: int
    tree: Node
    parsed: Any
    """fastavro's parse with its "already parsed" mark, so decoding does not re-parse."""
    ambiguous: bool
    plain: Callable[[bytes], Any]
    tagged: Callable[[bytes], Any]


class ValueDecoder:
    """Decodes ``(schema_id, avro_bytes)`` of a store into datums of its newest schema.

    Built from the store's value schemas by id; each is parsed once, on first use. A
    value of the newest schema is read by fastavro straight into its datum (a primitive
    schema by :class:`~venice.schema.AvroCodec`'s direct codecs); an older one is read
    with its own schema and converted by a function compiled once per schema id (fields
    renamed, promoted, dropped, defaults filled), which measured faster than fastavro's
    resolving reader (see ``bench/evolution.py``).

    Errors: :class:`UnknownSchemaError` for an id it was not given (refresh the schemas
    and build a new decoder), :class:`InvalidValueError` for bytes that do not decode or
    a pair of schemas that do not resolve.
    """

    def __init__(self, schemas: Mapping[int, Any]) -> None:
        if not schemas:
            raise SchemaError("a store has at least one value schema")
        self._sources = {int(k): v for k, v in schemas.items()}
        self.newest_id = max(self._sources)
        self._schemas: dict[int, _Schema] = {}
        self._decoders: dict[tuple[int, int, bool], Callable[[bytes], Any]] = {}
        self._to_newest: dict[int, Callable[[bytes], Any]] = {}

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._sources

    @property
    def schema_ids(self) -> list[int]:
        return sorted(self._sources)

    def decode(self, schema_id: int, data: bytes) -> Any:
        """The datum of the newest schema for a value written with ``schema_id``."""
        decoder = self._to_newest.get(schema_id)
        if decoder is None:
            decoder = self._to_newest[schema_id] = self.decoder(schema_id)
        return decoder(data)

    def decode_as(self, schema_id: int, data: bytes, reader_id: int, *, tagged: bool = False) -> Any:
        """The datum of schema ``reader_id`` for a value written with ``schema_id``.

        ``tagged``: union values of named types come as ``(fullname, datum)``, the form
        fastavro writes back into the same branch (partial updates re-encode values).
        """
        return self.decoder(schema_id, reader_id, tagged=tagged)(data)

    def decoder(self, schema_id: int, reader_id: int | None = None, *, tagged: bool = False) -> Callable[[bytes], Any]:
        """The function ``bytes -> datum`` for values of ``schema_id`` read as ``reader_id``
        (default: the newest), for callers that decode many values of one id."""
        target = self.newest_id if reader_id is None else reader_id
        key = (schema_id, target, tagged)
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = self._build(schema_id, target, tagged)
        return decoder

    def tree(self, schema_id: int) -> Node:
        return self._schema(schema_id).tree

    def _schema(self, schema_id: int) -> _Schema:
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        source = self._sources.get(schema_id)
        if source is None:
            known = ", ".join(str(i) for i in sorted(self._sources))
            raise UnknownSchemaError(f"unknown value schema id {schema_id} (known: {known})", schema_id=schema_id)
        tree = load(source)
        parsed = fastavro.parse_schema(emit(tree))
        what, recursive = f"value of schema {schema_id}", is_recursive(tree)
        plain = avro_reader(what, parsed, named_types=False, recursive=recursive)
        if isinstance(tree, Primitive) and not tree.props:
            plain = AvroCodec(tree.kind).decode
        tagged = avro_reader(what, parsed, named_types=True, recursive=recursive)
        found = _Schema(schema_id, tree, parsed, _ambiguous(tree), plain, tagged)
        self._schemas[schema_id] = found
        return found

    def _build(self, writer_id: int, reader_id: int, tagged: bool) -> Callable[[bytes], Any]:
        writer, reader = self._schema(writer_id), self._schema(reader_id)
        if writer_id == reader_id and not tagged:
            return writer.plain
        tags_in = tagged or writer.ambiguous
        read = writer.tagged if tags_in else writer.plain
        try:
            convert = _Compiler(tags_in=tags_in, tags_out=tagged).compile(writer.tree, reader.tree, "")
        except _Incompatible as exc:
            problem = f"value schema {reader_id} cannot read data written with value schema {writer_id}: {exc.describe()}"

            def refuse(data: bytes) -> Any:
                raise InvalidValueError(problem)

            return refuse
        if convert is None:
            return read

        def decode(data: bytes) -> Any:
            datum = read(data)
            try:
                return convert(datum)
            except RecursionError:
                raise InvalidValueError(f"value of schema {writer_id} nests too deeply to convert") from None
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InvalidValueError(f"value of schema {writer_id} cannot be read as schema {reader_id}: {exc!r}") from exc

        return decode


def resolve_datum(datum: Any, writer_schema: Any, reader_schema: Any) -> Any:
    """``datum`` of ``writer_schema`` as a datum of ``reader_schema`` (Avro resolution).

    Goes through the Avro encoding, so it is exactly what a reader of stored bytes gets;
    raises :class:`InvalidValueError` when ``datum`` does not fit ``writer_schema`` or
    the schemas do not resolve.
    """
    data = AvroCodec(writer_schema).encode(datum)
    return ValueDecoder({1: writer_schema, 2: reader_schema}).decode(1, data)


# --- Proposing the schema to add for a file with new fields ----------------------------


def propose_schema(
    newest: Any,
    records: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any]]],
    *,
    exclude: Collection[str] = (),
    text_cells: bool = False,
) -> dict[str, Any] | None:
    """The value schema to register so that ``records`` fit: ``newest`` plus every field
    they have and it lacks, each ``["null", T]`` with default null (so the result is
    compatible with every earlier schema), ``T`` inferred as ``venice store create
    --infer-from`` does (:mod:`venice.push.infer`). ``None`` when nothing is missing.

    ``records`` are mappings, or ``(position, record)`` pairs as
    :func:`venice.push.formats.open_records` yields them (positions name records in
    errors). ``exclude`` names fields that are not part of the value (the key fields);
    ``text_cells`` types CSV cells by what they parse as. New fields of nested records
    (a field whose type is a record, or a nullable record, given a JSON object) are
    proposed too, on the nested record's definition. Raises :class:`InvalidInputError`
    for values whose types contradict each other, and :class:`SchemaError` when
    ``newest`` is not a record.
    """
    tree = load(newest)
    if not isinstance(tree, Record):
        raise SchemaError(f"only a record value schema can gain fields; this one is {describe(tree)}")
    proposals: dict[str, _Proposal] = {}
    root = _Proposal.of(tree, text_cells, proposals, [])
    skip = frozenset(exclude)
    for number, item in enumerate(records, start=1):
        position, record = item if isinstance(item, tuple) else (f"record {number}", item)
        try:
            root.observe({k: v for k, v in record.items() if k not in skip}, position)
        except _Conflict as exc:
            field = ".".join(exc.path)
            raise InvalidInputError(f"{position}: field {field} {exc.reason}", position=position, field=field) from None
    if not any(p.new for p in proposals.values()):
        return None
    proposed = copy.deepcopy(orjson.loads(newest) if isinstance(newest, str) else newest)
    taken = set(_defined_names(proposed, ""))
    for proposal in proposals.values():
        try:
            proposal.apply(proposed, taken)
        except _Conflict as exc:
            field = ".".join(exc.path)
            raise InvalidInputError(f"field {field} {exc.reason}", field=field) from None
    return dict(proposed)


class _Proposal:
    """New fields seen for one record type (one per type, however many fields use it)."""

    def __init__(self, record: Record, text_cells: bool, path: list[str]) -> None:
        self.record = record
        self.path = path
        """Field names leading here from the top (the first way found), for messages."""
        self.text_cells = text_cells
        self.known = {f.name for f in record.fields}
        self.new: dict[str, _Shape | _CsvColumn] = {}
        self.nested: dict[str, _Proposal] = {}

    @classmethod
    def of(cls, record: Record, text_cells: bool, proposals: dict[str, _Proposal], path: list[str]) -> _Proposal:
        found = proposals.get(record.fullname)
        if found is None:
            found = proposals[record.fullname] = cls(record, text_cells, path)
            for f in record.fields:
                inner = _record_of(f.type)
                if inner is not None and not text_cells:
                    found.nested[f.name] = cls.of(inner, text_cells, proposals, [*path, f.name])
        return found

    def observe(self, record: Mapping[str, Any], position: str) -> None:
        for name, value in record.items():
            if name in self.known:
                nested = self.nested.get(name)
                if nested is not None and isinstance(value, Mapping):
                    try:
                        nested.observe(value, position)
                    except _Conflict as exc:
                        raise exc.inside(name) from None
                continue
            column = self.new.get(name)
            if column is None:
                column = self.new[name] = _CsvColumn() if self.text_cells else _Shape()
            if isinstance(column, _Shape):
                column.present += 1
            try:
                column.observe(value, position)
            except _Conflict as exc:
                raise exc.inside(name) from None

    def apply(self, schema_json: Any, taken: set[str]) -> None:
        """Add the proposed fields to this record's definition inside ``schema_json``."""
        if not self.new:
            return
        definition = _find_definition(schema_json, self.record.fullname, "")
        assert definition is not None, self.record.fullname
        namespace = self.record.namespace
        for name, column in self.new.items():
            try:
                avro_type = column.to_avro(avro_name(f"{self.record.name}_{name}"))
            except _Conflict as exc:
                exc.inside(name)
                exc.path[:0] = self.path
                raise
            _rename_clashes(avro_type, namespace, taken)
            definition["fields"].append({"name": name, "type": ["null", avro_type], "default": None})


def _record_of(node: Node) -> Record | None:
    if isinstance(node, Record):
        return node
    if isinstance(node, Union):
        records = [b for b in node.branches if isinstance(b, Record)]
        others = [b for b in node.branches if not isinstance(b, Record) and b.kind != "null"]
        if len(records) == 1 and not others:
            return records[0]
    return None


def _fullname(obj: dict[str, Any], namespace: str) -> tuple[str, str]:
    """(fullname, namespace its contents are read in) of a named-type definition."""
    name = str(obj["name"])
    if "." in name:
        return name, name.rpartition(".")[0]
    space = obj.get("namespace", namespace) or ""
    return (f"{space}.{name}" if space else name), space


def _definitions(schema: Any, namespace: str) -> Iterable[tuple[dict[str, Any], str, str]]:
    """(definition, fullname, inner namespace) of every named type defined in ``schema`` JSON."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _definitions(branch, namespace)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        fullname, inner = _fullname(schema, namespace)
        yield schema, fullname, inner
        for field in schema.get("fields") or []:
            yield from _definitions(field.get("type"), inner)
    elif kind == "array":
        yield from _definitions(schema.get("items"), namespace)
    elif kind == "map":
        yield from _definitions(schema.get("values"), namespace)


def _defined_names(schema: Any, namespace: str) -> list[str]:
    return [fullname for _, fullname, _ in _definitions(schema, namespace)]


def _find_definition(schema: Any, fullname: str, namespace: str) -> dict[str, Any] | None:
    return next((d for d, name, _ in _definitions(schema, namespace) if name == fullname), None)


def _rename_clashes(avro_type: Any, namespace: str, taken: set[str]) -> None:
    """Give the records an inferred type defines names no other type of the schema has."""
    for definition, fullname, _ in list(_definitions(avro_type, namespace)):
        name = str(definition["name"])
        while fullname in taken:
            name += "_"
            fullname = f"{namespace}.{name}" if namespace else name
        definition["name"] = name
        taken.add(fullname)
