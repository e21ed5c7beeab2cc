"""Sample data and random schema pairs for checking schema resolution against fastavro.

Works on schema JSON through fastavro's own parser only (nothing from ``venice``), so
the answers it gives are an independent second opinion.
"""

from __future__ import annotations

import copy
import io
import random
from typing import Any

import fastavro

PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 1 << 40,
    "float": 1.5,
    "double": 2.25,
    "string": "hé",
    "bytes": b"ab",
}
NAMED = ("record", "error", "enum", "fixed")
MAX_DEPTH = 4


def _parse(schema: Any) -> tuple[Any, dict[str, Any]]:
    named: dict[str, Any] = {}
    return fastavro.parse_schema(schema, named, _write_hint=False), named


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in PRIMITIVE_SAMPLES:
        return named[schema]
    return schema


def _type(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _union_tag(branch: Any, named: dict[str, Any]) -> str:
    resolved = _resolve(branch, named)
    if isinstance(resolved, dict) and resolved["type"] in NAMED:
        return str(resolved["name"])
    return _type(resolved)


def _terminates(schema: Any, named: dict[str, Any]) -> bool:
    """Whether a value of ``schema`` can be built without a record (to end recursion)."""
    resolved = _resolve(schema, named)
    return _type(resolved) not in ("record", "error")


def variants(schema: Any, named: dict[str, Any], depth: int = 0) -> list[Any]:
    """Datums of a parsed schema that together use every union branch and enum symbol,
    with every array and map non-empty (so item types are exercised). Union values use
    fastavro's tuple notation, so each is written in exactly the branch meant."""
    schema = _resolve(schema, named)
    kind = _type(schema)
    if kind in PRIMITIVE_SAMPLES:
        return [PRIMITIVE_SAMPLES[kind]]
    if kind == "union":
        branches = schema if depth < MAX_DEPTH else [b for b in schema if _terminates(b, named)] or schema[:1]
        return [(_union_tag(b, named), v) for b in branches for v in variants(b, named, depth + 1)]
    if kind == "enum":
        return list(schema["symbols"])
    if kind == "fixed":
        return [b"x" * schema["size"]]
    if kind == "array":
        return [variants(schema["items"], named, depth + 1) if depth < MAX_DEPTH else []]
    if kind == "map":
        if depth >= MAX_DEPTH:
            return [{}]
        return [{f"k{i}": v for i, v in enumerate(variants(schema["values"], named, depth + 1))}]
    assert kind in ("record", "error"), kind
    per_field = [variants(f["type"], named, depth + 1) for f in schema["fields"]]
    count = max((len(v) for v in per_field), default=1)
    return [
        {f["name"]: values[i % len(values)] for f, values in zip(schema["fields"], per_field, strict=True)} for i in range(count)
    ]


def samples(schema: Any) -> list[bytes]:
    """Avro encodings of :func:`variants` of ``schema`` (JSON)."""
    parsed, named = _parse(schema)
    out = []
    for datum in variants(parsed, named):
        stream = io.BytesIO()
        fastavro.schemaless_writer(stream, fastavro.parse_schema(schema), datum)
        out.append(stream.getvalue())
    return out


def fastavro_reads(writer: Any, reader: Any) -> tuple[bool, list[Any]]:
    """Whether fastavro's resolving reader reads every sample of ``writer`` with
    ``reader``, and what it read."""
    parsed_writer, parsed_reader = fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    read = []
    for data in samples(writer):
        try:
            read.append(fastavro.schemaless_reader(io.BytesIO(data), parsed_writer, parsed_reader))
        except Exception:
            return False, []
    return True, read


# --- random schemas and the changes a schema goes through ---------------------------

_PRIMITIVES = ["boolean", "int", "long", "float", "double", "string", "bytes"]


class SchemaMaker:
    """Random record schemas, reproducible from a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def type(self, depth: int) -> Any:
        roll = self.rng.random()
        if depth >= 3 or roll < 0.45:
            return self.rng.choice(_PRIMITIVES)
        if roll < 0.55:
            return {"type": "array", "items": self.type(depth + 1)}
        if roll < 0.62:
            return {"type": "map", "values": self.type(depth + 1)}
        if roll < 0.72:
            branches = self.rng.sample(["null", "int", "string", "double", "boolean"], self.rng.randint(2, 3))
            if self.rng.random() < 0.3:
                branches.append(self.record(depth + 1))
            return branches
        if roll < 0.82:
            return {"type": "enum", "name": self.name("E"), "symbols": self.rng.sample(["A", "B", "C", "D"], 3)}
        if roll < 0.87:
            return {"type": "fixed", "name": self.name("F"), "size": self.rng.randint(1, 4)}
        return self.record(depth + 1)

    def record(self, depth: int = 0) -> dict[str, Any]:
        fields = [{"name": f"f{i}", "type": self.type(depth)} for i in range(self.rng.randint(1, 4))]
        return {"type": "record", "name": self.name("R"), "fields": fields}


def _fields_of_records(schema: Any, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every record definition in ``schema`` JSON (outermost first)."""
    if isinstance(schema, list):
        for branch in schema:
            _fields_of_records(branch, found)
    elif isinstance(schema, dict):
        if schema["type"] in ("record", "error"):
            found.append(schema)
            for f in schema["fields"]:
                _fields_of_records(f["type"], found)
        elif schema["type"] == "array":
            _fields_of_records(schema["items"], found)
        elif schema["type"] == "map":
            _fields_of_records(schema["values"], found)
    return found


def _named_defs(schema: Any, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for b in node:
                walk(b)
        elif isinstance(node, dict):
            if node["type"] == kind:
                found.append(node)
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])
            for f in node.get("fields", []):
                walk(f["type"])

    walk(schema)
    return found


def default_for(avro_type: Any) -> Any:
    """A valid JSON default for ``avro_type`` (of its first branch for a union)."""
    kind = _type(avro_type)
    if kind == "union":
        return default_for(avro_type[0])
    simple = {"null": None, "boolean": False, "int": 1, "long": 2, "float": 0.5, "double": 0.25, "string": "d"}
    if kind in simple:
        return simple[kind]
    if kind == "bytes":
        return "b"
    if kind == "array":
        return []
    if kind == "map":
        return {}
    if kind == "enum":
        return avro_type["symbols"][0]
    if kind == "fixed":
        return "z" * avro_type["size"]
    return {f["name"]: default_for(f["type"]) for f in avro_type["fields"]}


def mutate(schema: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]]:
    """One change of the kind a schema goes through, and its name."""
    for _ in range(20):
        change, out = _mutate_once(schema, rng)
        if change != "unchanged":
            return change, out
    return "unchanged", copy.deepcopy(schema)


def _mutate_once(schema: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]]:
    out = copy.deepcopy(schema)
    records = _fields_of_records(out, [])
    record = rng.choice(records)
    fields = record["fields"]
    field = rng.choice(fields)
    choice = rng.choice(
        ["retype", "add", "add_default", "remove", "rename", "rename_alias", "record_rename", "record_alias",
         "enum_add", "enum_remove", "enum_remove_default", "fixed_size", "wrap", "unwrap", "items", "union_add",
         "union_drop"]
    )  # fmt: skip
    if choice == "retype":
        field["type"] = rng.choice(_PRIMITIVES)
        field.pop("default", None)
    elif choice == "add":
        fields.append({"name": f"n{rng.randint(0, 999)}", "type": rng.choice(_PRIMITIVES)})
    elif choice == "add_default":
        # Not bytes: fastavro returns a bytes default as the schema's JSON string (tested on its own).
        choices = [t for t in _PRIMITIVES if t != "bytes"]
        avro_type: Any = rng.choice([*choices, ["null", "string"], {"type": "array", "items": "long"}])
        fields.append({"name": f"n{rng.randint(0, 999)}", "type": avro_type, "default": default_for(avro_type)})
    elif choice == "remove" and len(fields) > 1:
        fields.remove(field)
    elif choice == "rename":
        field["name"] = field["name"] + "x"
    elif choice == "rename_alias":
        field["aliases"] = [field["name"]]
        field["name"] = field["name"] + "x"
    elif choice == "record_rename":
        record["name"] = record["name"] + "x"
    elif choice == "record_alias":
        record["aliases"] = [record["name"]]
        record["name"] = record["name"] + "x"
    elif choice.startswith("enum") and _named_defs(out, "enum"):
        enum = rng.choice(_named_defs(out, "enum"))
        if choice == "enum_add":
            enum["symbols"].append("Z")
        else:
            enum["symbols"].pop()
            if choice == "enum_remove_default":
                enum["default"] = enum["symbols"][0]
    elif choice == "fixed_size" and _named_defs(out, "fixed"):
        rng.choice(_named_defs(out, "fixed"))["size"] += 1
    elif choice == "wrap" and not isinstance(field["type"], list):
        field["type"] = [field["type"], "null"]
    elif choice == "unwrap" and isinstance(field["type"], list):
        field["type"] = rng.choice(field["type"])
        field.pop("default", None)
    elif choice == "union_add" and isinstance(field["type"], list):
        missing = [t for t in _PRIMITIVES if t not in field["type"]]
        field["type"].append(rng.choice(missing))
    elif choice == "union_drop" and isinstance(field["type"], list) and len(field["type"]) > 2:
        field["type"].pop(rng.randrange(1, len(field["type"])))
    elif choice == "items" and isinstance(field["type"], dict) and field["type"]["type"] == "array":
        field["type"]["items"] = rng.choice(_PRIMITIVES)
    else:
        return "unchanged", out
    return choice, out
