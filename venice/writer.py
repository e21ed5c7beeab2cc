"""Nearline writes without I/O: a store's description in, real-time topic records out.

A :class:`StoreWriter` is built from ``GET /stores/{store}`` (docs/api.md) and turns a
put, a delete or a partial update into the record the wire contract of
:mod:`venice.wire` asks for, checking everything it can before anything is sent:

* the key: it fits the key schema and is at most :data:`~venice.schema.MAX_KEY_BYTES`
  serialized;
* a value: it fits value schema ``schema_id`` (newest by default), including nested
  records (fastavro would silently drop an unknown nested field), and is at most the
  store's ``max_value_bytes`` serialized;
* an update: the store has write compute, the ops fit the update schema derived from
  value schema ``schema_id`` (:class:`venice.writecompute.WriteCompute`), and the
  encoded update is within ``max_value_bytes`` too.

Records go to ``partition_for(key bytes, partitions)`` of the store's real-time topic:
a put carries header ``schema-id``, an update ``schema-id`` and ``venice-op: update``,
a delete a null value and no header.

The SDK producer (:mod:`venice.producer`), the ``venice put/delete/update/write/encode``
commands and the router's HTTP writes all encode through this one class, so they accept
and refuse the same things. JSON input (the CLI, HTTP) goes through
:meth:`StoreWriter.value_from_json` / :meth:`~StoreWriter.ops_from_json` first: JSON has
no bytes, so ``bytes`` and ``fixed`` data are given as base64 text, as reads return them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from venice.avrotree import (
    MAX_NESTING,
    Array,
    Enum,
    Fixed,
    Map,
    Node,
    Primitive,
    Record,
    Union,
    is_recursive,
    load,
    nested_deeper_than,
    unknown_field,
)
from venice.errors import (
    InternalError,
    InvalidValueError,
    NotHybridError,
    UnknownSchemaError,
    VeniceError,
    WriteComputeDisabledError,
)
from venice.partitioner import partition_for
from venice.protocol import HybridConfig
from venice.schema import AvroCodec, key_from_text
from venice.wire import data_headers, update_headers
from venice.writecompute import WriteCompute

__all__ = ["OutgoingRecord", "StoreWriter", "not_hybrid", "real_time_topic"]

Headers = tuple[tuple[str, bytes], ...]


def not_hybrid(store: str) -> NotHybridError:
    """The error for a nearline write to batch-only ``store``."""
    return NotHybridError(
        f"store {store!r} is batch-only: it takes pushes, not nearline writes "
        f"(make it hybrid: venice store update {store} --hybrid-rewind-seconds S --hybrid-offset-lag N)"
    )


def real_time_topic(store: str) -> str:
    """``<store>_rt``: the real-time topic of a hybrid store."""
    return f"{store}_rt"


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record for a real-time topic, encoded and checked, not yet sent."""

    topic: str
    partition: int
    key: bytes
    value: bytes | None
    """``None`` is a delete."""
    headers: Headers = ()

    @property
    def size(self) -> int:
        """Bytes of key and value: what a producer buffers for it."""
        return len(self.key) + (len(self.value) if self.value is not None else 0)


class _ValueSchema:
    """One registered value schema: its codec, its tree, and (lazily) its write compute."""

    def __init__(self, schema_id: int, schema: Any) -> None:
        self.schema_id = schema_id
        self.schema = schema
        self.codec = AvroCodec(schema)
        self.tree = load(schema)
        self.recursive = is_recursive(self.tree)
        self.has_bytes = _has_bytes(self.tree)
        self.nested = not isinstance(self.tree, Primitive) and not isinstance(self.tree, (Enum, Fixed))
        self.put_headers: Headers = tuple(data_headers(schema_id))
        self.update_headers: Headers = tuple(update_headers(schema_id))
        self._compute: WriteCompute | None = None

    @property
    def compute(self) -> WriteCompute:
        if self._compute is None:
            self._compute = WriteCompute(self.schema)
        return self._compute

    def encode(self, value: Any) -> bytes:
        """Avro bytes of ``value``; InvalidValueError naming what does not fit (the codec
        refuses data nested deeper than MAX_NESTING before anything recurses on it)."""
        data = self.codec.encode(value)
        if self.nested:
            extra = unknown_field(self.tree, value)
            if extra is not None:
                raise InvalidValueError(f"value has field {extra}, which value schema {self.schema_id} does not have", field=extra)
        return data


class StoreWriter:
    """Encodes nearline writes of one store, as its description says (see the module doc)."""

    def __init__(self, name: str, description: Mapping[str, Any]) -> None:
        """``description``: the controller's ``GET /stores/{store}`` answer. InternalError
        when it lacks what a writer needs (a controller of another version)."""
        self.name = name
        try:
            self.partitions = int(description["partitions"])
            self.key_codec = AvroCodec(description["key_schema"], kind="key")
            self._schemas_json = {int(k): v for k, v in dict(description["value_schemas"]).items()}
            hybrid = description.get("hybrid")
            self.hybrid = None if hybrid is None else HybridConfig.from_json(hybrid)
            self.max_value_bytes = int(description.get("max_value_bytes") or 0) or None
        except VeniceError as exc:
            raise InternalError(f"the controller's description of store {name!r} is unusable: {exc.message}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InternalError(f"the controller's description of store {name!r} lacks {exc}") from exc
        if not self._schemas_json or self.partitions < 1:
            raise InternalError(f"the controller's description of store {name!r} has no value schema or no partitions")
        self.write_compute = bool(description.get("write_compute", False))
        self.topic = self.hybrid.real_time_topic if self.hybrid is not None else real_time_topic(name)
        self.newest_schema_id = max(self._schemas_json)
        self._schemas: dict[int, _ValueSchema] = {}

    @property
    def schema_ids(self) -> list[int]:
        return sorted(self._schemas_json)

    def check_hybrid(self) -> None:
        """NotHybridError unless the store takes nearline writes."""
        if self.hybrid is None:
            raise not_hybrid(self.name)

    def value_schema(self, schema_id: int | None = None) -> _ValueSchema:
        """Value schema ``schema_id`` (newest when ``None``); UnknownSchemaError when this
        description does not have it (the caller may refresh the description and retry)."""
        wanted = self.newest_schema_id if schema_id is None else schema_id
        found = self._schemas.get(wanted)
        if found is None:
            schema = self._schemas_json.get(wanted)
            if schema is None:
                registered = ", ".join(map(str, self.schema_ids))
                raise UnknownSchemaError(
                    f"store {self.name!r} has no value schema {wanted} (registered: {registered})", schema_id=wanted
                )
            found = self._schemas[wanted] = _ValueSchema(wanted, schema)
        return found

    # --- keys -----------------------------------------------------------------------

    def encode_key(self, key: Any) -> bytes:
        """Avro bytes of ``key``; InvalidKeyError when it does not fit (nesting included) or is too long."""
        return self.key_codec.encode(key)

    def key_from_text(self, text: str) -> Any:
        """A key as written on a command line or in a URL path (strictly parsed)."""
        return key_from_text(self.key_codec, text)

    def key_from_json(self, key: Any) -> Any:
        """A key given in JSON: a string key of a ``bytes`` schema means its UTF-8, as in a URL."""
        if self.key_codec.type_name == "bytes" and isinstance(key, str):
            return key.encode()
        return key

    def partition_of(self, key_bytes: bytes) -> int:
        return partition_for(key_bytes, self.partitions)

    # --- records --------------------------------------------------------------------

    def put(self, key: Any, value: Any, schema_id: int | None = None) -> OutgoingRecord:
        """The record writing ``value`` (a datum of value schema ``schema_id``, newest by default)."""
        key_bytes = self.encode_key(key)
        schema = self.value_schema(schema_id)
        data = schema.encode(value)
        self._check_size(data, "value")
        return OutgoingRecord(self.topic, self.partition_of(key_bytes), key_bytes, data, schema.put_headers)

    def delete(self, key: Any) -> OutgoingRecord:
        key_bytes = self.encode_key(key)
        return OutgoingRecord(self.topic, self.partition_of(key_bytes), key_bytes, None)

    def update(self, key: Any, ops: Any, schema_id: int | None = None) -> OutgoingRecord:
        """The record of a partial update: ``ops`` in the JSON form of :mod:`venice.writecompute`,
        against value schema ``schema_id`` (newest by default)."""
        if not self.write_compute:
            raise WriteComputeDisabledError(
                f"store {self.name!r} does not take partial updates "
                f"(turn them on: venice store update {self.name} --write-compute)"
            )
        key_bytes = self.encode_key(key)
        schema = self.value_schema(schema_id)
        compute = schema.compute
        data = compute.encode_update(compute.from_ops(ops))
        self._check_size(data, "update")
        return OutgoingRecord(self.topic, self.partition_of(key_bytes), key_bytes, data, schema.update_headers)

    def _check_size(self, data: bytes, what: str) -> None:
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            raise InvalidValueError(
                f"{what} is {len(data)} bytes serialized; store {self.name!r} takes values of at most "
                f"{self.max_value_bytes} bytes (max_value_bytes; venice store update --max-value-size)"
            )

    # --- JSON input -----------------------------------------------------------------

    def value_from_json(self, value: Any, schema_id: int | None = None) -> Any:
        """A value parsed from JSON as a datum of value schema ``schema_id``: base64 text
        where the schema has ``bytes`` or ``fixed``. Everything else is checked by :meth:`put`."""
        schema = self.value_schema(schema_id)
        if not schema.has_bytes:
            return value
        if schema.recursive and nested_deeper_than(value, MAX_NESTING):
            raise InvalidValueError(f"value nests deeper than {MAX_NESTING} levels")
        return _from_json(schema.tree, value, "value")

    def ops_from_json(self, ops: Any, schema_id: int | None = None) -> Any:
        """Update ops parsed from JSON: base64 text for ``bytes``/``fixed`` data in ``set``,
        ``add_to_list``, ``remove_from_list`` and ``put_in_map``. The rest is checked by :meth:`update`."""
        if not self.write_compute:
            return ops  # update() says why not
        schema = self.value_schema(schema_id)
        if not schema.has_bytes or not isinstance(ops, Mapping):
            return ops
        if schema.recursive and nested_deeper_than(ops, MAX_NESTING + 2):
            raise InvalidValueError(f"update nests deeper than {MAX_NESTING} levels")
        fields = schema.compute.by_name
        converted: dict[Any, Any] = {}
        for op, args in ops.items():
            if not isinstance(args, Mapping):
                converted[op] = args
                continue
            out = {}
            for name, arg in args.items():
                plan = fields.get(name)
                node: Node | None = None
                if plan is not None and op == "set":
                    node = plan.type
                elif plan is not None and op in ("add_to_list", "remove_from_list") and plan.list_type is not None:
                    node = plan.list_type
                elif plan is not None and op == "put_in_map" and plan.map_type is not None:
                    node = plan.map_type
                out[name] = arg if node is None else _from_json(node, arg, f"{op}.{name}")
            converted[op] = out
        return converted


# --- JSON -> datum --------------------------------------------------------------------


def _has_bytes(node: Node, seen: set[int] | None = None) -> bool:
    """Whether ``node`` holds ``bytes`` or ``fixed`` anywhere (else JSON needs no conversion)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return False
    seen.add(id(node))
    if isinstance(node, Fixed) or (isinstance(node, Primitive) and node.kind == "bytes"):
        return True
    if isinstance(node, Array):
        return _has_bytes(node.items, seen)
    if isinstance(node, Map):
        return _has_bytes(node.values, seen)
    if isinstance(node, Union):
        return any(_has_bytes(b, seen) for b in node.branches)
    if isinstance(node, Record):
        return any(_has_bytes(f.type, seen) for f in node.fields)
    return False


def _from_json(node: Node, value: Any, path: str) -> Any:
    """``value`` with base64 text decoded where ``node`` has ``bytes``/``fixed``; anything
    that does not match the schema is left as it is for the schema check to explain.
    Recurses along schema and value together: bounded by the schema's depth, or (for a
    recursive schema) by the caller's nesting check."""
    if isinstance(node, Fixed) or (isinstance(node, Primitive) and node.kind == "bytes"):
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidValueError(f"{path}: bytes are given as base64 text; {value[:40]!r} is not base64") from None
        return value
    if isinstance(node, Record) and isinstance(value, dict):
        types = {f.name: f.type for f in node.fields}
        return {k: _from_json(types[k], v, f"{path}.{k}") if k in types else v for k, v in value.items()}
    if isinstance(node, Array) and isinstance(value, list):
        return [_from_json(node.items, item, f"{path}[]") for item in value]
    if isinstance(node, Map) and isinstance(value, dict):
        return {k: _from_json(node.values, v, f"{path}{{}}") for k, v in value.items()}
    if isinstance(node, Union):
        branch = _json_branch(node, value)
        return value if branch is None else _from_json(branch, value, path)
    return value


def _json_branch(union: Union, value: Any) -> Node | None:
    """The branch a JSON value is meant for, as far as bytes conversion cares: text is a
    string (or enum) where the union has one, else bytes; an object is the record sharing
    most field names with it, else a map."""
    branches = union.branches
    if isinstance(value, str):
        if any(b.kind in ("string", "enum") for b in branches):
            return None
        return next((b for b in branches if isinstance(b, Fixed) or b.kind == "bytes"), None)
    if isinstance(value, dict):
        records = [b for b in branches if isinstance(b, Record)]
        if records:
            return max(records, key=lambda r: len({f.name for f in r.fields} & set(value)))
        return next((b for b in branches if isinstance(b, Map)), None)
    if isinstance(value, list):
        return next((b for b in branches if isinstance(b, Array)), None)
    return None
