"""Avro codec, key parsing from paths and the shared partitioner."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest

from venice.errors import InvalidKeyError, InvalidValueError, SchemaError
from venice.partitioner import partition_for
from venice.schema import (
    MAX_KEY_BYTES,
    MAX_SCHEMA_DEPTH,
    AvroCodec,
    key_from_text,
    parse_double,
    parse_integer,
    parse_schema,
    validate_schema,
)

RECORD = {
    "type": "record",
    "name": "V",
    "fields": [
        {"name": "a", "type": "long"},
        {"name": "b", "type": ["null", "string"], "default": None},
        {"name": "c", "type": {"type": "array", "items": "float"}},
    ],
}


class TestAvroCodec:
    def test_round_trip(self) -> None:
        codec = AvroCodec(RECORD)
        assert codec.decode(codec.encode({"a": 1, "b": "x", "c": [1.5]})) == {"a": 1, "b": "x", "c": [1.5]}

    def test_wrong_type_names_the_field(self) -> None:
        with pytest.raises(InvalidValueError, match=r"V\.a"):
            AvroCodec(RECORD).encode({"a": "one", "c": []})

    def test_extra_field_is_refused(self) -> None:
        assert "zzz" in (AvroCodec(RECORD).problem({"a": 1, "c": [], "zzz": 1}) or "")

    def test_bad_schema(self) -> None:
        with pytest.raises(SchemaError):
            parse_schema('{"type": "record"')

    def test_primitive_schema_by_name(self) -> None:
        assert AvroCodec("long", kind="key").decode(AvroCodec("long", kind="key").encode(42)) == 42


class TestKeyFromText:
    def test_typed_keys(self) -> None:
        assert key_from_text(AvroCodec("long"), "42") == 42
        assert key_from_text(AvroCodec("string"), "a/b c") == "a/b c"
        assert key_from_text(AvroCodec("boolean"), "true") is True

    def test_invalid_key(self) -> None:
        with pytest.raises(InvalidKeyError):
            key_from_text(AvroCodec("long", kind="key"), "abc")


class TestPartitioner:
    def test_spreads_keys(self) -> None:
        codec = AvroCodec("long")
        seen = {partition_for(codec.encode(i), 4) for i in range(100)}
        assert seen == {0, 1, 2, 3}


class TestPrimitiveCodecs:
    """The direct codecs of primitive schemas write and read exactly what fastavro does."""

    SAMPLES: ClassVar[dict[str, list[Any]]] = {
        "string": ["", "a", "naïve ☃", "x" * 300, "\x00"],
        "bytes": [b"", b"\x00\xff", b"y" * 200],
        "int": [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31)],
        "long": [0, 1, -1, 127, 128, -129, 2**40, 2**63 - 1, -(2**63)],
        "boolean": [True, False],
        "float": [0.0, 1.5, -2.25, 2.0**100, float("inf")],  # exactly representable in 32 bits
        "double": [0.0, 1e300, -1e-300, 3.141592653589793, float("-inf")],
        "null": [None],
    }

    @staticmethod
    def fastavro_bytes(schema: str, datum: object) -> bytes:
        import io

        import fastavro

        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, datum)
        return buf.getvalue()

    @pytest.mark.parametrize("schema", sorted(SAMPLES))
    def test_same_bytes_and_round_trip(self, schema: str) -> None:
        codec = AvroCodec(schema)
        for datum in self.SAMPLES[schema]:
            encoded = codec.encode(datum)
            assert encoded == self.fastavro_bytes(schema, datum), (schema, datum)
            assert codec.decode(encoded) == datum

    def test_random_longs_and_strings_match_fastavro(self) -> None:
        import random

        rng = random.Random(5)
        longs, strings = AvroCodec("long"), AvroCodec("string")
        for _ in range(2000):
            n = rng.randint(-(2**63), 2**63 - 1) >> rng.randint(0, 63)
            assert longs.encode(n) == self.fastavro_bytes("long", n)
            assert longs.decode(longs.encode(n)) == n
            text = "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 40)))
            assert strings.decode(strings.encode(text)) == text

    @pytest.mark.parametrize(("schema", "datum"), [
        ("int", 2**31), ("long", 2**63), ("int", True), ("long", 1.5), ("string", b"x"), ("boolean", 1),
        ("float", "1"), ("null", 0),
    ])
    def test_values_that_do_not_fit_are_refused(self, schema: str, datum: object) -> None:
        assert AvroCodec(schema).problem(datum) is not None

    @pytest.mark.parametrize(("schema", "data"), [
        ("string", b"\x06ab"), ("string", b"\x02ab"), ("long", b"\x80"), ("long", b"\x02\x02"),
        ("int", b"\x80\x80\x80\x80\x10"), ("boolean", b"\x02"), ("double", b"\x00" * 4), ("null", b"\x00"),
        ("string", b"\x04\xff\xfe"),
    ])
    def test_malformed_data_is_an_invalid_value(self, schema: str, data: bytes) -> None:
        with pytest.raises(InvalidValueError):
            AvroCodec(schema).decode(data)


class TestValidateSchema:
    """Full Avro schema validation (issue 8, item 5): what fastavro lets through is refused."""

    @pytest.mark.parametrize(
        "schema",
        [
            "long",
            "string",
            RECORD,
            {"type": "enum", "name": "E", "symbols": ["A", "B"], "default": "B"},
            {"type": "fixed", "name": "F", "size": 16},
            {"type": "fixed", "name": "F", "size": 1 << 20},
            ["null", "string", {"type": "array", "items": "long"}, {"type": "map", "values": "long"}],
            {"type": "long", "logicalType": "timestamp-millis"},
            {
                "type": "record", "name": "Node", "namespace": "com.example",
                "fields": [
                    {"name": "value", "type": "long", "default": 0},
                    {"name": "next", "type": ["null", "Node"], "default": None},
                    {"name": "tag", "type": {"type": "enum", "name": "Tag", "symbols": ["X"]}, "default": "X"},
                    {"name": "same", "type": "com.example.Tag", "default": "X"},
                    {"name": "raw", "type": "bytes", "default": "\u00ff\u0000"},
                    {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 2}, "default": "ab"},
                    {"name": "ratio", "type": "double", "default": "NaN"},
                    {"name": "point", "type": {"type": "record", "name": "P", "fields": [
                        {"name": "x", "type": "int"}, {"name": "y", "type": "int", "default": 0}]}, "default": {"x": 1}},
                    {"name": "names", "type": {"type": "array", "items": "string"}, "default": ["a"]},
                    {"name": "counts", "type": {"type": "map", "values": "long"}, "default": {"a": 1}},
                    {"name": "either", "type": ["string", "null"], "default": None},
                ],
            },
        ],
    )
    def test_valid_schemas_pass_and_fastavro_agrees(self, schema: Any) -> None:
        import fastavro

        validate_schema(schema)
        fastavro.parse_schema(schema)  # the second implementation takes them too

    @pytest.mark.parametrize(
        ("schema", "why"),
        [
            ({"type": "enum", "name": "E", "symbols": []}, "at least one symbol"),
            ({"type": "enum", "name": "E"}, "at least one symbol"),
            ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "unique"),
            ({"type": "enum", "name": "E", "symbols": ["1A"]}, "not a valid Avro name"),
            ({"type": "enum", "name": "E", "symbols": ["A"], "default": "B"}, "not one of its symbols"),
            (["null", "null"], "there twice"),
            (["long", {"type": "long", "logicalType": "timestamp-millis"}], "there twice"),
            ([{"type": "array", "items": "long"}, {"type": "array", "items": "string"}], "there twice"),
            ([], "at least one branch"),
            (["null", ["long"]], "may not hold a union"),
            ({"type": "fixed", "name": "F", "size": -1}, "size"),
            ({"type": "fixed", "name": "F", "size": 0}, "size"),
            ({"type": "fixed", "name": "F", "size": 10**12}, "size"),
            ({"type": "fixed", "name": "F", "size": (1 << 20) + 1}, "size"),
            ({"type": "fixed", "name": "F", "size": 1.5}, "size"),
            ({"type": "fixed", "name": "F", "size": True}, "size"),
            ({"type": "record", "name": "R"}, "'fields' list"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}, {"name": "a", "type": "int"}]}, "twice"),
            ({"type": "record", "name": "R", "fields": [{"name": "a-b", "type": "long"}]}, "not a valid Avro name"),
            ({"type": "record", "name": "R", "fields": [{"type": "long"}]}, "needs a name"),
            ({"type": "record", "name": "R", "fields": [{"name": "a"}]}, "needs a type"),
            ({"type": "record", "name": "my-record", "fields": []}, "not a valid Avro name"),
            ({"type": "record", "name": "R", "namespace": "a..b", "fields": []}, "namespace"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]}, "unknown type"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "record", "name": "R", "fields": []}}]},
             "defined twice"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": 2**31}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long", "default": "1"}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "default": None}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": ["null", "long"], "default": "x"}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "bytes", "default": "\u0100"}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": "int"},
                                                         "default": [1, "2"]}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "record", "name": "S", "fields": [
                {"name": "x", "type": "int"}]}, "default": {}}]}, "lacks field 'x'"),
            ({"type": "array"}, "needs 'items'"),
            ({"type": "map"}, "needs 'values'"),
            ({"type": "long", "extra": 10**30}, "64 bits"),
            (5, "not a type"),
            ("NoSuchType", "unknown type"),
            ('{"type": "record"', "not valid JSON"),
        ],
    )
    def test_invalid_schemas_are_refused_with_the_reason(self, schema: Any, why: str) -> None:
        with pytest.raises(SchemaError, match=re.escape(why)):
            validate_schema(schema)

    def test_deep_nesting_is_refused_not_recursed_into(self) -> None:
        schema: Any = "long"
        for _ in range(MAX_SCHEMA_DEPTH + 5):
            schema = {"type": "array", "items": schema}
        with pytest.raises(SchemaError, match="deeper than"):
            validate_schema(schema)
        schema = "long"
        for _ in range(10_000):
            schema = {"type": "array", "items": schema}
        with pytest.raises(SchemaError):
            validate_schema(schema)

    @pytest.mark.parametrize(
        "schema",
        [
            "long", "int", "string", "bytes", "boolean",
            {"type": "enum", "name": "E", "symbols": ["A"]},
            {"type": "fixed", "name": "F", "size": 4},
            {"type": "array", "items": "long"},
            {"type": "record", "name": "K", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]},
        ],
    )
    def test_key_schemas_with_one_binary_form_are_taken(self, schema: Any) -> None:
        validate_schema(schema, kind="key")

    @pytest.mark.parametrize(
        ("schema", "kind"),
        [
            ({"type": "map", "values": "long"}, "map"),
            (["null", "long"], "union"),
            (["long"], "union"),
            ("float", "float"),
            ("double", "double"),
            ("null", "null"),
            ({"type": "double"}, "double"),
            ({"type": "record", "name": "K", "fields": [{"name": "a", "type": ["null", "string"]}]}, "union"),
            ({"type": "record", "name": "K", "fields": [{"name": "a", "type": {"type": "array", "items": "float"}}]}, "float"),
            ({"type": "record", "name": "K", "fields": [
                {"name": "a", "type": {"type": "record", "name": "In", "fields": [{"name": "m", "type": {"type": "map", "values": "int"}}]}},
            ]}, "map"),
            ({"type": "record", "name": "K", "fields": [
                {"name": "a", "type": {"type": "record", "name": "In", "fields": [{"name": "x", "type": "null"}]}},
                {"name": "b", "type": "In"},
            ]}, "null"),
        ],
    )
    def test_key_schemas_without_one_binary_form_are_refused(self, schema: Any, kind: str) -> None:
        with pytest.raises(SchemaError, match=f"{kind} is not allowed in a key"):
            validate_schema(schema, kind="key")
        validate_schema(schema)  # fine as a value schema


class TestKeyLimits:
    def test_keys_up_to_lmdbs_limit_encode_and_longer_ones_are_refused(self) -> None:
        import io

        import fastavro

        def fastavro_size(datum: Any, schema: Any) -> int:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), datum)
            return len(buf.getvalue())

        codec = AvroCodec("string", kind="key")
        assert fastavro_size("k" * 509, "string") == MAX_KEY_BYTES == 511
        assert len(codec.encode("k" * 509)) == 511
        with pytest.raises(InvalidKeyError, match="512 bytes serialized; keys may be at most 511"):
            codec.encode("k" * 510)
        record = {"type": "record", "name": "K", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}
        big = {"a": 1, "b": "x" * 600}
        with pytest.raises(InvalidKeyError, match=f"{fastavro_size(big, record)} bytes serialized"):
            AvroCodec(record, kind="key").encode(big)
        assert len(AvroCodec("string").encode("v" * 10_000)) > 10_000  # values have no such limit

    @pytest.mark.parametrize("text", ["+1", " 1 ", "1 ", "\u0661", "1_0", "\uff11", "1.0", "0x1", "", "-", "1\n", "--1"])
    def test_integer_keys_are_ascii_digits_only(self, text: str) -> None:
        with pytest.raises(InvalidKeyError):
            key_from_text(AvroCodec("long", kind="key"), text)
        with pytest.raises(ValueError):
            parse_integer(text)

    def test_integer_keys_within_their_range(self) -> None:
        assert key_from_text(AvroCodec("long", kind="key"), "-42") == -42
        assert key_from_text(AvroCodec("long", kind="key"), str(-(2**63))) == -(2**63)
        assert key_from_text(AvroCodec("int", kind="key"), str(2**31 - 1)) == 2**31 - 1
        for codec, text in ((AvroCodec("int", kind="key"), str(2**31)), (AvroCodec("long", kind="key"), str(2**63))):
            with pytest.raises(InvalidKeyError):
                key_from_text(codec, text)
        with pytest.raises(InvalidKeyError):
            key_from_text(AvroCodec("long", kind="key"), "9" * 5000)  # no int() of thousands of digits

    def test_double_text(self) -> None:
        assert parse_double("1.5e3") == 1500.0 and parse_double("-0.25") == -0.25 and parse_double("Infinity") == float("inf")
        for bad in ("+1", " 1", "1_0", "\u0661", "\uff11", "1e", "e3", "0x1p3", "1" * 500):
            with pytest.raises(ValueError):
                parse_double(bad)


class TestHostileNesting:
    """fastavro's C code recurses on the C stack: a deep datum of a recursive schema would
    crash the process (a segfault) instead of failing. The codec refuses it first."""

    LIST: ClassVar[dict[str, Any]] = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
    }

    def test_deep_bytes_do_not_crash_the_reader(self) -> None:
        codec = AvroCodec(self.LIST)
        # Each level is one union index byte (2 = branch 1, zig-zag); 200,000 levels, then null.
        hostile = b"\x02" * 200_000 + b"\x00"
        with pytest.raises(InvalidValueError, match="nests too deeply"):
            codec.decode(hostile)
        assert codec.decode(b"\x02\x02\x00") == {"next": {"next": {"next": None}}}

    def test_deep_datums_are_refused_before_encoding(self) -> None:
        codec = AvroCodec(self.LIST)
        datum: dict[str, Any] = {"next": None}
        for _ in range(100_000):
            datum = {"next": datum}
        with pytest.raises(InvalidValueError, match="nests deeper than 64"):
            codec.encode(datum)
        shallow: dict[str, Any] = {"next": None}
        for _ in range(10):
            shallow = {"next": shallow}
        assert codec.decode(codec.encode(shallow)) == shallow

    def test_trailing_bytes_are_refused(self) -> None:
        with pytest.raises(InvalidValueError, match="left over"):
            AvroCodec(self.LIST).decode(b"\x00\x00")

    def test_deep_mismatch_of_a_plain_schema_is_an_invalid_value(self) -> None:
        """A list nested a thousand levels deep where the schema has strings (as JSON
        parsers allow, e.g. a write's body) does not fit; fastavro's message about it
        would recurse through repr() and raise RecursionError instead."""
        codec = AvroCodec(RECORD)
        deep: list[Any] = []
        for _ in range(1_000):
            deep = [deep]
        with pytest.raises(InvalidValueError, match="nests too deeply"):
            codec.encode({"a": 1, "c": deep})
        with pytest.raises(InvalidValueError, match="nests too deeply"):
            AvroCodec({"type": "array", "items": "string"}).encode([deep])
        assert codec.problem({"a": 1, "c": [[1.0]]}) is not None  # shallow: the usual message
        assert codec.decode(codec.encode({"a": 1, "c": [1.0]})) == {"a": 1, "b": None, "c": [1.0]}
