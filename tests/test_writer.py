"""StoreWriter: nearline writes encoded per the real-time topic contract, checked before sending.

Expected bytes come from fastavro and partitions from mmh3 directly (the contract's
formula), not from the code under test."""

from __future__ import annotations

import base64
import io
from typing import Any

import fastavro
import mmh3
import pytest

from tests.router.fakes import store_description
from venice.errors import (
    InternalError,
    InvalidKeyError,
    InvalidValueError,
    NotHybridError,
    SchemaError,
    UnknownSchemaError,
    WriteComputeDisabledError,
)
from venice.writer import StoreWriter

PROFILE_V1: dict[str, Any] = {
    "type": "record",
    "name": "Profile",
    "namespace": "com.acme",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "visits", "type": "long", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "photo", "type": ["null", "bytes"], "default": None},
        {"name": "address", "type": ["null", {"type": "record", "name": "Address", "fields": [
            {"name": "city", "type": "string"}, {"name": "zip", "type": "bytes"}]}], "default": None},
    ],
}  # fmt: skip
PROFILE_V2: dict[str, Any] = {**PROFILE_V1, "fields": [*PROFILE_V1["fields"], {"name": "score", "type": "double", "default": 0.0}]}
TREE: dict[str, Any] = {
    "type": "record",
    "name": "Tree",
    "fields": [{"name": "label", "type": "string"}, {"name": "children", "type": {"type": "array", "items": "Tree"}}],
}


def avro(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


def unavro(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def writer(**options: Any) -> StoreWriter:
    schemas = options.pop("schemas", {1: PROFILE_V1, 2: PROFILE_V2})
    return StoreWriter("profiles", store_description("profiles", options.pop("key", "string"), schemas, 8, **options))


class TestPut:
    def test_record_follows_the_wire_contract(self) -> None:
        value = {"name": "Ann", "visits": 3, "tags": ["a"], "photo": b"\x00\xff", "address": None, "score": 1.5}
        record = writer().put("ann", value)
        key = avro("string", "ann")
        assert record.topic == "profiles_rt"
        assert record.key == key
        assert record.partition == mmh3.hash(key, signed=False) % 8
        assert record.headers == (("schema-id", b"2"),)  # the newest schema by default
        assert unavro(PROFILE_V2, record.value or b"") == value

    def test_an_older_schema_on_request(self) -> None:
        value = {"name": "Bo", "visits": 1, "tags": [], "photo": None, "address": {"city": "Oslo", "zip": b"01"}}
        record = writer().put("bo", value, schema_id=1)
        assert record.headers == (("schema-id", b"1"),)
        assert record.value == avro(PROFILE_V1, value)

    def test_long_keys_and_primitive_values(self) -> None:
        w = StoreWriter("counts", store_description("counts", "long", {1: "long"}, 5))
        record = w.put(-(2**63), 2**62)
        assert record.key == avro("long", -(2**63))
        assert record.partition == mmh3.hash(record.key, signed=False) % 5
        assert record.value == avro("long", 2**62)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({"name": 7}, "name"),
            ({"name": "x", "visits": "many"}, "visits"),
            ({"name": "x", "tags": "not a list"}, "tags"),
            ({"name": "x", "unknown": 1}, "unknown"),
            ({"name": "x", "address": {"city": "Oslo", "zip": b"1", "planet": "Mars"}}, "address.planet"),
            ("just text", "Profile"),
            (None, "Profile"),
        ],
    )
    def test_values_that_do_not_fit_are_refused(self, value: Any, expected: str) -> None:
        with pytest.raises(InvalidValueError, match=expected.split(".")[-1]):
            writer().put("k", value)

    def test_value_over_the_store_limit(self) -> None:
        w = writer(max_value_bytes=100)
        # 2 bytes of length + the name + 12 bytes of defaults (visits, tags, photo, address, score)
        assert len(w.put("k", {"name": "x" * 86}).value or b"") == 100  # exactly the limit: fits
        with pytest.raises(InvalidValueError, match=r"is 101 bytes serialized.*at most 100 bytes"):
            w.put("k", {"name": "x" * 87})

    def test_keys_checked(self) -> None:
        w = writer()
        with pytest.raises(InvalidKeyError):
            w.put(12, {"name": "x"})
        with pytest.raises(InvalidKeyError, match="511 bytes"):
            w.put("k" * 600, {"name": "x"})

    def test_unknown_schema_id_is_for_the_caller_to_refresh(self) -> None:
        with pytest.raises(UnknownSchemaError, match=r"no value schema 3 \(registered: 1, 2\)") as caught:
            writer().put("k", {"name": "x"}, schema_id=3)
        assert caught.value.retriable and caught.value.refresh_routing

    def test_recursive_values_nest_at_most_64_deep(self) -> None:
        w = StoreWriter("trees", store_description("trees", "string", {1: TREE}, 2))
        shallow: dict[str, Any] = {"label": "leaf", "children": []}
        for _ in range(20):
            shallow = {"label": "n", "children": [shallow]}
        assert unavro(TREE, w.put("t", shallow).value or b"") == shallow
        deep: dict[str, Any] = {"label": "leaf", "children": []}
        for _ in range(5000):  # fastavro's C code would crash the process on this
            deep = {"label": "n", "children": [deep]}
        with pytest.raises(InvalidValueError, match="deeper than 64"):
            w.put("t", deep)


class TestDeleteAndUpdate:
    def test_delete_is_a_null_value_without_headers(self) -> None:
        record = writer().delete("gone")
        assert record.value is None and record.headers == ()
        assert record.key == avro("string", "gone")
        assert record.partition == mmh3.hash(record.key, signed=False) % 8

    def test_update_is_avro_of_the_derived_update_schema(self) -> None:
        w = writer(write_compute=True)
        record = w.update("ann", {"increment": {"visits": 2}, "add_to_list": {"tags": ["x"]}})
        assert record.headers == (("schema-id", b"2"), ("venice-op", b"update"))
        # Decoded independently with fastavro against the update schema the controller publishes.
        from venice.writecompute import update_schema

        decoded = unavro(update_schema(PROFILE_V2), record.value or b"")
        assert decoded == {
            "name": {},
            "visits": {"by": 2},
            "tags": {"add": ["x"], "remove": []},
            "photo": {},
            "address": {},
            "score": {},
        }

    def test_update_needs_write_compute(self) -> None:
        with pytest.raises(WriteComputeDisabledError, match="--write-compute"):
            writer().update("ann", {"increment": {"visits": 1}})

    @pytest.mark.parametrize(
        "ops",
        [
            {"increment": {"name": 1}},
            {"set": {"nope": 1}},
            {"frobnicate": {"visits": 1}},
            {"increment": {"visits": 2**63}},
            {"set": {"visits": 1}, "increment": {"visits": 1}},
            [],
            "increment",
            {},
        ],
    )
    def test_malformed_ops_are_refused(self, ops: Any) -> None:
        with pytest.raises(InvalidValueError):
            writer(write_compute=True).update("ann", ops)


class TestHybrid:
    def test_batch_only_store(self) -> None:
        with pytest.raises(NotHybridError, match="batch-only") as caught:
            writer(hybrid=False).check_hybrid()
        assert caught.value.http_status == 409 and caught.value.code == "NOT_HYBRID"

    def test_unusable_descriptions(self) -> None:
        with pytest.raises(InternalError):
            StoreWriter("x", {"partitions": 2})
        with pytest.raises(InternalError):
            StoreWriter("x", {"partitions": 2, "key_schema": "long", "value_schemas": {}})
        with pytest.raises(SchemaError):  # a schema fastavro refuses: the description is broken, say why
            StoreWriter("x", {"partitions": 2, "key_schema": "long", "value_schemas": {"1": {"type": "nope"}}}).put(1, 1)


class TestJson:
    def test_bytes_are_base64_as_reads_return_them(self) -> None:
        w = writer()
        raw = {"name": "Ann", "photo": base64.b64encode(b"\x00\x01\xfe").decode(),
               "address": {"city": "Oslo", "zip": base64.b64encode(b"0150").decode()}}  # fmt: skip
        datum = w.value_from_json(raw)
        assert datum["photo"] == b"\x00\x01\xfe" and datum["address"]["zip"] == b"0150"
        value = unavro(PROFILE_V2, w.put("ann", datum).value or b"")
        assert value["photo"] == b"\x00\x01\xfe"

    def test_bad_base64_names_the_field(self) -> None:
        with pytest.raises(InvalidValueError, match=r"value\.photo.*not base64"):
            writer().value_from_json({"name": "x", "photo": "!!!"})

    def test_strings_stay_strings(self) -> None:
        w = StoreWriter("s", store_description("s", "string", {1: ["null", "string", "bytes"]}, 1))
        assert w.value_from_json("aGk=") == "aGk="  # the string branch comes first

    def test_ops_with_bytes(self) -> None:
        w = writer(write_compute=True)
        ops = w.ops_from_json({"set": {"photo": base64.b64encode(b"\x01").decode()}})
        assert ops == {"set": {"photo": b"\x01"}}
        record = w.update("k", ops)
        from venice.writecompute import update_schema

        assert unavro(update_schema(PROFILE_V2), record.value or b"")["photo"] == b"\x01"

    def test_keys_of_bytes_schemas_are_utf8_in_json(self) -> None:
        w = StoreWriter("b", store_description("b", "bytes", {1: "string"}, 4))
        assert w.key_from_json("é") == "é".encode()
        assert w.key_from_text("é") == "é".encode()

    def test_strict_text_keys(self) -> None:
        w = StoreWriter("c", store_description("c", "long", {1: "string"}, 4))
        assert w.key_from_text("-12") == -12
        for text in ("+1", " 1", "1_0", "١", "1.0"):
            with pytest.raises(InvalidKeyError):
                w.key_from_text(text)
