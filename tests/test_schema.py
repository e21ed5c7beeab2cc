"""Avro codec, key parsing from paths and the shared partitioner."""

from __future__ import annotations

import mmh3
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
        with pytest.raises(InvalidValueError, match="V.a"):
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
    def test_contract_formula(self) -> None:
        key = AvroCodec("long").encode(12345)
        assert partition_for(key, 7) == mmh3.hash(key, signed=False) % 7

    def test_spreads_keys(self) -> None:
        codec = AvroCodec("long")
        seen = {partition_for(codec.encode(i), 4) for i in range(100)}
        assert seen == {0, 1, 2, 3}
