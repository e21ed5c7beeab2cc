"""Schema inference from whole input files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from venice.errors import InvalidInputError
from venice.push.formats import open_records
from venice.push.infer import avro_name, infer_schemas
from venice.push.records import RecordConverter
from venice.schema import AvroCodec

from .files import MEMBER_AVRO_SCHEMA, gzip_file, write_avro, write_csv, write_jsonl, write_parquet


def fields_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in schema["fields"]}


def assert_every_record_fits(path: Path, key_field: str, key_schema: Any, value_schema: Any) -> None:
    """The inferred schemas are only useful if the same file then pushes cleanly."""
    key_codec, value_codec = AvroCodec(key_schema, kind="key"), AvroCodec(value_schema)
    with open_records(path) as source:
        converter = RecordConverter(
            key_codec, value_codec, key_field=key_field, text_cells=source.fmt == "csv", file=path
        )
        for position, record in source:
            _key, value = converter.convert(position, record)
            assert value_codec.decode(value_codec.encode_unchecked(value)) is not None


def test_jsonl_types_nullability_and_field_order(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": 1, "name": "ann", "active": True, "score": 1, "emb": [1, 2], "tags": ["x"], "addr": {"city": "a", "zip": 1}},
            {"id": 2, "name": "bob", "active": False, "score": 2.5, "emb": [0.5], "tags": [], "addr": {"city": "b"}, "late": 3},
            {"id": 3, "name": None, "active": True, "score": 3, "emb": [], "tags": ["y"], "addr": {"city": "c", "zip": 2}},
        ],
    )
    key, value = infer_schemas(path, "id", store_name="members")
    assert key == "long"
    assert value["type"] == "record" and value["name"] == "members"
    assert [f["name"] for f in value["fields"]] == ["name", "active", "score", "emb", "tags", "addr", "late"]
    fields = fields_of(value)
    assert fields["name"] == ["null", "string"]
    assert fields["active"] == "boolean"
    assert fields["score"] == "double"  # ints mixed with floats
    assert fields["emb"] == {"type": "array", "items": "double"}  # a list of numbers, even all-int
    assert fields["tags"] == {"type": "array", "items": "string"}
    assert fields["addr"] == {
        "type": "record",
        "name": "members_addr",
        "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "long"], "default": None}],
    }
    assert fields["late"] == ["null", "long"]  # absent from most records
    nullable = {f["name"]: f.get("default", "absent") for f in value["fields"]}
    assert nullable["late"] is None and nullable["name"] is None and nullable["active"] == "absent"
    assert_every_record_fits(path, "id", key, value)


def test_only_null_field_becomes_nullable_string(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [{"key": "a", "x": None}, {"key": "b", "x": None}])
    key, value = infer_schemas(path, "key")
    assert key == "string"
    assert value["fields"] == [{"name": "x", "type": ["null", "string"], "default": None}]


def test_int_only_field_is_long(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "i.jsonl", [{"key": 1, "n": 1}, {"key": 2, "n": -(2**40)}])
    assert fields_of(infer_schemas(path, "key")[1]) == {"n": "long"}


def test_csv_column_typing(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        ["id", "age", "score", "flag", "emb", "name", "maybe", "nothing", "country"],
        [
            ["1", "30", "1", "true", "[1.0, 2.5]", "ann", "1.5", "", "NA"],
            ["2", "NA", "2.5", "False", "[]", "7", "null", "NaN", "us"],
            ["3", "41", "1e3", "TRUE", "[3, 4]", "cy", "", "n/a", "fr"],
        ],
    )
    key, value = infer_schemas(path, "id", store_name="m")
    assert key == "long"
    assert fields_of(value) == {
        "age": ["null", "long"],
        "score": "double",
        "flag": "boolean",
        "emb": {"type": "array", "items": "double"},
        "name": "string",
        "maybe": ["null", "double"],
        "nothing": ["null", "string"],
        "country": ["null", "string"],  # "NA" is a missing marker in a value column
    }
    assert_every_record_fits(path, "id", key, value)


def test_csv_key_column_is_taken_literally(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["code", "name"], [["NA", "Namibia"], ["FR", "France"]])
    key, value = infer_schemas(path, "code")
    assert key == "string"
    assert_every_record_fits(path, "code", key, value)


def test_csv_mixed_column_falls_back_to_string(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", ["id", "v", "a"], [["1", "1", "[1, 2]"], ["2", "x", '["a", 1]']])
    assert fields_of(infer_schemas(path, "id")[1]) == {"v": "string", "a": "string"}


def test_composite_key_becomes_a_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"org": "a", "user": 1, "v": 1.5}, {"org": "b", "user": 1, "v": 2.0}])
    key, value = infer_schemas(path, "org,user", store_name="pairs")
    assert key == {
        "type": "record",
        "name": "pairs_key",
        "fields": [{"name": "org", "type": "string"}, {"name": "user", "type": "long"}],
    }
    assert fields_of(value) == {"v": "double"}
    assert_every_record_fits(path, "", key, value)


def test_avro_and_parquet_inputs(tmp_path: Path, members: list[dict[str, Any]]) -> None:
    expected = {
        "name": "string",
        "score": "double",
        "emb": {"type": "array", "items": "double"},
        "tags": {"type": "array", "items": "string"},
    }
    for path in (write_avro(tmp_path / "m.avro", MEMBER_AVRO_SCHEMA, members), gzip_file(write_parquet(tmp_path / "m.parquet", members))):
        key, value = infer_schemas(path, "id", store_name="m")
        assert key == "long" and fields_of(value) == expected
        assert_every_record_fits(path, "id", key, value)


def test_parquet_null_cells_make_nullable_fields(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "n.parquet", [{"id": 1, "x": 1.5}, {"id": 2, "x": None}])
    assert fields_of(infer_schemas(path, "id")[1]) == {"x": ["null", "double"]}


def test_bundled_sample_infers_and_fits() -> None:
    sample = Path(__file__).resolve().parents[2] / "venice" / "data" / "member_features.jsonl.gz"
    key, value = infer_schemas(sample, "member_id", store_name="members")
    assert key == "long"
    assert fields_of(value)["last_active_days"] == ["null", "long"]
    assert fields_of(value)["embedding"] == {"type": "array", "items": "double"}


def test_store_name_is_made_a_valid_avro_name() -> None:
    assert avro_name("member-features.v2") == "member_features_v2"
    assert avro_name("2024") == "_2024"


# -- errors -----------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InvalidInputError, match="no records to infer schemas from"):
        infer_schemas(path, "id")


def test_key_field_absent(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "k.jsonl", [{"id": 1, "v": 1}, {"v": 2}])
    with pytest.raises(InvalidInputError) as caught:
        infer_schemas(path, "id")
    assert caught.value.message == f"{path}: line 2: key field 'id' is absent (fields: v)"


def test_key_field_null_or_empty(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "k.jsonl", [{"id": 1}, {"id": 2}, {"id": None}])
    with pytest.raises(InvalidInputError, match=r"line 3: key field 'id' is empty"):
        infer_schemas(path, "id")
    csv_path = write_csv(tmp_path / "k.csv", ["id", "v"], [["1", "a"], ["", "b"]])
    with pytest.raises(InvalidInputError, match=r"line 3: key field 'id' is empty"):
        infer_schemas(csv_path, "id")


def test_contradicting_types_name_both_positions(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 3, "v": "three"}])
    with pytest.raises(InvalidInputError) as caught:
        infer_schemas(path, "id")
    assert caught.value.message == (
        f"{path}: cannot infer a schema: field v has values of different types: long (line 1), string (line 3)"
    )


def test_contradicting_nested_types(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": 1, "a": {"b": True}}, {"id": 2, "a": {"b": "yes"}}])
    with pytest.raises(InvalidInputError, match=r"field a\.b has values of different types: boolean \(line 1\), string \(line 2\)"):
        infer_schemas(path, "id")


def test_invalid_field_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", ["id", "user name"], [["1", "a"]])
    with pytest.raises(InvalidInputError, match="'user name' is not a valid Avro field name"):
        infer_schemas(path, "id")
