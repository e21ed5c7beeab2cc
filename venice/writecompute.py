"""Partial updates ("write compute") of record values.

A nearline writer often knows one field, not the whole value: a counter to bump, a tag
to add. A partial update names what changes; the storage replicas apply it to the value
they hold, in log order, so no writer reads-modifies-writes and races.

**Ops, as JSON** (the user-facing form; several ops may appear at once)::

    {"set": {"field": value},               # replace the field
     "add_to_list": {"field": [items]},     # append the items not already present (set union, order kept)
     "remove_from_list": {"field": [items]},# remove every element equal to one of the items
     "put_in_map": {"field": {"k": value}}, # insert or replace entries
     "remove_from_map": {"field": ["k"]},   # remove entries
     "increment": {"field": n}}             # add n (int, long, float, double fields)

Only record value schemas support updates. Items and values are checked against the
field's item / value schema. One field takes one op, except ``add_to_list`` with
``remove_from_list`` (or ``put_in_map`` with ``remove_from_map``) when they share no
item (key): when both apply, adding comes first. A ``null`` list or map (a field of type
``["null", array]`` or ``["null", map]``) counts as empty, a ``null`` number as 0.
Items are equal when their Avro encodings are equal (so ``-0.0`` is not ``0.0`` and a
NaN equals the same NaN).

**On the topic an update is Avro**, so any producer can write one. For a value schema
the platform derives the *update schema* (:func:`update_schema`, deterministic): a
record ``<Value>Update`` in the value's namespace with, for each value field, a field of
the same name whose type is a union of

1. ``NoOp`` (an empty record, the default: the field is left alone),
2. the field's own type (its branches, when it is a union): *set*,
3. for an array (or nullable array) field ``<field>_ListOps {add: array, remove: array}``,
   for a map ``<field>_MapOps {put: map, remove: array<string>}`` (all default empty),
   for an ``int``/``long``/``float``/``double`` (or nullable one) ``<field>_Increment {by: T}``.

Generated names that clash with a type of the value schema get ``_`` appended until
they do not. This follows Venice's write-compute schema with three changes: an
``Increment`` op; list and map ops on nullable fields (Venice allows only *set* on
unions); and defaults on the ops' fields so a producer may write one half of them.

**Applying** (:func:`apply_update`) is a pure function of the update, the current value
and the schema, so replicas that apply the same records end byte-identical. An update of
a key with no value starts from the fields' defaults; a field with no default that the
update does not set raises :class:`~venice.errors.IncompleteUpdateError`. An ``int`` or
``long`` increment that overflows, and a ``float``/``double`` one that becomes infinite,
raise :class:`~venice.errors.InvalidValueError`; both leave the stored value as it was.

**Datums.** An update datum maps every field to ``(branch name, datum)`` (fastavro's tuple
notation, which picks a union branch by name, so *set* of a record is never mistaken for
``NoOp``); decoded updates and values keep that form for named types
(``return_named_type``), which fastavro writes back into the same branch.
:class:`Updater` does the whole ingestion step on bytes, across schema versions.
"""

from __future__ import annotations

import copy
import functools
import math
import reprlib
import struct
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
from fastavro.validation import validate

from venice.avroio import avro_reader, avro_writer
from venice.avrotree import (
    MAX_NESTING,
    MISSING,
    Array,
    Enum,
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
    named_types,
    nested_deeper_than,
    unknown_field,
)
from venice.errors import IncompleteUpdateError, InvalidValueError, SchemaError
from venice.evolution import ValueDecoder, _Compiler, _Incompatible

__all__ = [
    "OPS",
    "Updater",
    "WriteCompute",
    "apply_update",
    "ops_to_update",
    "update_schema",
    "write_compute",
]

OPS = ("set", "add_to_list", "remove_from_list", "put_in_map", "remove_from_map", "increment")
_COMPATIBLE_OPS = ({"add_to_list", "remove_from_list"}, {"put_in_map", "remove_from_map"})
_NUMBERS = ("int", "long", "float", "double")
_RANGES = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")

Key = Callable[[Any], Hashable]


@dataclass(slots=True)
class _Field:
    """What the update of one value field needs, worked out once per schema."""

    name: str
    type: Node
    branches: list[Node]
    """The field type's branches (the type itself when it is not a union): *set* targets."""
    branch_tags: list[str]
    """Tuple-notation name of each branch: the full name of a named type, else its kind."""
    is_union: bool
    named_tags: frozenset[str]
    """Tags of the named branches of a union field: a *set* of one keeps its tag."""
    default: Any
    list_type: Array | None = None
    map_type: Map | None = None
    number: str | None = None
    list_ops: str = ""
    map_ops: str = ""
    increment: str = ""
    item_key: Key | None = None
    item_check: Callable[[Any], str | None] | None = None
    value_check: Callable[[Any], str | None] | None = None


def _flatten(node: Node) -> list[Node]:
    return list(node.branches) if isinstance(node, Union) else [node]


def _only_non_null(node: Node) -> Node | None:
    """The one non-null branch of ``node`` (itself when it is not a union), else None."""
    branches = [b for b in _flatten(node) if b.kind != "null"]
    return branches[0] if len(branches) == 1 else None


def _tag_of(node: Node) -> str:
    return node.fullname if isinstance(node, Named) else node.kind


class _Names:
    """Hands out names in one namespace that no type of the value schema has."""

    def __init__(self, namespace: str, taken: set[str]) -> None:
        self.namespace = namespace
        self.taken = taken

    def claim(self, wanted: str) -> str:
        name = wanted
        while self.full(name) in self.taken:
            name += "_"
        self.taken.add(self.full(name))
        return name

    def full(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name


class WriteCompute:
    """The update schema of one record value schema, and building, checking, encoding
    and applying its updates. Build it once per value schema (:func:`write_compute`
    caches them): everything per schema is worked out here, not per update."""

    def __init__(self, value_schema: Any) -> None:
        tree = load(value_schema)
        if not isinstance(tree, Record):
            raise SchemaError(f"partial updates need a record value schema; this one is {describe(tree)}")
        self.value: Record = tree
        self.namespace = tree.namespace
        names = _Names(self.namespace, set(named_types(tree)))
        self.update_name = names.full(names.claim(f"{tree.name}Update"))
        self.noop = names.full(names.claim("NoOp"))
        self.fields: list[_Field] = []
        for f in tree.fields:
            self.fields.append(self._plan(f.name, f.type, f.default, names))
        self.by_name = {f.name: f for f in self.fields}
        self._probes: dict[int, Any] = {}
        self.update_schema = self._update_schema()
        self.update_schema_text = orjson.dumps(self.update_schema).decode()
        self.recursive = is_recursive(tree)
        update_parsed = fastavro.parse_schema(self.update_schema)
        value_parsed = fastavro.parse_schema(emit(tree))
        self._read_update = avro_reader("update", update_parsed, named_types=True, recursive=self.recursive)
        self._write_update = avro_writer("update", update_parsed, recursive=self.recursive)
        self._read_value = avro_reader("value", value_parsed, named_types=True, recursive=self.recursive)
        self._write_value = avro_writer("value", value_parsed, recursive=self.recursive)

    # --- derivation -------------------------------------------------------------------

    def _plan(self, name: str, node: Node, default: Any, names: _Names) -> _Field:
        branches = _flatten(node)
        value = MISSING
        if default is not MISSING:
            try:
                value = default_datum(node, default)
            except ValueError as exc:
                raise SchemaError(f"field {name}: the default does not fit the field's type: {exc}") from None
        tags = [_tag_of(b) for b in branches]
        is_union = isinstance(node, Union)
        named = frozenset(t for t, b in zip(tags, branches, strict=True) if is_union and isinstance(b, Named))
        plan = _Field(name, node, branches, tags, is_union, named, value)
        inner = _only_non_null(node)
        if isinstance(inner, Array):
            plan.list_type = inner
            plan.list_ops = names.full(names.claim(f"{name}_ListOps"))
        elif isinstance(inner, Map):
            plan.map_type = inner
            plan.map_ops = names.full(names.claim(f"{name}_MapOps"))
        elif isinstance(inner, Primitive) and inner.kind in _NUMBERS and not inner.logical:
            plan.number = inner.kind
            plan.increment = names.full(names.claim(f"{name}_Increment"))
        return plan

    def _update_schema(self) -> dict[str, Any]:
        ns = self.namespace
        defined: set[str] = set()
        fields = []
        for plan in self.fields:
            union: list[Any] = [_record_json(self.noop, [], defined)]
            union.extend(emit(branch, defined, ns) for branch in plan.branches)
            if plan.list_type is not None:
                items = plan.list_type.items
                add = {"type": "array", "items": emit(items, defined, ns)}
                remove = {"type": "array", "items": emit(items, defined, ns)}
                union.append(_record_json(plan.list_ops, [("add", add, []), ("remove", remove, [])], defined))
            if plan.map_type is not None:
                put = {"type": "map", "values": emit(plan.map_type.values, defined, ns)}
                remove = {"type": "array", "items": "string"}
                union.append(_record_json(plan.map_ops, [("put", put, {}), ("remove", remove, [])], defined))
            if plan.number is not None:
                union.append(_record_json(plan.increment, [("by", plan.number, MISSING)], defined))
            fields.append({"name": plan.name, "type": union, "default": {}})
        return {
            "type": "record",
            "name": self.update_name.rpartition(".")[2],
            "namespace": ns,
            "doc": f"Partial update of {self.value.fullname} (venice write compute)",
            "fields": fields,
        }

    # --- ops (JSON) -> update datum ---------------------------------------------------

    def from_ops(self, ops: Any) -> dict[str, Any]:
        """The update datum for ``ops`` (the JSON form); raises :class:`InvalidValueError`
        naming the op and the field for anything that does not fit the schema."""
        if not isinstance(ops, Mapping):
            raise InvalidValueError(f"an update is a JSON object of ops ({', '.join(OPS)}), not {_kind(ops)}")
        unknown = [str(op) for op in ops if op not in OPS]
        if unknown:
            raise InvalidValueError(f"unknown update op(s) {', '.join(map(repr, unknown))}; expected {', '.join(OPS)}")
        by_field: dict[str, dict[str, Any]] = {}
        for op in OPS:
            if op not in ops:
                continue
            args = ops[op]
            if not isinstance(args, Mapping):
                raise InvalidValueError(f"{op}: expected an object of field -> argument, not {_kind(args)}")
            for name, arg in args.items():
                if name not in self.by_name:
                    raise InvalidValueError(f"{op}: the value schema has no field {name!r}", field=str(name))
                by_field.setdefault(name, {})[op] = arg
        if not by_field:
            raise InvalidValueError("the update names no field")
        update: dict[str, Any] = {}
        for plan in self.fields:
            field_ops = by_field.get(plan.name)
            update[plan.name] = (self.noop, {}) if field_ops is None else self._field_update(plan, field_ops)
        return update

    def _field_update(self, plan: _Field, ops: dict[str, Any]) -> tuple[str, Any]:
        if len(ops) > 1 and set(ops) not in _COMPATIBLE_OPS:
            raise InvalidValueError(f"field {plan.name}: ops {' and '.join(ops)} conflict (one op per field)", field=plan.name)
        if "set" in ops:
            return self._set(plan, ops["set"])
        if "increment" in ops:
            return self._increment(plan, ops["increment"])
        if "add_to_list" in ops or "remove_from_list" in ops:
            return self._list_ops(plan, ops.get("add_to_list", []), ops.get("remove_from_list", []))
        return self._map_ops(plan, ops.get("put_in_map", {}), ops.get("remove_from_map", []))

    def _set(self, plan: _Field, value: Any) -> tuple[str, Any]:
        index = self._branch_of(plan, value)
        if index is None:
            raise InvalidValueError(f"set: field {plan.name}: {_show(value)} does not fit {describe(plan.type)}", field=plan.name)
        return plan.branch_tags[index], value

    def _branch_of(self, plan: _Field, value: Any) -> int | None:
        """The branch fastavro would write ``value`` in (first that fits; among records, the
        one sharing most field names with it)."""
        best, best_fields = None, -1
        for index, branch in enumerate(plan.branches):
            if self._problem(branch, value, 1) is not None:
                continue
            if isinstance(branch, Record):
                shared = len({f.name for f in branch.fields} & set(value))
                if shared > best_fields:
                    best, best_fields = index, shared
                continue
            if branch.kind == "float":  # like fastavro: a Python float prefers a double branch
                double = next((i for i, b in enumerate(plan.branches) if b.kind == "double" and i > index), None)
                return index if double is None else double
            return index
        return best

    def _increment(self, plan: _Field, by: Any) -> tuple[str, Any]:
        kind = plan.number
        if kind is None:
            raise InvalidValueError(f"increment: field {plan.name} is {describe(plan.type)}, not a number", field=plan.name)
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise InvalidValueError(f"increment: field {plan.name}: {_show(by)} is not a number", field=plan.name)
        if kind in _RANGES:
            low, high = _RANGES[kind]
            if not isinstance(by, int):
                raise InvalidValueError(f"increment: field {plan.name} is {kind}: {_show(by)} is not an integer", field=plan.name)
            if not low <= by <= high:
                raise InvalidValueError(f"increment: field {plan.name}: {by} overflows {kind}", field=plan.name)
            return plan.increment, {"by": by}
        by = float(by)
        if not math.isfinite(by):
            raise InvalidValueError(f"increment: field {plan.name}: {by} is not a finite number", field=plan.name)
        if kind == "float":
            rounded = _to_float32(by)
            if rounded is None or not math.isfinite(rounded):
                raise InvalidValueError(f"increment: field {plan.name}: {by} overflows float", field=plan.name)
            by = rounded  # what the Avro float on the topic holds, so applying it before or after encoding agrees
        return plan.increment, {"by": by}

    def _list_ops(self, plan: _Field, add: Any, remove: Any) -> tuple[str, Any]:
        if plan.list_type is None:
            raise InvalidValueError(f"list ops: field {plan.name} is {describe(plan.type)}, not a list", field=plan.name)
        for op, items in (("add_to_list", add), ("remove_from_list", remove)):
            if not isinstance(items, list):
                raise InvalidValueError(
                    f"{op}: field {plan.name}: expected a JSON array of items, not {_kind(items)}", field=plan.name
                )
            if self._problem(plan.list_type, items, 1) is None:
                continue  # the whole list at once; item by item only to say which one is wrong
            for position, item in enumerate(items):
                problem = self._problem(plan.list_type.items, item, 2)
                if problem is not None:
                    raise InvalidValueError(f"{op}: field {plan.name}: item {position}: {problem}", field=plan.name)
            raise InvalidValueError(f"{op}: field {plan.name}: the items nest too deeply", field=plan.name)
        if add and remove:
            key = self.item_key(plan)
            both = {key(item) for item in add} & {key(item) for item in remove}
            if both:
                raise InvalidValueError(
                    f"field {plan.name}: add_to_list and remove_from_list conflict: an item is both added and removed",
                    field=plan.name,
                )
        return plan.list_ops, {"add": add, "remove": remove}

    def _map_ops(self, plan: _Field, put: Any, remove: Any) -> tuple[str, Any]:
        if plan.map_type is None:
            raise InvalidValueError(f"map ops: field {plan.name} is {describe(plan.type)}, not a map", field=plan.name)
        if not isinstance(put, Mapping):
            raise InvalidValueError(f"put_in_map: field {plan.name}: expected a JSON object, not {_kind(put)}", field=plan.name)
        if self._problem(plan.map_type, dict(put), 1) is not None:  # the whole map at once, then say what is wrong
            for key, value in put.items():
                if not isinstance(key, str):
                    raise InvalidValueError(f"put_in_map: field {plan.name}: key {_show(key)} is not a string", field=plan.name)
                problem = self._problem(plan.map_type.values, value, 2)
                if problem is not None:
                    raise InvalidValueError(f"put_in_map: field {plan.name}: key {key!r}: {problem}", field=plan.name)
            raise InvalidValueError(f"put_in_map: field {plan.name}: the values nest too deeply", field=plan.name)
        if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
            raise InvalidValueError(
                f"remove_from_map: field {plan.name}: expected a JSON array of keys (strings)", field=plan.name
            )
        both = set(put) & set(remove)
        if both:
            raise InvalidValueError(
                f"field {plan.name}: put_in_map and remove_from_map conflict on key(s) {', '.join(sorted(both))}", field=plan.name
            )
        return plan.map_ops, {"put": dict(put), "remove": list(remove)}

    # --- checking data against a part of the schema -----------------------------------

    def _probe(self, node: Node) -> Any:
        """A parsed one-field record wrapping ``node`` (a part of this schema's tree):
        fastavro re-parses anything but a record on every call, and encoding a one-field
        record is encoding the field."""
        found = self._probes.get(id(node))
        if found is None:
            found = self._probes[id(node)] = self._make_probe(node)
        return found

    def _make_probe(self, node: Node) -> Any:
        taken = set(named_types(node))
        name = "Probe"
        while (f"{self.namespace}.{name}" if self.namespace else name) in taken:
            name += "_"
        schema = {"type": "record", "name": name, "namespace": self.namespace,
                  "fields": [{"name": "v", "type": emit(node, set(), self.namespace)}]}  # fmt: skip
        return fastavro.parse_schema(schema)

    def _problem(self, node: Node, value: Any, depth: int) -> str | None:
        """Why ``value`` does not fit ``node``, or None. ``depth``: how many containers
        deep in the value record it will sit (the nesting limit counts from the record)."""
        try:
            if self.recursive and nested_deeper_than(value, MAX_NESTING - depth):
                return f"a value nested deeper than {MAX_NESTING} levels does not fit {describe(node)}"
            if not validate({"v": value}, self._probe(node), raise_errors=False):
                return f"{_show(value)} does not fit {describe(node)}"
            extra = unknown_field(node, value)
        except RecursionError:
            return f"a value nested too deeply does not fit {describe(node)}"
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # odd inputs (fastavro mostly says False)
            return f"{_show(value)} does not fit {describe(node)} ({exc.__class__.__name__})"
        if extra:
            return f"{_show(value)} has field {extra}, which {describe(node)} does not have"
        return None

    def item_key(self, plan: _Field) -> Key:
        """Equality of list items: their Avro encoding, computed fast for primitives."""
        if plan.item_key is None:
            assert plan.list_type is not None
            plan.item_key = self._key_for(plan.list_type.items)
        return plan.item_key

    def _key_for(self, node: Node) -> Key:
        simple = _simple_key(node)
        if simple is not None:
            return simple
        inner = _only_non_null(node)
        simple_inner = _simple_key(inner) if inner is not None and isinstance(node, Union) and len(node.branches) == 2 else None
        if simple_inner is not None:
            return lambda item: None if item is None else simple_inner(item)
        write = avro_writer("list item", self._probe(node), recursive=self.recursive)
        return lambda item: write({"v": item})

    # --- applying ---------------------------------------------------------------------

    def apply(self, update: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The new value: ``update`` applied to ``current`` (``None``: the key has no value)."""
        if not isinstance(update, Mapping):
            raise InvalidValueError(f"an update datum is a record, not {_kind(update)}")
        if current is not None and not isinstance(current, Mapping):
            raise InvalidValueError(f"the current value is not a record but {_kind(current)}")
        out: dict[str, Any] = {}
        noop = self.noop
        for plan in self.fields:
            if plan.name not in update:
                out[plan.name] = self._base(plan, current)  # as NoOp
                continue
            op = update[plan.name]
            if type(op) is not tuple or len(op) != 2:
                out[plan.name] = op  # an untagged datum: set
                continue
            tag, arg = op
            if not tag:
                out[plan.name] = arg
            elif tag == noop:
                out[plan.name] = self._base(plan, current)
            elif tag == plan.list_ops:
                out[plan.name] = _apply_list(plan, self._base(plan, current), arg, self.item_key(plan))
            elif tag == plan.map_ops:
                out[plan.name] = _apply_map(plan, self._base(plan, current), arg)
            elif tag == plan.increment:
                out[plan.name] = _apply_increment(plan, self._base(plan, current), arg)
            elif tag in plan.named_tags:
                out[plan.name] = (tag, arg)  # keeps the named branch of a union field on re-encoding
            elif tag in plan.branch_tags:
                out[plan.name] = arg
            else:
                raise InvalidValueError(f"field {plan.name}: the update names no op or type {tag!r}", field=plan.name)
        return out

    def _base(self, plan: _Field, current: Mapping[str, Any] | None) -> Any:
        if current is not None:
            try:
                return current[plan.name]
            except KeyError:
                raise InvalidValueError(f"the current value has no field {plan.name!r}", field=plan.name) from None
        if plan.default is MISSING:
            raise IncompleteUpdateError(
                f"field {plan.name} has no default and the update does not set it, and the key has no value yet",
                field=plan.name,
            )
        default = plan.default
        return copy.deepcopy(default) if isinstance(default, (list, dict)) else default

    # --- bytes ------------------------------------------------------------------------

    def encode_update(self, update: Mapping[str, Any]) -> bytes:
        return self._write_update(update)

    def decode_update(self, data: bytes) -> dict[str, Any]:
        """An update datum from its Avro bytes (named branches as ``(name, datum)``)."""
        datum = self._read_update(data)
        if not isinstance(datum, dict):
            raise InvalidValueError("an update does not decode to a record")
        return datum

    def encode_value(self, value: Mapping[str, Any]) -> bytes:
        return self._write_value(value)

    def decode_value(self, data: bytes) -> dict[str, Any]:
        """A value datum from its Avro bytes, named union branches kept as ``(name, datum)``."""
        datum = self._read_value(data)
        if not isinstance(datum, dict):
            raise InvalidValueError("a value does not decode to a record")
        return datum


def _named_branch(plan: _Field, tag: str) -> Node | None:
    for branch, branch_tag in zip(plan.branches, plan.branch_tags, strict=True):
        if branch_tag == tag:
            return branch
    return None


def _record_json(fullname: str, fields: Sequence[tuple[str, Any, Any]], defined: set[str]) -> Any:
    """A generated record at its first use, its name after that."""
    if fullname in defined:
        return fullname
    defined.add(fullname)
    namespace, _, name = fullname.rpartition(".")
    out = []
    for field_name, field_type, default in fields:
        entry: dict[str, Any] = {"name": field_name, "type": field_type}
        if default is not MISSING:
            entry["default"] = default
        out.append(entry)
    return {"type": "record", "name": name, "namespace": namespace, "fields": out}


def _apply_list(plan: _Field, current: Any, ops: Any, key: Key) -> list[Any]:
    if current is None:
        current = []
    elif not isinstance(current, list):
        raise InvalidValueError(f"field {plan.name}: the current value is not a list", field=plan.name)
    result = list(current)
    add = ops.get("add") or ()
    if add:
        present = {key(item) for item in result}
        for item in add:
            k = key(item)
            if k not in present:
                present.add(k)
                result.append(item)
    remove = ops.get("remove") or ()
    if remove:
        gone = {key(item) for item in remove}
        result = [item for item in result if key(item) not in gone]
    return result


def _apply_map(plan: _Field, current: Any, ops: Any) -> dict[str, Any]:
    if current is None:
        current = {}
    elif not isinstance(current, dict):
        raise InvalidValueError(f"field {plan.name}: the current value is not a map", field=plan.name)
    result = dict(current)
    result.update(ops.get("put") or {})
    for key in ops.get("remove") or ():
        result.pop(key, None)
    return result


def _apply_increment(plan: _Field, current: Any, ops: Any) -> Any:
    by = ops.get("by") if isinstance(ops, Mapping) else None
    kind = plan.number
    base = 0 if current is None else current
    if isinstance(by, bool) or not isinstance(by, (int, float)) or isinstance(base, bool) or not isinstance(base, (int, float)):
        raise InvalidValueError(
            f"increment: field {plan.name}: {_show(base)} + {_show(by)} is not a sum of numbers", field=plan.name
        )
    if kind in _RANGES:
        if not isinstance(by, int) or not isinstance(base, int):
            raise InvalidValueError(f"increment: field {plan.name} is {kind}: {_show(by)} is not an integer", field=plan.name)
        low, high = _RANGES[kind]
        total = base + by
        if not low <= total <= high:
            raise InvalidValueError(f"increment: field {plan.name}: {base} + {by} overflows {kind}", field=plan.name)
        return total
    if not math.isfinite(by):
        raise InvalidValueError(f"increment: field {plan.name}: by {by} is not a finite number", field=plan.name)
    result = float(base) + float(by)
    if kind == "float":
        rounded = _to_float32(result)
        if rounded is None or (math.isfinite(base) and not math.isfinite(rounded)):
            raise InvalidValueError(f"increment: field {plan.name}: {base} + {by} overflows float", field=plan.name)
        return rounded
    if math.isfinite(base) and not math.isfinite(result):
        raise InvalidValueError(f"increment: field {plan.name}: {base} + {by} overflows double", field=plan.name)
    return result


def _to_float32(value: float) -> float | None:
    """``value`` rounded to the nearest float32, as Avro will store it; None if out of range."""
    try:
        return float(_FLOAT.unpack(_FLOAT.pack(value))[0])
    except (OverflowError, struct.error):
        return None


def _simple_key(node: Node | None) -> Key | None:
    """A key function for items whose Python value identifies their encoding."""
    if isinstance(node, Enum):
        return _same
    if not isinstance(node, Primitive) or node.logical:
        return None
    if node.kind in ("string", "long", "int", "boolean", "null"):
        return _same
    if node.kind == "bytes":
        return bytes
    if node.kind == "double":
        return _DOUBLE.pack
    if node.kind == "float":
        return _FLOAT.pack
    return None


def _same(item: Any) -> Hashable:
    return item  # type: ignore[no-any-return]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 40, 40, 4, 4


def _show(value: Any) -> str:
    """``value`` for an error message: short, whatever its size or depth."""
    return _SHORT.repr(value)


# --- module-level API -----------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _cached(schema_text: str) -> WriteCompute:
    return WriteCompute(orjson.loads(schema_text) if schema_text[:1] in '{["' else schema_text)


def write_compute(value_schema: Any) -> WriteCompute:
    """The (cached) :class:`WriteCompute` of ``value_schema``."""
    if isinstance(value_schema, str):
        return _cached(value_schema.strip())
    return _cached(orjson.dumps(value_schema, option=orjson.OPT_SORT_KEYS).decode())


def update_schema(value_schema: Any) -> dict[str, Any]:
    """The update schema derived from ``value_schema`` (JSON object; the same for everyone)."""
    return copy.deepcopy(write_compute(value_schema).update_schema)


def ops_to_update(ops_json: Any, value_schema: Any) -> dict[str, Any]:
    """The update datum for the JSON ops ``ops_json``; see the module docstring."""
    return write_compute(value_schema).from_ops(ops_json)


def apply_update(update: Mapping[str, Any], current: Mapping[str, Any] | None, value_schema: Any) -> dict[str, Any]:
    """The value after ``update``; ``current`` is ``None`` when the key has no value."""
    return write_compute(value_schema).apply(update, current)


# --- across schema versions -----------------------------------------------------------


class Updater:
    """Applies encoded updates to encoded values of one store whose value schemas evolve.

    An update written with schema N meets a value stored with schema M. The result is
    written with the newer of the two, so nothing either knows is lost: an older value
    is first read as N (Avro resolution: new fields get their defaults), an older update
    is carried over to M (its ops moved to the same fields of M, values resolved).
    Depends only on its inputs (and the schemas), so replicas agree byte for byte.
    """

    def __init__(self, schemas: Mapping[int, Any]) -> None:
        self.decoder = ValueDecoder(schemas)
        self._sources = dict(schemas)
        self._computes: dict[int, WriteCompute] = {}
        self._rebasers: dict[tuple[int, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

    def compute(self, schema_id: int) -> WriteCompute:
        found = self._computes.get(schema_id)
        if found is None:
            self.decoder.tree(schema_id)  # UnknownSchemaError for an unknown id
            found = self._computes[schema_id] = write_compute(self._sources[schema_id])
        return found

    def apply(self, update_schema_id: int, update: bytes, current: tuple[int, bytes] | None) -> tuple[int, bytes]:
        """``(schema id, value bytes)`` after the update; ``current`` is ``(schema id, value
        bytes)`` or None for a key with no value."""
        computer = self.compute(update_schema_id)
        datum = computer.decode_update(update)
        if current is None:
            return update_schema_id, computer.encode_value(computer.apply(datum, None))
        value_id, data = current
        if value_id <= update_schema_id:
            value = self.decoder.decode_as(value_id, data, update_schema_id, tagged=True)
            return update_schema_id, computer.encode_value(computer.apply(datum, value))
        target = self.compute(value_id)
        value = self.decoder.decode_as(value_id, data, value_id, tagged=True)
        rebased = self.rebase(datum, update_schema_id, value_id)
        return value_id, target.encode_value(target.apply(rebased, value))

    def rebase(self, update: dict[str, Any], from_id: int, to_id: int) -> dict[str, Any]:
        """An update datum of schema ``from_id`` as an update of schema ``to_id``."""
        key = (from_id, to_id)
        rebaser = self._rebasers.get(key)
        if rebaser is None:
            rebaser = self._rebasers[key] = _rebaser(self.compute(from_id), self.compute(to_id))
        return rebaser(update)


def _rebaser(source: WriteCompute, target: WriteCompute) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Moves each op of a ``source`` update to the matching field of ``target``."""
    fields: list[tuple[_Field, _Field | None]] = []
    by_name = source.by_name
    for plan in target.fields:
        aliases = next(f.aliases for f in target.value.fields if f.name == plan.name)
        match = by_name.get(plan.name) or next((by_name[a] for a in aliases if a in by_name), None)
        fields.append((plan, match))
    compiler = _Compiler(tags_in=True, tags_out=True)

    def convert(writer: Node, reader: Node, where: str) -> Callable[[Any], Any]:
        try:
            inner = compiler.compile(writer, reader, where)
        except _Incompatible as exc:
            message = exc.describe()

            def refuse(datum: Any) -> Any:
                raise InvalidValueError(f"update cannot be carried to the newer schema: {message}")

            return refuse
        return inner if inner is not None else _same

    def rebase(update: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for plan, match in fields:
            if match is None or match.name not in update:
                out[plan.name] = (target.noop, {})
                continue
            op = update[match.name]
            tag, arg = op if type(op) is tuple else ("", op)
            ops = {source.noop: "noop", match.list_ops: "list", match.map_ops: "map", match.increment: "increment"}
            kind = ops.get(tag, "set") if tag else "set"
            if kind == "noop":
                out[plan.name] = (target.noop, {})
            elif kind == "list" and plan.list_type is not None:
                assert match.list_type is not None
                item = convert(match.list_type.items, plan.list_type.items, plan.name)
                out[plan.name] = (plan.list_ops, {k: [item(x) for x in arg.get(k) or ()] for k in ("add", "remove")})
            elif kind == "map" and plan.map_type is not None:
                assert match.map_type is not None
                value = convert(match.map_type.values, plan.map_type.values, plan.name)
                put = {k: value(v) for k, v in (arg.get("put") or {}).items()}
                out[plan.name] = (plan.map_ops, {"put": put, "remove": list(arg.get("remove") or ())})
            elif kind == "increment" and plan.number is not None:
                by = arg["by"]
                out[plan.name] = (plan.increment, {"by": float(by) if plan.number in ("float", "double") else by})
            elif kind != "set":
                raise InvalidValueError(f"field {plan.name}: the newer schema has no {kind} op for it", field=plan.name)
            else:
                branch = _named_branch(match, tag) if tag else None
                if branch is None:
                    branch = match.type if not match.is_union else _branch_by_value(match, arg)
                resolved = convert(branch, plan.type, plan.name)(arg)
                # A named branch of a union comes back tagged; anything else is an untagged set.
                out[plan.name] = resolved if type(resolved) is tuple else ("", resolved)
        return out

    return rebase


def _branch_by_value(plan: _Field, value: Any) -> Node:
    """The branch of a union field an untagged decoded value came from (unnamed types)."""
    kinds = {type(None): ("null",), bool: ("boolean",), int: ("int", "long"), float: ("double", "float"),
             str: ("string",), bytes: ("bytes",), list: ("array",), dict: ("map",)}  # fmt: skip
    for kind in kinds.get(type(value), ()):
        for branch in plan.branches:
            if branch.kind == kind:
                return branch
    raise InvalidValueError(f"field {plan.name}: {_show(value)} fits no branch of {describe(plan.type)}", field=plan.name)
