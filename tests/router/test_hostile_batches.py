"""The router against batches built to hurt it: one big value asked for many times,
keys nested far deeper than any key schema (issue 8, items 11 and 12)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from router.main import RouterConfig, build_server
from tests.router.fakes import PAIR_SCHEMA, FakeController, FakeStorage, load, serve_in_thread, store_entry
from venice.routing import answer_size, gather_results

BIG = "v" * (1024 * 1024)
"""A 1 MiB string value (1 MiB + 4 bytes stored: Avro's length prefix)."""
CAP = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    servers = [FakeStorage(), FakeStorage()]
    controller = FakeController()
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(s)) for s in servers]
        load(servers, "blobs", 1, "string", "string", 2, {"big": BIG, "small": "s", "other": "o" * 100})
        controller.set_store("blobs", store_entry("string", {1: "string"}, 2, 1, {1: urls}))
        load(servers, "pairs", 1, PAIR_SCHEMA, "long", 2, [({"a": 1, "b": "x"}, 10)])
        controller.set_store("pairs", store_entry(PAIR_SCHEMA, {1: "long"}, 2, 1, {1: urls}))
        controller_url = stack.enter_context(serve_in_thread(controller))
        config = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5, max_answer_bytes=CAP)
        router_url = stack.enter_context(serve_in_thread(build_server(config)))
        yield stack.enter_context(httpx.Client(base_url=router_url, timeout=30))


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


class TestAnswerSize:
    def test_one_big_key_forty_times_is_413_answer_too_large(self, http: httpx.Client) -> None:
        response = http.post("/storage/blobs", json={"keys": ["big"] * 40})
        message = assert_error(response, 413, "ANSWER_TOO_LARGE")
        assert str(CAP) in message

    def test_duplicates_count_once_each_against_the_cap(self, http: httpx.Client) -> None:
        """3 x 1 MiB fit under 4 MiB; 4 x 1 MiB (+ Avro's length prefixes) do not."""
        ok = http.post("/storage/blobs", json={"keys": ["big", "small", "big", "missing", "big"]})
        assert ok.status_code == 200
        results = ok.json()["results"]
        assert [r.get("value") for r in results] == [BIG, "s", BIG, None, BIG]
        assert_error(http.post("/storage/blobs", json={"keys": ["big"] * 4}), 413, "ANSWER_TOO_LARGE")

    def test_missing_keys_cost_nothing(self, http: httpx.Client) -> None:
        response = http.post("/storage/blobs", json={"keys": ["missing"] * 10_000})
        assert response.status_code == 200
        assert not any(r["found"] for r in response.json()["results"])

    def test_a_single_read_of_a_value_over_the_cap_is_413(self) -> None:
        """Single reads share the cap: the replica's answer itself is over it."""
        servers = [FakeStorage()]
        controller = FakeController()
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(serve_in_thread(s)) for s in servers]
            load(servers, "blobs", 1, "string", "string", 1, {"big": BIG})
            controller.set_store("blobs", store_entry("string", {1: "string"}, 1, 1, {1: urls}))
            controller_url = stack.enter_context(serve_in_thread(controller))
            config = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5,
                                  max_answer_bytes=512 * 1024)
            router_url = stack.enter_context(serve_in_thread(build_server(config)))
            with httpx.Client(base_url=router_url, timeout=30) as client:
                assert_error(client.get("/storage/blobs/big"), 413, "ANSWER_TOO_LARGE")
                assert_error(client.post("/storage/blobs", json={"keys": ["big"]}), 413, "ANSWER_TOO_LARGE")


def nested_list(depth: int) -> bytes:
    """JSON text of a list nested ``depth`` deep (orjson will not write one past 255)."""
    return b"[" * depth + b"1" + b"]" * depth


def nested_record(depth: int) -> bytes:
    return b'{"a": ' * depth + b'{"a": 1, "b": "x"}' + b', "b": "x"}' * depth


class TestKeyDepth:
    @pytest.mark.parametrize("store", ["blobs", "pairs"])
    @pytest.mark.parametrize("key", [nested_list(1000), nested_record(1000), nested_list(40)], ids=["list1000", "record1000", "list40"])
    def test_a_batch_key_nested_too_deep_is_400(self, http: httpx.Client, store: str, key: bytes) -> None:
        valid = b'"small"' if store == "blobs" else b'{"a": 1, "b": "x"}'
        body = b'{"keys": [' + valid + b", " + key + b"]}"
        assert orjson.loads(body)  # valid JSON, within orjson's own nesting limit
        message = assert_error(http.post(f"/storage/{store}", content=body), 400, "INVALID_KEY")
        assert "nested" in message

    @pytest.mark.parametrize("key", [nested_list(1000), nested_record(1000)], ids=["list1000", "record1000"])
    def test_a_compute_key_nested_too_deep_is_400(self, http: httpx.Client, key: bytes) -> None:
        """Read compute takes its keys like a batch: the same bound, before any encoding."""
        body = b'{"keys": [{"a": 1, "b": "x"}, ' + key + b'], "project": ["a"]}'
        message = assert_error(http.post("/compute/pairs", content=body), 400, "INVALID_KEY")
        assert "nested" in message

    def test_a_url_key_nested_too_deep_is_400(self, http: httpx.Client) -> None:
        key = quote(nested_list(1000), safe="")  # ~6 KB: within the URL limit
        message = assert_error(http.get(f"/storage/pairs/{key}"), 400, "INVALID_KEY")
        assert "nested" in message

    def test_keys_of_ordinary_depth_still_work(self, http: httpx.Client) -> None:
        response = http.post("/storage/pairs", json={"keys": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]})
        assert [r["found"] for r in response.json()["results"]] == [True, False]
        assert http.get("/storage/pairs/" + quote('{"a": 1, "b": "x"}', safe="")).json() == 10


class TestGatherResults:
    """venice.routing.gather_results: the I/O-free step from replica hits to the answer list."""

    def test_each_distinct_value_is_decoded_once_and_shared_by_its_duplicates(self) -> None:
        decoded: list[tuple[int, bytes]] = []

        def decoder(schema_id: int) -> Any:
            def decode(data: bytes) -> Any:
                decoded.append((schema_id, data))
                return {"text": data.decode()}

            return decode

        keys = ["a", "b", "a", "zz", "a", "b"]
        encoded = [k.encode() for k in keys]
        hits = {b"a": (1, b"AAA"), b"b": (2, b"BB"), b"zz": None}
        results = gather_results(keys, encoded, hits, decoder)
        assert results == [
            {"key": "a", "found": True, "value": {"text": "AAA"}},
            {"key": "b", "found": True, "value": {"text": "BB"}},
            {"key": "a", "found": True, "value": {"text": "AAA"}},
            {"key": "zz", "found": False},
            {"key": "a", "found": True, "value": {"text": "AAA"}},
            {"key": "b", "found": True, "value": {"text": "BB"}},
        ]
        assert sorted(decoded) == [(1, b"AAA"), (2, b"BB")]
        assert results[0]["value"] is results[2]["value"] is results[4]["value"]

    def test_answer_size_counts_every_requested_key(self) -> None:
        hits = {b"a": (1, b"xxx"), b"b": None, b"c": (2, b"yyyyy")}
        assert answer_size([b"a", b"b", b"c"], hits) == 8
        assert answer_size([b"a", b"a", b"b", b"c", b"a"], hits) == 14
        assert answer_size([b"b", b"b"], {b"b": None}) == 0
