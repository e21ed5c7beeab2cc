"""Avro codec, key parsing from paths and the shared partitioner."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from venice.errors import InvalidKeyError, InvalidValueError, SchemaError
from venice.partitioner import partition_for
from venice.schema import AvroCodec, key_from_text, parse_schema

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
