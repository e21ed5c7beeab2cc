"""Partial updates: the derived update schema, ops -> update, applying, evolution.

Expected values are literals worked out by hand; encodings go through fastavro with
the update schema's JSON alone (what any producer has), never through our own codec.
"""

from __future__ import annotations

import copy
import io
import math
import os
import struct
import subprocess
import sys
from typing import Any

import fastavro
import orjson
import pytest

from venice.avrotree import MAX_NESTING
from venice.errors import IncompleteUpdateError, InvalidValueError, SchemaError, UnknownSchemaError
from venice.evolution import ValueDecoder
from venice.writecompute import (
    Updater,
    WriteCompute,
    apply_update,
    ops_to_update,
    update_schema,
    write_compute,
)

ADDRESS = {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"], "default": None}]}  # fmt: skip
MEMBER: dict[str, Any] = {
    "type": "record",
    "name": "Member",
    "namespace": "com.acme",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string", "default": ""},
        {"name": "visits", "type": "long", "default": 0},
        {"name": "small", "type": "int", "default": 0},
        {"name": "ratio", "type": "float", "default": 0.0},
        {"name": "score", "type": ["null", "double"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "weights", "type": ["null", {"type": "array", "items": "double"}], "default": None},
        {"name": "attrs", "type": {"type": "map", "values": "long"}, "default": {}},
        {"name": "notes", "type": ["null", {"type": "map", "values": "string"}], "default": None},
        {"name": "address", "type": ["null", ADDRESS], "default": None},
        {"name": "home", "type": "Address", "default": {"city": "Nowhere"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}, "default": "RED"},
    ],
}
EMPTY = {
    "id": 1, "name": "", "visits": 0, "small": 0, "ratio": 0.0, "score": None, "tags": [], "weights": None, "attrs": {},
    "notes": None, "address": None, "home": {"city": "Nowhere", "zip": None}, "color": "RED",
}  # fmt: skip


def encode(schema: Any, datum: Any) -> bytes:
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, fastavro.parse_schema(copy.deepcopy(schema)), datum)
    return stream.getvalue()


def decode(schema: Any, data: bytes, **options: Any) -> Any:
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    return fastavro.schemaless_reader(io.BytesIO(data), parsed, None, **options)


def through_the_topic(ops: Any, schema: Any = MEMBER) -> dict[str, Any]:
    """An update as a consumer gets it: encoded with the published update schema JSON by
    fastavro, decoded with the named branches reported."""
    published = orjson.loads(orjson.dumps(update_schema(schema)))
    datum = decode(published, encode(published, ops_to_update(ops, schema)), return_named_type=True)
    assert isinstance(datum, dict)
    return datum


def apply(ops: Any, current: Any, schema: Any = MEMBER) -> Any:
    """Apply through the topic, and check that applying the update straight agrees."""
    direct = apply_update(ops_to_update(ops, schema), current, schema)
    topic = apply_update(through_the_topic(ops, schema), current, schema)
    assert encode(schema, direct) == encode(schema, topic)
    return decode(schema, encode(schema, topic))


class TestUpdateSchema:
    def test_shape(self) -> None:
        derived = update_schema(MEMBER)
        assert derived["name"] == "MemberUpdate" and derived["namespace"] == "com.acme"
        fields = {f["name"]: f for f in derived["fields"]}
        assert list(fields) == [f["name"] for f in MEMBER["fields"]]
        noop = {"type": "record", "name": "NoOp", "namespace": "com.acme", "fields": []}
        assert fields["id"] == {
            "name": "id",
            "type": [noop, "long", {"type": "record", "name": "id_Increment", "namespace": "com.acme",
                                    "fields": [{"name": "by", "type": "long"}]}],
            "default": {},
        }  # fmt: skip
        assert fields["name"]["type"] == ["com.acme.NoOp", "string"]
        assert fields["score"]["type"][:3] == ["com.acme.NoOp", "null", "double"]
        assert fields["score"]["type"][3]["name"] == "score_Increment"
        assert fields["tags"]["type"][2] == {
            "type": "record", "name": "tags_ListOps", "namespace": "com.acme",
            "fields": [{"name": "add", "type": {"type": "array", "items": "string"}, "default": []},
                       {"name": "remove", "type": {"type": "array", "items": "string"}, "default": []}],
        }  # fmt: skip
        assert [b if isinstance(b, str) else b.get("name", b["type"]) for b in fields["weights"]["type"]] == [
            "com.acme.NoOp", "null", "array", "weights_ListOps"
        ]  # fmt: skip
        assert fields["attrs"]["type"][2] == {
            "type": "record", "name": "attrs_MapOps", "namespace": "com.acme",
            "fields": [{"name": "put", "type": {"type": "map", "values": "long"}, "default": {}},
                       {"name": "remove", "type": {"type": "array", "items": "string"}, "default": []}],
        }  # fmt: skip
        # Address is defined once (at its first use) and referenced after that.
        assert fields["address"]["type"][2]["name"] == "Address"
        assert fields["home"]["type"] == ["com.acme.NoOp", "Address"]
        assert fields["color"]["type"][1]["symbols"] == ["RED", "GREEN"]
        assert all(f["default"] == {} for f in derived["fields"])
        fastavro.parse_schema(derived)

    def test_the_example_in_docs_hybrid_md(self) -> None:
        member = {"type": "record", "name": "Member", "fields": [
            {"name": "visits", "type": "long"}, {"name": "tags", "type": {"type": "array", "items": "string"}}]}  # fmt: skip
        assert update_schema(member) == {
            "type": "record", "name": "MemberUpdate", "namespace": "",
            "doc": "Partial update of Member (venice write compute)",
            "fields": [
                {"name": "visits", "default": {}, "type": [
                    {"type": "record", "name": "NoOp", "namespace": "", "fields": []},
                    "long",
                    {"type": "record", "name": "visits_Increment", "namespace": "", "fields": [{"name": "by", "type": "long"}]}]},
                {"name": "tags", "default": {}, "type": [
                    "NoOp",
                    {"type": "array", "items": "string"},
                    {"type": "record", "name": "tags_ListOps", "namespace": "", "fields": [
                        {"name": "add", "type": {"type": "array", "items": "string"}, "default": []},
                        {"name": "remove", "type": {"type": "array", "items": "string"}, "default": []}]}]}]}  # fmt: skip

    def test_deterministic(self) -> None:
        """The same schema written differently (key order, whitespace) derives the same text."""
        reordered = orjson.loads(orjson.dumps(MEMBER, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        assert WriteCompute(reordered).update_schema_text == WriteCompute(orjson.dumps(MEMBER).decode()).update_schema_text

    def test_generated_names_avoid_the_value_schemas_names(self) -> None:
        clashing = {
            "type": "record", "name": "V",
            "fields": [
                {"name": "n", "type": "long"},
                {"name": "x", "type": {"type": "record", "name": "NoOp", "fields": [{"name": "q", "type": "int"}]}},
                {"name": "y", "type": {"type": "record", "name": "n_Increment", "fields": []}},
                {"name": "z", "type": {"type": "record", "name": "VUpdate", "fields": []}},
            ],
        }  # fmt: skip
        derived = update_schema(clashing)
        assert derived["name"] == "VUpdate_"
        n_union = derived["fields"][0]["type"]
        assert n_union[0]["name"] == "NoOp_" and n_union[2]["name"] == "n_Increment_"
        fastavro.parse_schema(derived)
        compute = WriteCompute(clashing)
        assert compute.apply(compute.from_ops({"set": {"x": {"q": 1}}, "increment": {"n": 2}}), {"n": 1, "x": {"q": 0}, "y": {}, "z": {}}) == {
            "n": 3, "x": {"q": 1}, "y": {}, "z": {}
        }  # fmt: skip

    def test_recursive_value_schema(self) -> None:
        node = {"type": "record", "name": "Node", "fields": [
            {"name": "v", "type": "long", "default": 0},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ]}  # fmt: skip
        derived = update_schema(node)
        fastavro.parse_schema(derived)
        chain = {"v": 1, "next": {"v": 2, "next": None}}
        assert apply({"set": {"next": chain}}, None, node) == {"v": 0, "next": chain}

    def test_only_records(self) -> None:
        for schema in ("string", {"type": "array", "items": "long"}, ["null", "long"]):
            with pytest.raises(SchemaError, match="record"):
                update_schema(schema)


class TestOps:
    def test_set(self) -> None:
        ops = {"set": {"name": "Ann", "score": 2.5, "address": {"city": "Oslo"}, "home": {"city": "Rome", "zip": "1"},
                       "color": "GREEN", "tags": ["x"], "attrs": {"k": 1}}}  # fmt: skip
        assert apply(ops, {**EMPTY}) == {
            **EMPTY, "name": "Ann", "score": 2.5, "address": {"city": "Oslo", "zip": None}, "home": {"city": "Rome", "zip": "1"},
            "color": "GREEN", "tags": ["x"], "attrs": {"k": 1},
        }  # fmt: skip

    def test_set_null(self) -> None:
        current = {**EMPTY, "score": 1.0, "address": {"city": "a", "zip": None}, "weights": [1.0]}
        assert apply({"set": {"score": None, "address": None, "weights": None}}, current) == EMPTY

    def test_untouched_fields_keep_their_value(self) -> None:
        current = {**EMPTY, "name": "kept", "tags": ["t"], "attrs": {"a": 1}}
        assert apply({"increment": {"visits": 1}}, current) == {**current, "visits": 1}

    def test_increment(self) -> None:
        current = {**EMPTY, "visits": 40, "small": -5, "ratio": 0.5, "score": 1.25}
        result = apply({"increment": {"visits": 2, "small": 10, "ratio": 0.25, "score": -0.25}}, current)
        assert (result["visits"], result["small"], result["ratio"], result["score"]) == (42, 5, 0.75, 1.0)

    def test_increment_of_null_starts_at_zero(self) -> None:
        assert apply({"increment": {"score": 3}}, EMPTY)["score"] == 3.0

    def test_float_increment_rounds_like_float32(self) -> None:
        """0.1 is not a float32: the sum is what a float field can hold, whichever way the
        update travelled (numpy's float32 arithmetic as the second opinion)."""
        np = pytest.importorskip("numpy")
        result = apply({"increment": {"ratio": 0.1}}, {**EMPTY, "ratio": 0.5})["ratio"]
        assert result == float(np.float32(0.5) + np.float32(0.1))

    def test_add_to_list_is_a_set_union_keeping_order(self) -> None:
        current = {**EMPTY, "tags": ["b", "a", "b"]}  # duplicates already there stay
        assert apply({"add_to_list": {"tags": ["c", "a", "d", "c"]}}, current)["tags"] == ["b", "a", "b", "c", "d"]

    def test_remove_from_list_removes_every_equal_element(self) -> None:
        current = {**EMPTY, "tags": ["b", "a", "b", "c"]}
        assert apply({"remove_from_list": {"tags": ["b", "zz"]}}, current)["tags"] == ["a", "c"]

    def test_add_and_remove_together(self) -> None:
        current = {**EMPTY, "tags": ["a", "b"]}
        assert apply({"add_to_list": {"tags": ["c"]}, "remove_from_list": {"tags": ["a"]}}, current)["tags"] == ["b", "c"]

    def test_null_list_counts_as_empty(self) -> None:
        assert apply({"add_to_list": {"weights": [1.5, 1.5, 2.0]}}, EMPTY)["weights"] == [1.5, 2.0]
        assert apply({"remove_from_list": {"weights": [1.5]}}, EMPTY)["weights"] == []

    def test_list_items_compare_by_encoding(self) -> None:
        """-0.0 and 0.0 differ in Avro bytes, so they are different items; NaN is one item."""
        current = {**EMPTY, "weights": [0.0, math.nan]}
        result = apply({"add_to_list": {"weights": [-0.0, math.nan]}}, current)["weights"]
        assert [struct.pack("<d", w) for w in result] == [struct.pack("<d", w) for w in (0.0, math.nan, -0.0)]
        assert apply({"remove_from_list": {"weights": [0.0]}}, {**EMPTY, "weights": [-0.0, 0.0]})["weights"] == [-0.0]
        assert (
            math.copysign(1, apply({"remove_from_list": {"weights": [0.0]}}, {**EMPTY, "weights": [-0.0, 0.0]})["weights"][0])
            == -1
        )

    def test_list_of_records(self) -> None:
        schema = {"type": "record", "name": "R", "fields": [
            {"name": "items", "type": {"type": "array", "items": ADDRESS}, "default": []}]}  # fmt: skip
        current = {"items": [{"city": "a", "zip": None}, {"city": "b", "zip": "1"}]}
        added = apply({"add_to_list": {"items": [{"city": "a"}, {"city": "b", "zip": "2"}]}}, current, schema)
        assert added["items"] == [{"city": "a", "zip": None}, {"city": "b", "zip": "1"}, {"city": "b", "zip": "2"}]
        removed = apply({"remove_from_list": {"items": [{"city": "b", "zip": "1"}]}}, current, schema)
        assert removed["items"] == [{"city": "a", "zip": None}]

    def test_nullable_items(self) -> None:
        schema = {"type": "record", "name": "R", "fields": [
            {"name": "xs", "type": {"type": "array", "items": ["null", "long"]}, "default": []}]}  # fmt: skip
        assert apply({"add_to_list": {"xs": [None, 0, None]}}, {"xs": [0]}, schema)["xs"] == [0, None]
        assert apply({"remove_from_list": {"xs": [None]}}, {"xs": [None, 1, None]}, schema)["xs"] == [1]

    def test_map_ops(self) -> None:
        current = {**EMPTY, "attrs": {"a": 1, "b": 2}}
        assert apply({"put_in_map": {"attrs": {"b": 20, "c": 3}}}, current)["attrs"] == {"a": 1, "b": 20, "c": 3}
        assert apply({"remove_from_map": {"attrs": ["a", "zz"]}}, current)["attrs"] == {"b": 2}
        both = apply({"put_in_map": {"attrs": {"c": 3}}, "remove_from_map": {"attrs": ["a"]}}, current)
        assert list(both["attrs"].items()) == [("b", 2), ("c", 3)]  # order: kept, then new

    def test_null_map_counts_as_empty(self) -> None:
        assert apply({"put_in_map": {"notes": {"k": "v"}}}, EMPTY)["notes"] == {"k": "v"}
        assert apply({"remove_from_map": {"notes": ["k"]}}, EMPTY)["notes"] == {}

    def test_missing_key_starts_from_defaults(self) -> None:
        result = apply({"set": {"id": 9}, "add_to_list": {"tags": ["t"]}, "increment": {"visits": 1}}, None)
        assert result == {**EMPTY, "id": 9, "tags": ["t"], "visits": 1}

    def test_defaults_are_not_shared(self) -> None:
        compute = write_compute(MEMBER)
        first = compute.apply(compute.from_ops({"set": {"id": 1}}), None)
        first["home"]["city"] = "mutated"
        first["tags"].append("mutated")
        second = compute.apply(compute.from_ops({"set": {"id": 1}}), None)
        assert second["home"] == {"city": "Nowhere", "zip": None} and second["tags"] == []

    def test_missing_key_and_a_field_without_default(self) -> None:
        with pytest.raises(IncompleteUpdateError, match="field id has no default") as caught:
            apply_update(ops_to_update({"increment": {"visits": 1}}, MEMBER), None, MEMBER)
        assert isinstance(caught.value, InvalidValueError)
        assert caught.value.details == {"field": "id"}

    def test_apply_does_not_modify_its_inputs(self) -> None:
        current = {**EMPTY, "tags": ["a"], "attrs": {"a": 1}}
        snapshot = copy.deepcopy(current)
        update = ops_to_update({"add_to_list": {"tags": ["b"]}, "put_in_map": {"attrs": {"b": 2}}}, MEMBER)
        update_snapshot = copy.deepcopy(update)
        apply_update(update, current, MEMBER)
        assert current == snapshot and update == update_snapshot


class TestOpErrors:
    @pytest.mark.parametrize(
        ("ops", "message"),
        [
            ({"set": {"nope": 1}}, "no field 'nope'"),
            ({"sett": {"id": 1}}, "unknown update op"),
            ({"set": {"visits": "x"}}, "field visits"),
            ({"set": {"visits": True}}, "field visits"),
            ({"set": {"id": None}}, "field id"),
            ({"set": {"address": {"city": "x", "planet": "Mars"}}}, "planet"),
            ({"set": {"color": "BLUE"}}, "field color"),
            ({"increment": {"name": 1}}, "not a number"),
            ({"increment": {"tags": 1}}, "not a number"),
            ({"increment": {"visits": 1.5}}, "not an integer"),
            ({"increment": {"visits": True}}, "not a number"),
            ({"increment": {"visits": "1"}}, "not a number"),
            ({"increment": {"score": math.nan}}, "not a finite number"),
            ({"increment": {"score": math.inf}}, "not a finite number"),
            ({"increment": {"visits": 1 << 63}}, "overflows long"),
            ({"increment": {"small": 1 << 31}}, "overflows int"),
            ({"increment": {"ratio": 1e39}}, "overflows float"),
            ({"add_to_list": {"attrs": ["x"]}}, "not a list"),
            ({"add_to_list": {"tags": "x"}}, "JSON array"),
            ({"add_to_list": {"tags": ["ok", 5]}}, "item 1"),
            ({"remove_from_list": {"tags": [None]}}, "item 0"),
            ({"put_in_map": {"tags": {"k": 1}}}, "not a map"),
            ({"put_in_map": {"attrs": ["k"]}}, "JSON object"),
            ({"put_in_map": {"attrs": {"k": "v"}}}, "key 'k'"),
            ({"remove_from_map": {"attrs": "k"}}, "array of keys"),
            ({"remove_from_map": {"attrs": [1]}}, "array of keys"),
            ({"set": {"visits": 1}, "increment": {"visits": 1}}, "conflict"),
            ({"add_to_list": {"tags": ["a"]}, "set": {"tags": []}}, "conflict"),
            ({"add_to_list": {"tags": ["a", "b"]}, "remove_from_list": {"tags": ["b"]}}, "both added and removed"),
            ({"put_in_map": {"attrs": {"k": 1}}, "remove_from_map": {"attrs": ["k"]}}, "conflict on key"),
            ({"put_in_map": {"attrs": {"k": 1}}, "increment": {"attrs": 1}}, "conflict"),
            ({}, "names no field"),
            ({"set": {}}, "names no field"),
            ({"set": [1]}, "object of field"),
            ([{"set": {}}], "JSON object of ops"),
            ("set", "JSON object of ops"),
            (None, "JSON object of ops"),
        ],
    )
    def test_refused(self, ops: Any, message: str) -> None:
        with pytest.raises(InvalidValueError, match=message):
            ops_to_update(ops, MEMBER)

    def test_the_error_names_the_field(self) -> None:
        with pytest.raises(InvalidValueError) as caught:
            ops_to_update({"increment": {"visits": "x"}}, MEMBER)
        assert caught.value.details == {"field": "visits"}

    def test_increment_overflow_when_applied(self) -> None:
        for field, value, by, kind in (("visits", (1 << 63) - 1, 1, "long"), ("small", -(1 << 31), -1, "int")):
            with pytest.raises(InvalidValueError, match=f"overflows {kind}"):
                apply_update(ops_to_update({"increment": {field: by}}, MEMBER), {**EMPTY, field: value}, MEMBER)
        with pytest.raises(InvalidValueError, match="overflows float"):
            apply_update(ops_to_update({"increment": {"ratio": 3e38}}, MEMBER), {**EMPTY, "ratio": 3e38}, MEMBER)
        with pytest.raises(InvalidValueError, match="overflows double"):
            apply_update(ops_to_update({"increment": {"score": 1e308}}, MEMBER), {**EMPTY, "score": 1e308}, MEMBER)

    def test_nan_increment_from_another_producer(self) -> None:
        """A producer that bypasses ops_to_update can put a NaN on the topic: refused."""
        compute = write_compute(MEMBER)
        update = {f["name"]: (compute.noop, {}) for f in MEMBER["fields"]}
        update["score"] = ("com.acme.score_Increment", {"by": math.nan})
        published = compute.update_schema
        data = encode(published, update)
        with pytest.raises(InvalidValueError, match="not a finite number"):
            compute.apply(compute.decode_update(data), {**EMPTY, "score": 1.0})

    def test_bytes_that_are_not_an_update(self) -> None:
        compute = write_compute(MEMBER)
        for data in (b"", b"\xff" * 20, compute.encode_update(ops_to_update({"set": {"id": 1}}, MEMBER)) + b"x"):
            with pytest.raises(InvalidValueError):
                compute.decode_update(data)

    def test_unknown_op_tag_in_an_update_datum(self) -> None:
        with pytest.raises(InvalidValueError, match="names no op or type"):
            apply_update({"visits": ("com.acme.Bogus", {})}, EMPTY, MEMBER)


class TestHostileInput:
    def test_huge_list(self) -> None:
        """100 000 items, half already present: linear work, exact result."""
        current = {**EMPTY, "tags": [f"t{i}" for i in range(0, 100_000, 2)]}
        result = apply_update(
            ops_to_update({"add_to_list": {"tags": [f"t{i}" for i in range(100_000)]}}, MEMBER), current, MEMBER
        )
        assert result["tags"] == [f"t{i}" for i in range(0, 100_000, 2)] + [f"t{i}" for i in range(1, 100_000, 2)]
        removed = apply_update(ops_to_update({"remove_from_list": {"tags": result["tags"][::2]}}, MEMBER), result, MEMBER)
        assert removed["tags"] == result["tags"][1::2]

    def test_deep_nesting(self) -> None:
        """fastavro's C code overflows the C stack (a crash, not an exception) on data
        nested a few thousand levels deep, which only recursive schemas allow: such data
        is refused with an error, whether it comes as ops or as bytes."""
        node = {"type": "record", "name": "Node", "fields": [
            {"name": "v", "type": "long", "default": 0},
            {"name": "next", "type": ["null", "Node"], "default": None}]}  # fmt: skip
        compute = WriteCompute(node)

        def chain(depth: int) -> Any:
            value: Any = None
            for i in range(depth):
                value = {"v": (1 << 50) + i, "next": value}
            return value

        ok = chain(MAX_NESTING - 1)
        assert apply({"set": {"next": ok}}, None, node) == {"v": 0, "next": ok}
        long_chain = compute.encode_value({"v": 0, "next": ok})
        assert len(long_chain) > 256  # read by fastavro's pure-Python reader
        assert ValueDecoder({1: node}).decode(1, long_chain) == {"v": 0, "next": ok}
        assert compute.encode_value(compute.decode_value(long_chain)) == long_chain
        for depth in (MAX_NESTING + 1, 100_000):
            with pytest.raises(InvalidValueError, match="field next"):
                ops_to_update({"set": {"next": chain(depth)}}, node)
        with pytest.raises(InvalidValueError, match="nests deeper"):
            compute.encode_value({"v": 0, "next": chain(100_000)})
        # 200 000 bytes of "next is a Node": would be 100 000 levels deep.
        hostile = b"\x00\x02" * 100_000 + b"\x00\x00"
        for read in (compute.decode_value, ValueDecoder({1: node}).decoder(1)):
            with pytest.raises(InvalidValueError, match="nests too deeply"):
                read(hostile)
        # As an update: v is NoOp (branch 0), next is set (branch 2: Node) to that chain.
        with pytest.raises(InvalidValueError, match="nests too deeply"):
            compute.decode_update(b"\x00\x04" + hostile)

    def test_nesting_limit_counts_from_the_value(self) -> None:
        """A list item of a recursive schema may nest as deep as leaves the whole value
        within the limit: refused at the op, never half-accepted and failing later."""
        tree = {"type": "record", "name": "Tree", "fields": [
            {"name": "kids", "type": {"type": "array", "items": "Tree"}, "default": []}]}  # fmt: skip

        def chain(levels: int) -> Any:  # a Tree of `levels` records: 2 * levels - 1 containers
            value: Any = {"kids": []}
            for _ in range(levels - 1):
                value = {"kids": [value]}
            return value

        fits = chain(MAX_NESTING // 2 - 1)  # value record + list + this = MAX_NESTING - 1 containers
        result = apply({"add_to_list": {"kids": [fits]}}, None, tree)
        assert result == {"kids": [fits]}
        too_deep = chain(MAX_NESTING // 2)
        with pytest.raises(InvalidValueError, match="item 0: a value nested deeper"):
            ops_to_update({"add_to_list": {"kids": [too_deep]}}, tree)
        with pytest.raises(InvalidValueError, match="set: field kids"):
            ops_to_update({"set": {"kids": [too_deep]}}, tree)

    def test_wrong_json_types_everywhere(self) -> None:
        """Every op on every kind of field with every JSON type: refused with
        InvalidValueError, or accepted as an update that is valid Avro of the published
        schema and applies."""
        published = update_schema(MEMBER)
        accepted = refused = 0
        for value in (1, "x", [1], ["x"], {"a": 1}, {"city": "c"}, True, None, 1.5, -(1 << 70)):
            for op in ("set", "add_to_list", "remove_from_list", "put_in_map", "remove_from_map", "increment"):
                for name in ("id", "score", "tags", "weights", "attrs", "notes", "address", "home", "color"):
                    try:
                        update = ops_to_update({op: {name: value}}, MEMBER)
                    except InvalidValueError:
                        refused += 1
                        continue
                    accepted += 1
                    datum = decode(published, encode(published, update), return_named_type=True)
                    decode(MEMBER, encode(MEMBER, apply_update(datum, {**EMPTY, "score": 1.0}, MEMBER)))
        assert refused > 400 and accepted > 20

    def test_wrong_current_value(self) -> None:
        with pytest.raises(InvalidValueError, match="not a list"):
            apply_update(ops_to_update({"add_to_list": {"tags": ["a"]}}, MEMBER), {**EMPTY, "tags": "abc"}, MEMBER)
        with pytest.raises(InvalidValueError, match="the current value has no field"):
            apply_update(ops_to_update({"add_to_list": {"tags": ["a"]}}, MEMBER), {"id": 1}, MEMBER)
        with pytest.raises(InvalidValueError, match="not a record"):
            apply_update(ops_to_update({"set": {"id": 1}}, MEMBER), [1], MEMBER)  # type: ignore[arg-type]


class TestGenericProducers:
    def test_plain_dicts_pick_the_right_branch(self) -> None:
        """A producer that writes plain dicts with fastavro (no branch names) still gets
        its ops: fastavro picks the record branch sharing most field names."""
        published = update_schema(MEMBER)
        plain = {"id": 7, "visits": {"by": 3}, "tags": {"add": ["x"]}, "address": {"city": "Oslo"}}
        datum = decode(published, encode(published, plain), return_named_type=True)
        result = apply_update(datum, {**EMPTY, "visits": 1}, MEMBER)
        assert result["id"] == 7 and result["visits"] == 4 and result["tags"] == ["x"]
        assert decode(MEMBER, encode(MEMBER, result))["address"] == {"city": "Oslo", "zip": None}
        assert result["name"] == "" and result["attrs"] == {}  # absent fields are NoOp (the default)


class _Model:
    """A second, deliberately naive implementation of the ops on plain values."""

    LIMITS = {"visits": 1 << 63, "small": 1 << 31}  # noqa: RUF012

    @classmethod
    def apply(cls, ops: dict[str, Any], value: dict[str, Any]) -> dict[str, Any] | None:
        out = copy.deepcopy(value)
        for name, v in ops.get("set", {}).items():
            out[name] = v
        for name, by in ops.get("increment", {}).items():
            out[name] = (out[name] or 0) + by
            if name in cls.LIMITS and not -cls.LIMITS[name] <= out[name] < cls.LIMITS[name]:
                return None  # overflow: refused
        for name, items in ops.get("add_to_list", {}).items():
            out[name] = list(out[name] or [])
            for item in items:
                if item not in out[name]:
                    out[name].append(item)
        for name, items in ops.get("remove_from_list", {}).items():
            out[name] = [x for x in (out[name] or []) if x not in items]
        for name, entries in ops.get("put_in_map", {}).items():
            out[name] = {**(out[name] or {}), **entries}
        for name, keys in ops.get("remove_from_map", {}).items():
            out[name] = {k: v for k, v in (out[name] or {}).items() if k not in keys}
        return out


def _random_ops(rng: Any) -> dict[str, Any]:
    words = ["a", "b", "c", "d"]
    choices: list[tuple[str, str, Any]] = [
        ("set", "name", lambda: rng.choice(words)),
        ("set", "tags", lambda: rng.sample(words, rng.randint(0, 3))),
        ("set", "notes", lambda: rng.choice([None, {"k": "v"}])),
        ("increment", "visits", lambda: rng.choice([1, -3, (1 << 62)])),
        ("increment", "small", lambda: rng.choice([1, -7, (1 << 30)])),
        ("increment", "score", lambda: rng.choice([0.5, -2.0])),
        ("add_to_list", "tags", lambda: rng.sample(words, rng.randint(0, 3))),
        ("remove_from_list", "tags", lambda: rng.sample(words, rng.randint(0, 2))),
        ("add_to_list", "weights", lambda: [rng.choice([0.5, 1.5])]),
        ("put_in_map", "attrs", lambda: {rng.choice(words): rng.randint(-5, 5)}),
        ("remove_from_map", "attrs", lambda: rng.sample(words, 1)),
        ("put_in_map", "notes", lambda: {rng.choice(words): "x"}),
    ]
    ops: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for op, name, make in rng.sample(choices, rng.randint(1, 4)):
        if name in used:
            continue
        used.add(name)
        ops.setdefault(op, {})[name] = make()
    return ops


def test_random_update_sequences_match_a_naive_model() -> None:
    """300 random sequences of updates, each applied through the topic (fastavro encoding
    with the published schema) and by a naive model: same values, same refusals."""
    import random

    rng = random.Random(7)
    compute = write_compute(MEMBER)
    published = fastavro.parse_schema(copy.deepcopy(compute.update_schema))
    refused = 0
    for _ in range(300):
        value: dict[str, Any] = copy.deepcopy(EMPTY)
        stored = encode(MEMBER, value)
        for _ in range(5):
            ops = _random_ops(rng)
            expected = _Model.apply(ops, value)
            stream = io.BytesIO()
            fastavro.schemaless_writer(stream, published, ops_to_update(ops, MEMBER))
            update = fastavro.schemaless_reader(io.BytesIO(stream.getvalue()), published, None, return_named_type=True)
            try:
                new = compute.apply(update, decode(MEMBER, stored, return_named_type=True))
            except InvalidValueError:
                assert expected is None, ops
                refused += 1
                continue
            assert expected is not None, ops
            stored = encode(MEMBER, new)
            value = expected
            assert decode(MEMBER, stored) == value
    assert refused > 10


class TestDeterminism:
    OPS: list[Any] = [  # noqa: RUF012
        {"set": {"id": 1}, "add_to_list": {"tags": ["b", "a"]}, "put_in_map": {"attrs": {"z": 1, "y": 2, "x": 3}}},
        {"increment": {"visits": 5, "ratio": 0.1}, "add_to_list": {"weights": [0.5, -0.0]}},
        {"remove_from_list": {"tags": ["b"]}, "put_in_map": {"attrs": {"a": 0}}, "remove_from_map": {"attrs": ["y"]}},
        {"set": {"address": {"city": "x"}}, "put_in_map": {"notes": {"k": "v"}}},
    ]

    def _run(self) -> bytes:
        compute = write_compute(MEMBER)
        value: Any = None
        for ops in self.OPS:
            value = compute.apply(compute.decode_update(compute.encode_update(compute.from_ops(ops))), value)
            value = compute.decode_value(compute.encode_value(value))
        return compute.encode_value(value)

    def test_same_bytes_in_every_process(self) -> None:
        """Replicas are separate processes with different hash seeds: the bytes agree."""
        script = "from tests.test_writecompute import TestDeterminism as T; print(T()._run().hex())"
        outputs = set()
        for seed in ("0", "1", "12345"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            done = subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, cwd=os.getcwd()
            )
            outputs.add(done.stdout.strip())
        assert outputs == {self._run().hex()}
        value = decode(MEMBER, self._run())
        assert value["tags"] == ["a"] and list(value["attrs"]) == ["z", "x", "a"] and value["visits"] == 5


V1: dict[str, Any] = {
    "type": "record",
    "name": "Profile",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "visits", "type": "int", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "old", "type": "string", "default": "o"},
    ],
}
V2: dict[str, Any] = {
    "type": "record",
    "name": "Profile",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "visits", "type": "long", "default": 0},  # int -> long
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "score", "type": ["null", "double"], "default": None},
        {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {"src": "v2"}},
    ],
}


class TestEvolution:
    """Updates and stored values of different schema versions (V1 -> V2 is one step of a
    store's evolution; ids 1 and 2)."""

    def test_new_update_on_an_old_value(self) -> None:
        updater = Updater({1: V1, 2: V2})
        stored = encode(V1, {"id": 5, "visits": 3, "tags": ["a"], "old": "x"})
        update = WriteCompute(V2).encode_update(ops_to_update({"increment": {"visits": 1}, "set": {"score": 0.5}}, V2))
        schema_id, data = updater.apply(2, update, (1, stored))
        assert schema_id == 2
        assert decode(V2, data) == {"id": 5, "visits": 4, "tags": ["a"], "score": 0.5, "labels": {"src": "v2"}}

    def test_old_update_on_a_new_value(self) -> None:
        """The value keeps its newer fields: the update is carried over to schema 2."""
        updater = Updater({1: V1, 2: V2})
        stored = encode(V2, {"id": 5, "visits": 3, "tags": ["a"], "score": 1.5, "labels": {"k": "v"}})
        update = WriteCompute(V1).encode_update(
            ops_to_update({"increment": {"visits": 2}, "add_to_list": {"tags": ["b"]}, "set": {"old": "gone"}}, V1)
        )
        schema_id, data = updater.apply(1, update, (2, stored))
        assert schema_id == 2
        assert decode(V2, data) == {"id": 5, "visits": 5, "tags": ["a", "b"], "score": 1.5, "labels": {"k": "v"}}

    def test_old_set_is_resolved_into_the_new_type(self) -> None:
        v1 = {"type": "record", "name": "P", "fields": [{"name": "n", "type": ["null", "int"], "default": None}]}
        v2 = {"type": "record", "name": "P", "fields": [{"name": "n", "type": ["null", "long", "string"], "default": None}]}
        updater = Updater({1: v1, 2: v2})
        update = WriteCompute(v1).encode_update(ops_to_update({"set": {"n": 7}}, v1))
        assert decode(v2, updater.apply(1, update, (2, encode(v2, {"n": "s"})))[1]) == {"n": 7}
        null = WriteCompute(v1).encode_update(ops_to_update({"set": {"n": None}}, v1))
        assert decode(v2, updater.apply(1, null, (2, encode(v2, {"n": "s"})))[1]) == {"n": None}

    def test_no_value_yet(self) -> None:
        updater = Updater({1: V1, 2: V2})
        update = WriteCompute(V1).encode_update(ops_to_update({"set": {"id": 1}}, V1))
        schema_id, data = updater.apply(1, update, None)
        assert schema_id == 1 and decode(V1, data) == {"id": 1, "visits": 0, "tags": [], "old": "o"}

    def test_same_schema(self) -> None:
        updater = Updater({1: V1})
        stored = encode(V1, {"id": 5, "visits": 3, "tags": [], "old": "x"})
        update = WriteCompute(V1).encode_update(ops_to_update({"add_to_list": {"tags": ["t"]}}, V1))
        assert decode(V1, updater.apply(1, update, (1, stored))[1]) == {"id": 5, "visits": 3, "tags": ["t"], "old": "x"}

    def test_named_union_branches_survive_rewrites(self) -> None:
        """A value whose union holds one of two records with the same fields: an update of
        another field must not move it to the other record on re-encoding."""
        a = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}
        b = {"type": "record", "name": "B", "fields": [{"name": "x", "type": "int"}]}
        schema = {"type": "record", "name": "V", "fields": [{"name": "u", "type": [a, b]}, {"name": "n", "type": "long"}]}
        updater = Updater({1: schema})
        stored = encode(schema, {"u": ("B", {"x": 1}), "n": 0})
        update = WriteCompute(schema).encode_update(ops_to_update({"increment": {"n": 1}}, schema))
        _, data = updater.apply(1, update, (1, stored))
        assert decode(schema, data, return_named_type=True) == {"u": ("B", {"x": 1}), "n": 1}
        assert data == encode(schema, {"u": ("B", {"x": 1}), "n": 1})

    def test_unknown_schema_id(self) -> None:
        with pytest.raises(UnknownSchemaError):
            Updater({1: V1}).apply(3, b"", None)

    def test_helper_resolves_the_old_value_first(self) -> None:
        """What the brief's helper is for: an update of schema 2, a value of schema 1."""
        updater = Updater({1: V1, 2: V2})
        old = updater.decoder.decode_as(1, encode(V1, {"id": 1, "visits": 2, "tags": [], "old": "x"}), 2, tagged=True)
        assert old == {"id": 1, "visits": 2, "tags": [], "score": None, "labels": {"src": "v2"}}
        assert apply_update(ops_to_update({"put_in_map": {"labels": {"k": "v"}}}, V2), old, V2)["labels"] == {
            "src": "v2",
            "k": "v",
        }
