"""Property tests (Hypothesis) of every codec that takes bytes or text from outside: Avro
keys and values (checked against fastavro, an independent implementation), keys written
in URL paths, the storage servers' batch and change-log frames, values at rest, and the
JSON payloads the parts exchange. Round trips hold; bad input is our error, never a crash
or a hang.

Examples are derandomized and counted (a fixed budget, the same in CI every time)."""

from __future__ import annotations

import base64
import io
import math
import re
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from venice.errors import InvalidKeyError, RequestError, SchemaError, VeniceError
from venice.ingestion.records import decode_stored, encode_stored
from venice.protocol import (
    MISSING_SCHEMA_ID,
    ChangeEntry,
    ChangeLogPage,
    Heartbeat,
    RoutingTable,
    decode_batch_request,
    decode_batch_response,
    decode_changes_response,
    decode_key_segment,
    encode_batch_request,
    encode_batch_response,
    encode_changes_response,
    encode_key_segment,
)
from venice.schema import AvroCodec, key_from_text, validate_schema

BUDGET = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""A fixed number of examples per property, the same ones on every run; no time limits."""

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1)
DOUBLES = st.floats(allow_nan=False)
TEXT = st.text(max_size=40)
BLOBS = st.binary(max_size=40)

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Member",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "visits", "type": "int"},
        {"name": "score", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "name", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "active", "type": "boolean"},
        {"name": "country", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "long"}},
        {"name": "weights", "type": {"type": "map", "values": "double"}},
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["FREE", "PRO"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "home", "type": {"type": "record", "name": "Home", "fields": [{"name": "city", "type": "string"}]}},
    ],
}
FLOATS32 = st.floats(width=32, allow_nan=False)
MEMBERS = st.fixed_dictionaries(
    {
        "id": LONGS,
        "visits": INTS,
        "score": DOUBLES,
        "ratio": FLOATS32,
        "name": TEXT,
        "blob": BLOBS,
        "active": st.booleans(),
        "country": st.none() | TEXT,
        "tags": st.lists(LONGS, max_size=5),
        "weights": st.dictionaries(TEXT, DOUBLES, max_size=4),
        "tier": st.sampled_from(["FREE", "PRO"]),
        "digest": st.binary(min_size=4, max_size=4),
        "home": st.fixed_dictionaries({"city": TEXT}),
    }
)
RECORD_KEY = {"type": "record", "name": "K", "fields": [{"name": "region", "type": "string"}, {"name": "id", "type": "long"}]}
KEY_CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    ("long", LONGS),
    ("int", INTS),
    ("string", st.text(max_size=60)),
    ("bytes", BLOBS),
    ("boolean", st.booleans()),
    (RECORD_KEY, st.fixed_dictionaries({"region": TEXT, "id": LONGS})),
]


def _fastavro_bytes(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def _fastavro_datum(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


class TestValues:
    codec = AvroCodec(VALUE_SCHEMA)

    @BUDGET
    @given(MEMBERS)
    def test_round_trip_agrees_with_fastavro(self, member: dict[str, Any]) -> None:
        data = self.codec.encode(member)
        assert data == _fastavro_bytes(VALUE_SCHEMA, member)
        assert self.codec.decode(data) == _fastavro_datum(VALUE_SCHEMA, data)
        decoded = self.codec.decode(data)
        assert decoded["id"] == member["id"] and decoded["name"] == member["name"] and decoded["blob"] == member["blob"]
        assert decoded["score"] == member["score"] or (math.isinf(member["score"]) and decoded["score"] == member["score"])

    @BUDGET
    @given(st.binary(max_size=200))
    def test_random_bytes_decode_or_raise_our_error(self, data: bytes) -> None:
        try:
            self.codec.decode(data)
        except VeniceError:
            pass

    @BUDGET
    @given(MEMBERS, st.binary(min_size=1, max_size=8))
    def test_trailing_bytes_are_refused(self, member: dict[str, Any], extra: bytes) -> None:
        with pytest.raises(VeniceError):
            self.codec.decode(self.codec.encode(member) + extra)

    @BUDGET
    @given(MEMBERS, st.data())
    def test_truncated_values_are_refused(self, member: dict[str, Any], data: st.DataObject) -> None:
        whole = self.codec.encode(member)
        cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
        with pytest.raises(VeniceError):
            self.codec.decode(whole[:cut])

    def test_a_huge_count_of_weightless_items_cannot_be_declared(self) -> None:
        # Ten bytes claiming 2^50 nulls would keep a decoder busy for ever: such schemas are refused.
        for schema in (
            {"type": "array", "items": "null"},
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "E", "fields": []}}}]},
        ):
            with pytest.raises(SchemaError, match="zero bytes"):
                validate_schema(schema)
        validate_schema({"type": "array", "items": ["null", "long"]})  # a union index is a byte: fine


@pytest.mark.parametrize(("schema", "values"), KEY_CASES, ids=["long", "int", "string", "bytes", "boolean", "record"])
class TestKeys:
    @BUDGET
    @given(data=st.data())
    def test_round_trip_agrees_with_fastavro(self, schema: Any, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
        codec = AvroCodec(schema, kind="key")
        key = data.draw(values)
        encoded = codec.encode(key)
        assert encoded == _fastavro_bytes(schema, key)
        assert codec.decode(encoded) == key

    @BUDGET
    @given(data=st.data())
    def test_keys_written_in_urls_parse_back(self, schema: Any, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
        codec = AvroCodec(schema, kind="key")
        key = data.draw(values)
        if schema == "bytes":
            text = key.decode("latin-1")
            assert key_from_text(codec, text) == text.encode()
            return
        text = {bool: lambda k: "true" if k else "false", int: str, str: lambda k: k}.get(type(key), lambda k: orjson.dumps(k).decode())(key)
        assert key_from_text(codec, text) == key

    @BUDGET
    @given(data=st.data())
    def test_any_text_is_a_key_or_invalid_key(self, schema: Any, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
        codec = AvroCodec(schema, kind="key")
        text = data.draw(st.text(max_size=80) | st.sampled_from(["", "-", "1e3", "+1", " 1", "１", "nan", "{}", '{"region": 1}', "9" * 30]))
        try:
            codec.encode(key_from_text(codec, text))
        except InvalidKeyError:
            pass

    @BUDGET
    @given(data=st.data())
    def test_random_bytes_decode_or_raise_our_error(self, schema: Any, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
        codec = AvroCodec(schema, kind="key")
        try:
            codec.decode(data.draw(st.binary(max_size=64)))
        except VeniceError:
            pass


class TestFrames:
    @BUDGET
    @given(st.binary(max_size=300))
    def test_key_segments_round_trip_as_unpadded_base64url(self, key: bytes) -> None:
        segment = encode_key_segment(key)
        assert "=" not in segment and "/" not in segment and "+" not in segment
        assert base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)) == key
        assert decode_key_segment(segment) == key

    def test_key_segment_known_answers(self) -> None:
        assert encode_key_segment(b"\xfb\xff") == "-_8"
        assert decode_key_segment("-_8") == b"\xfb\xff"
        assert decode_key_segment("-_8=") == b"\xfb\xff"  # padding is optional

    @pytest.mark.parametrize("segment", ["!!!", "!!!!", "a!b", "aGk.", "+/8", "aGk\n", "a GVsbG8"])
    def test_bytes_outside_base64url_are_a_request_error(self, segment: str) -> None:
        # The standard library's decoder skips them: "!!!" was the empty key, "+/8" read as "-_8".
        with pytest.raises(RequestError, match="not base64url"):
            decode_key_segment(segment)

    @BUDGET
    @given(st.text(max_size=60) | st.binary(max_size=60))
    def test_any_segment_is_bytes_or_a_request_error(self, segment: str | bytes) -> None:
        try:
            decode_key_segment(segment)
        except RequestError:
            return
        text = segment if isinstance(segment, str) else segment.decode("latin-1")
        assert re.fullmatch(r"[A-Za-z0-9_-]*=*", text), segment  # only base64url decodes

    @BUDGET
    @given(st.lists(st.tuples(st.integers(0, 1023), st.binary(max_size=50)), max_size=20))
    def test_batch_requests_round_trip(self, items: list[tuple[int, bytes]]) -> None:
        assert decode_batch_request(encode_batch_request(items)) == items

    @BUDGET
    @given(st.binary(max_size=200))
    def test_random_batch_requests_are_frames_or_a_request_error(self, body: bytes) -> None:
        try:
            items = decode_batch_request(body)
        except RequestError:
            return
        assert encode_batch_request(items) == body

    @BUDGET
    @given(st.lists(st.none() | st.tuples(st.integers(1, 2**31 - 1).filter(lambda i: i != MISSING_SCHEMA_ID), st.binary(max_size=50)), max_size=20))
    def test_batch_answers_round_trip(self, hits: list[tuple[int, bytes] | None]) -> None:
        assert decode_batch_response(encode_batch_response(hits), len(hits)) == hits

    @BUDGET
    @given(st.binary(max_size=200), st.integers(0, 20))
    def test_random_batch_answers_are_hits_or_our_error(self, body: bytes, count: int) -> None:
        try:
            assert len(decode_batch_response(body, count)) == count
        except VeniceError as exc:
            assert exc.retriable  # a broken replica: read the keys elsewhere

    @BUDGET
    @given(
        st.booleans(), st.booleans(), st.none() | st.integers(0, 2**62), st.none() | st.integers(0, 2**62),
        st.lists(st.builds(ChangeEntry, st.integers(0, 2**62), BLOBS, st.integers(-1, 2**31 - 1), BLOBS), max_size=10),
    )
    def test_change_log_pages_round_trip(self, consuming: bool, hybrid: bool, nxt: int | None, start: int | None, entries: list[ChangeEntry]) -> None:
        page = ChangeLogPage(consuming=consuming, hybrid=hybrid, next=nxt, start=start, entries=tuple(entries))
        assert decode_changes_response(encode_changes_response(page)) == page

    @BUDGET
    @given(st.binary(max_size=300))
    def test_random_change_log_pages_are_pages_or_our_error(self, body: bytes) -> None:
        try:
            decode_changes_response(body)
        except VeniceError:
            pass

    @BUDGET
    @given(st.integers(0, 2**31 - 1), st.binary(max_size=100))
    def test_values_at_rest_round_trip(self, schema_id: int, value: bytes) -> None:
        assert decode_stored(encode_stored(schema_id, value)) == (schema_id, value)

    @BUDGET
    @given(st.binary(max_size=3))
    def test_stored_bytes_shorter_than_a_schema_id_are_our_error(self, raw: bytes) -> None:
        with pytest.raises(VeniceError):
            decode_stored(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
HEARTBEATISH = st.fixed_dictionaries(
    {},
    optional={
        "url": st.sampled_from(["http://127.0.0.1:7001", "https://h:1", "ftp://x", "http://a/b", ""]) | JSON,
        "replicas": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "store": TEXT | JSON, "version": st.integers(-5, 2**63) | JSON, "partition": st.integers(-2, 2000) | JSON,
                    "status": st.sampled_from(["STARTED", "READY", "ERROR", "BOGUS"]) | JSON,
                    "offset": st.integers(-1, 2**63) | JSON, "records": st.integers(-1, 2**63) | JSON,
                },
            ),
            max_size=3,
        ) | JSON,
        "draining": st.booleans() | JSON,
    },
)


class TestPayloads:
    @BUDGET
    @given(JSON | HEARTBEATISH)
    def test_heartbeats_are_typed_or_a_request_error(self, payload: Any) -> None:
        try:
            beat = Heartbeat.from_json(payload)
        except RequestError:
            return
        assert Heartbeat.from_json(beat.to_json()) == beat

    @BUDGET
    @given(JSON | st.fixed_dictionaries({"generation": st.integers(-1, 2**64) | JSON, "stores": st.dictionaries(TEXT, JSON, max_size=3) | JSON}))
    def test_routing_tables_are_typed_or_a_request_error(self, payload: Any) -> None:
        try:
            table = RoutingTable.from_json(payload)
        except RequestError:
            return
        assert RoutingTable.from_json(table.to_json()) == table
