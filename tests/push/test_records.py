"""Input record -> (key, value): field selection, CSV coercion, validation, duplicate keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from venice.errors import InvalidInputError
from venice.push.formats import open_records
from venice.push.records import DuplicateTracker, RecordConverter, is_missing, parse_bool, parse_double, parse_long
from venice.schema import AvroCodec

from .files import write_csv

VALUE = {
    "type": "record",
    "name": "V",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "age", "type": ["null", "int"], "default": None},
        {"name": "score", "type": "double"},
        {"name": "active", "type": "boolean", "default": True},
        {"name": "emb", "type": {"type": "array", "items": "double"}, "default": []},
    ],
}


def converter(key: Any = "long", value: Any = VALUE, **kwargs: Any) -> RecordConverter:
    kwargs.setdefault("file", "in.jsonl")
    return RecordConverter(AvroCodec(key, kind="key"), AvroCodec(value), **kwargs)


def reason(conv: RecordConverter, record: dict[str, Any], position: str = "line 7") -> str:
    with pytest.raises(InvalidInputError) as caught:
        conv.convert(position, record)
    message = caught.value.message
    prefix = f"{conv.file}: {position}: "
    assert message.startswith(prefix)
    return message[len(prefix):]


# -- field selection ----------------------------------------------------------------------


def test_key_from_key_field_and_value_from_the_rest() -> None:
    conv = converter(key_field="id")
    key, value = conv.convert("line 1", {"id": 7, "name": "ann", "age": 30, "score": 1, "active": False, "emb": [1, 2.5]})
    assert key == 7
    assert value == {"name": "ann", "age": 30, "score": 1, "active": False, "emb": [1, 2.5]}


def test_default_key_field_is_key() -> None:
    key, _ = converter().convert("line 1", {"key": 1, "name": "a", "score": 0.5})
    assert key == 1


def test_absent_fields_get_defaults_and_absent_nullable_gets_null() -> None:
    schema = {"type": "record", "name": "W", "fields": [{"name": "x", "type": ["null", "long"]}, {"name": "y", "type": "long", "default": 5}]}
    _, value = converter(value=schema).convert("line 1", {"key": 1})
    assert value == {"x": None, "y": 5}


def test_record_key_is_built_from_fields_of_those_names() -> None:
    key_schema = {"type": "record", "name": "K", "fields": [{"name": "org", "type": "string"}, {"name": "user", "type": "long"}]}
    conv = converter(key=key_schema, value={"type": "record", "name": "W", "fields": [{"name": "v", "type": "double"}]})
    assert conv.convert("line 1", {"org": "a", "user": 3, "v": 0.5}) == ({"org": "a", "user": 3}, {"v": 0.5})
    assert reason(conv, {"org": "a", "v": 0.5}) == "missing key field 'user'"


def test_primitive_value_schema_takes_the_value_field() -> None:
    conv = converter(key="string", value="double")
    assert conv.convert("line 1", {"key": "a", "value": 2.5}) == ("a", 2.5)
    assert reason(conv, {"key": "a"}) == "missing field 'value' required by the value schema"
    assert reason(conv, {"key": "a", "value": 1.0, "other": 1}) == "field(s) not in the value schema: other"


# -- rejected records ---------------------------------------------------------------------


def test_missing_key() -> None:
    conv = converter(key_field="id")
    assert reason(conv, {"name": "a", "score": 1.0}) == "missing key field 'id'"
    assert reason(conv, {"id": None, "name": "a", "score": 1.0}) == "missing key field 'id'"


def test_key_of_the_wrong_type() -> None:
    message = reason(converter(), {"key": "seven", "name": "a", "score": 1.0})
    assert message.startswith('key "seven" does not fit the key schema')


def test_value_that_does_not_fit_uses_the_codec_problem() -> None:
    message = reason(converter(), {"key": 1, "name": "a", "score": "high"})
    assert message.startswith("value does not fit the value schema")
    assert "high" in message and "(str)" in message and "double" in message


def test_missing_required_value_field() -> None:
    assert reason(converter(), {"key": 1, "score": 1.0}) == "missing field 'name' required by the value schema"


def test_extra_fields_are_refused_not_dropped() -> None:
    message = reason(converter(), {"key": 1, "name": "a", "score": 1.0, "zzz": 1, "nick": "x"})
    assert message == "field(s) not in the value schema: zzz, nick"


def test_extra_nested_fields_are_refused() -> None:
    schema = {
        "type": "record",
        "name": "W",
        "fields": [
            {"name": "addr", "type": {"type": "record", "name": "A", "fields": [{"name": "city", "type": "string"}]}},
            {"name": "more", "type": {"type": "array", "items": "A"}, "default": []},
        ],
    }
    conv = converter(value=schema)
    assert conv.convert("line 1", {"key": 1, "addr": {"city": "x"}, "more": [{"city": "y"}]})[1]["more"] == [{"city": "y"}]
    assert "field(s) zip of addr are not in the schema" in reason(conv, {"key": 1, "addr": {"city": "x", "zip": 1}})
    assert "field(s) zip of more[] are not in the schema" in reason(conv, {"key": 1, "addr": {"city": "x"}, "more": [{"city": "y", "zip": 2}]})


# -- CSV coercion ------------------------------------------------------------------------


def test_csv_cells_are_coerced_to_schema_types(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "W",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "i", "type": "int"},
            {"name": "d", "type": "double"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "s", "type": "string"},
            {"name": "opt", "type": ["null", "long"], "default": None},
            {"name": "os", "type": ["null", "string"], "default": None},
            {"name": "emb", "type": {"type": "array", "items": "double"}},
            {"name": "tags", "type": ["null", {"type": "array", "items": "string"}], "default": None},
        ],
    }
    path = write_csv(
        tmp_path / "in.csv",
        ["id", "n", "i", "d", "f", "b", "s", "opt", "os", "emb", "tags"],
        [
            ["10", "-5", "3", "1e3", "0.5", "TRUE", "NA", "7", "x", "[1.0, 2.5]", '["a"]'],
            ["11", "0", "4", "2", "-1", "false", "", "NA", "null", "[]", "NaN"],
        ],
    )
    conv = RecordConverter(AvroCodec("long", kind="key"), AvroCodec(schema), key_field="id", text_cells=True, file=path)
    with open_records(path) as source:
        got = [conv.convert(p, r) for p, r in source]
    assert got == [
        (10, {"n": -5, "i": 3, "d": 1000.0, "f": 0.5, "b": True, "s": "NA", "opt": 7, "os": "x", "emb": [1.0, 2.5], "tags": ["a"]}),
        (11, {"n": 0, "i": 4, "d": 2.0, "f": -1.0, "b": False, "s": "", "opt": None, "os": None, "emb": [], "tags": None}),
    ]


def test_csv_cells_that_do_not_parse(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "W", "fields": [{"name": "n", "type": "long"}, {"name": "b", "type": ["null", "boolean"]}]}
    conv = converter(value=schema, text_cells=True, file="in.csv")
    assert reason(conv, {"key": "1", "n": "1.5", "b": "true"}) == "field 'n': '1.5' is not a long"
    assert reason(conv, {"key": "1", "n": "", "b": "true"}) == "field 'n': is missing ('') but the schema does not allow null"
    assert reason(conv, {"key": "1", "n": "NA", "b": "true"}) == "field 'n': is missing ('NA') but the schema does not allow null"
    assert reason(conv, {"key": "1", "n": "1", "b": "maybe"}) == "field 'b': 'maybe' is not a boolean (true or false)"
    assert reason(conv, {"key": "x", "n": "1", "b": ""}) == "field 'key': 'x' is not a long"
    assert reason(conv, {"key": " ", "n": "1", "b": ""}) == "missing key field 'key'"


def test_csv_key_position_comes_from_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "k.csv", ["key", "value"], [["1", "a"], ["two", "b"]])
    conv = RecordConverter(AvroCodec("long", kind="key"), AvroCodec("string"), text_cells=True, file=path)
    with open_records(path) as source, pytest.raises(InvalidInputError) as caught:
        for position, record in source:
            conv.convert(position, record)
    assert caught.value.message == f"{path}: line 3: field 'key': 'two' is not a long"


def test_text_parsers() -> None:
    assert parse_long("42") == 42 and parse_long("-7") == -7 and parse_long(str(2**63 - 1)) == 2**63 - 1
    # One strict grammar (issue 8): ASCII digits and an optional '-', nothing around them.
    for bad in ("1.0", "1e3", "1_000", "", str(2**63), " 42 ", "+1", "\u0661", "\uff11", "1\n", "0x1f"):
        with pytest.raises(ValueError):
            parse_long(bad)
    assert parse_double("1e-3") == 0.001 and parse_double("7") == 7.0 and parse_double("-.5") == -0.5
    assert parse_double("NaN") != parse_double("NaN") and parse_double("-inf") == float("-inf")
    for bad in ("1_0", " 1.5", "+1", "\u0661.5", "\uff11", "1e", "."):
        with pytest.raises(ValueError):
            parse_double(bad)
    assert parse_bool("True") is True and parse_bool("0") is False
    assert all(is_missing(m) for m in ("", " ", "NA", "n/a", "null", "NULL", "None", "NaN", "nan"))
    assert not any(is_missing(v) for v in ("0", "x", "false", "-"))


# -- duplicate keys ----------------------------------------------------------------------


def test_duplicate_tracker_new_same_and_different() -> None:
    tracker = DuplicateTracker("in.jsonl")
    assert tracker.check(1, b"\x02", b"value-a", "line 2") is True
    assert tracker.check(2, b"\x04", b"value-a", "line 3") is True
    assert tracker.check(1, b"\x02", b"value-a", "line 9") is False  # identical repeat: skip
    assert tracker.duplicates == 1 and len(tracker) == 2
    with pytest.raises(InvalidInputError) as caught:
        tracker.check(1, b"\x02", b"value-b", "line 12")
    assert caught.value.message == "in.jsonl: line 12: key 1 appears twice with different values (first at line 2)"


def test_duplicate_tracker_batches() -> None:
    """check_batch: None for a batch of new keys (remembered), else 1 new / 0 identical
    repeat / -1 contradiction per record, repeats inside the batch included."""
    tracker = DuplicateTracker("in.jsonl")
    assert tracker.check_batch([b"a", b"b", b"c"], [b"1", b"2", b"3"], [1, 2, 3]) is None
    assert len(tracker) == 3 and tracker.duplicates == 0
    assert tracker.check_batch([b"d", b"b", b"e", b"e", b"c"], [b"4", b"2", b"5", b"5", b"x"], [4, 5, 6, 7, 8]) == [1, 0, 1, 0, -1]
    assert len(tracker) == 5 and tracker.duplicates == 2
    assert tracker.check_batch([b"f", b"f"], [b"6", b"7"], [9, 10]) == [1, -1]
    assert tracker.check_batch([], [], []) is None
    with pytest.raises(InvalidInputError) as caught:  # the first line of a key is kept, whichever way it came
        tracker.check("c", b"c", b"y", "line 11")
    assert caught.value.message == 'in.jsonl: line 11: key "c" appears twice with different values (first at line 3)'


def test_duplicate_tracker_shows_keys_as_json_and_record_positions() -> None:
    tracker = DuplicateTracker("in.avro")
    tracker.check({"org": "a", "user": 1}, b"k", b"v1", "record 40000")
    with pytest.raises(InvalidInputError, match=r'key \{"org":"a","user":1\} appears twice .* \(first at record 40000\)'):
        tracker.check({"org": "a", "user": 1}, b"k", b"v2", "record 50001")
