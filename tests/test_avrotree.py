"""The schema tree: loading with names resolved, emitting stand-alone JSON, defaults."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from venice.avrotree import Array, Record, Union, default_datum, emit, load, named_types
from venice.errors import SchemaError

NESTED = {
    "type": "record",
    "name": "Outer",
    "namespace": "com.acme",
    "fields": [
        {"name": "a", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "b", "type": {"type": "array", "items": "Inner"}},
        {"name": "c", "type": {"type": "record", "name": "Other", "namespace": "org.x", "fields": [
            {"name": "i", "type": "com.acme.Inner"},
            {"name": "self", "type": ["null", "Other"], "default": None},
        ]}},
        {"name": "d", "type": ["null", "com.acme.Outer"], "default": None},
    ],
}  # fmt: skip


def roundtrip(schema: Any, datum: Any) -> Any:
    stream = io.BytesIO()
    parsed = fastavro.parse_schema(schema)
    fastavro.schemaless_writer(stream, parsed, datum)
    return fastavro.schemaless_reader(io.BytesIO(stream.getvalue()), parsed, None)


class TestLoad:
    def test_references_are_the_definition(self) -> None:
        tree = load(NESTED)
        assert isinstance(tree, Record)
        inner = tree.fields[0].type
        b = tree.fields[1].type
        assert isinstance(b, Array) and b.items is inner
        other = tree.fields[2].type
        assert isinstance(other, Record) and other.fullname == "org.x.Other"
        assert other.fields[0].type is inner
        self_ref = other.fields[1].type
        assert isinstance(self_ref, Union) and self_ref.branches[1] is other
        d = tree.fields[3].type
        assert isinstance(d, Union) and d.branches[1] is tree
        assert set(named_types(tree)) == {"com.acme.Outer", "com.acme.Inner", "org.x.Other"}

    def test_refuses_what_fastavro_refuses(self) -> None:
        with pytest.raises(SchemaError):
            load({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]})
        with pytest.raises(SchemaError):
            load("{")


class TestEmit:
    def test_whole_schema_means_the_same(self) -> None:
        datum = {"a": {"x": 1}, "b": [{"x": 2}], "c": {"i": {"x": 3}, "self": {"i": {"x": 4}, "self": None}},
                 "d": {"a": {"x": 5}, "b": [], "c": {"i": {"x": 6}, "self": None}, "d": None}}  # fmt: skip
        emitted = emit(load(NESTED))
        assert roundtrip(emitted, datum) == roundtrip(NESTED, datum) == datum
        # The same bytes: the emitted schema is the same schema.
        one, two = io.BytesIO(), io.BytesIO()
        fastavro.schemaless_writer(one, fastavro.parse_schema(emitted), datum)
        fastavro.schemaless_writer(two, fastavro.parse_schema(NESTED), datum)
        assert one.getvalue() == two.getvalue()

    def test_a_part_stands_alone(self) -> None:
        """Field b references Inner, defined in field a: emitted alone, b defines it."""
        tree = load(NESTED)
        assert isinstance(tree, Record)
        part = emit(tree.fields[1].type)
        assert part["items"]["name"] == "Inner" and part["items"]["namespace"] == "com.acme"
        wrapper = {"type": "record", "name": "W", "fields": [{"name": "v", "type": part}]}
        assert roundtrip(wrapper, {"v": [{"x": 9}]}) == {"v": [{"x": 9}]}

    def test_defined_types_are_referenced(self) -> None:
        tree = load(NESTED)
        assert isinstance(tree, Record)
        defined = {"com.acme.Inner"}
        assert emit(tree.fields[0].type, defined, "com.acme") == "Inner"
        assert emit(tree.fields[0].type, defined, "org.x") == "com.acme.Inner"


def _fastavro_default(avro_type: Any, default: Any) -> Any:
    """What fastavro fills in for a field the writer does not have."""
    writer = {"type": "record", "name": "R", "fields": []}
    reader = {"type": "record", "name": "R", "fields": [{"name": "f", "type": avro_type, "default": default}]}
    read = fastavro.schemaless_reader(io.BytesIO(b""), fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    return read["f"]


class TestDefaults:
    @pytest.mark.parametrize(
        ("avro_type", "default"),
        [
            ("int", 3),
            ("long", -(1 << 40)),
            ("double", 1.5),
            ("string", "x"),
            ("boolean", True),
            ("null", None),
            (["null", "string"], None),
            ({"type": "array", "items": "long"}, [1, 2]),
            ({"type": "map", "values": "string"}, {"k": "v"}),
            ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B"),
            ({"type": "record", "name": "In", "fields": [{"name": "x", "type": "int"}]}, {"x": 1}),
        ],
    )
    def test_same_as_fastavro(self, avro_type: Any, default: Any) -> None:
        assert default_datum(load(avro_type), default) == _fastavro_default(avro_type, default)

    def test_numbers_as_the_type_says(self) -> None:
        assert default_datum(load("double"), 1) == 1.0 and isinstance(default_datum(load("double"), 1), float)
        assert default_datum(load("float"), "NaN") != default_datum(load("float"), "NaN")  # NaN

    def test_bytes_and_fixed_are_code_points(self) -> None:
        assert default_datum(load("bytes"), "\u00ff\u0000a") == b"\xff\x00a"
        assert default_datum(load({"type": "fixed", "name": "F", "size": 2}), "\u0001\u0002") == b"\x01\x02"

    def test_record_default_fills_field_defaults(self) -> None:
        inner = {
            "type": "record",
            "name": "In",
            "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "string", "default": "d"}],
        }
        assert default_datum(load(inner), {"x": 1}) == {"x": 1, "y": "d"}

    @pytest.mark.parametrize(
        ("avro_type", "default"),
        [
            ("int", 1 << 40),
            ("int", True),
            ("float", 1e39),
            ("bytes", "\u0100"),
            ({"type": "fixed", "name": "F", "size": 2}, "a"),
            ({"type": "enum", "name": "E", "symbols": ["A"]}, "Z"),
            ({"type": "array", "items": "int"}, ["x"]),
            ({"type": "record", "name": "In", "fields": [{"name": "x", "type": "int"}]}, {}),
            (["null", "int"], "x"),
        ],
    )
    def test_defaults_that_do_not_fit(self, avro_type: Any, default: Any) -> None:
        with pytest.raises(ValueError):
            default_datum(load(avro_type), default)
