"""The real router app over real HTTP, in front of a fake controller and fake storage servers."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import fastavro
import httpx
import orjson
import pytest

from router.main import RouterConfig, build_app, build_server
from tests.router.fakes import (
    BIG_LONG_KEYS,
    TAG_RECORDS,
    FakeController,
    FakeStorage,
    SampleCluster,
    load,
    member,
    sample_cluster,
    serve_in_thread,
    store_entry,
)
from venice.partitioner import partition_for
from venice.replica_health import ReplicaHealth


@pytest.fixture(scope="module")
def cluster() -> Iterator[SampleCluster]:
    with sample_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def http(cluster: SampleCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.router_url, timeout=10) as client:
        yield client


def as_json(value: dict[str, Any]) -> Any:
    """What the router answers for a stored value: bytes become base64 text."""
    return orjson.loads(orjson.dumps(value, default=lambda b: base64.b64encode(b).decode()))


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


class TestSingleGet:
    def test_health(self, http: httpx.Client) -> None:
        assert http.get("/health").json() == {"status": "ok"}

    def test_value_comes_back_as_json(self, http: httpx.Client) -> None:
        response = http.get("/storage/members/42")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == as_json(member(42))

    def test_long_keys_parse_exactly(self, http: httpx.Client) -> None:
        for key in BIG_LONG_KEYS:
            assert http.get(f"/storage/members/{key}").json() == as_json(member(key))

    def test_string_keys_with_slash_space_and_unicode(self, http: httpx.Client) -> None:
        for key, value in TAG_RECORDS.items():
            assert http.get(f"/storage/tags/{quote(key, safe='')}").json() == value

    def test_record_keys_are_json(self, http: httpx.Client) -> None:
        key = quote(orjson.dumps({"a": 2, "b": "y/z"}), safe="")
        assert http.get(f"/storage/pairs/{key}").json() == 20

    def test_explicit_version(self, http: httpx.Client) -> None:
        assert http.get("/storage/members/3", params={"version": 1}).json() == as_json(member(3, 1))
        assert_error(http.get("/storage/members/3", params={"version": 7}), 404, "VERSION_NOT_FOUND")
        assert_error(http.get("/storage/members/3", params={"version": "x"}), 400, "BAD_REQUEST")

    def test_missing_key_is_404(self, http: httpx.Client) -> None:
        assert_error(http.get("/storage/members/123456"), 404, "KEY_NOT_FOUND")

    def test_unknown_store_is_404(self, http: httpx.Client) -> None:
        assert_error(http.get("/storage/nope/1"), 404, "STORE_NOT_FOUND")

    def test_store_without_current_version_is_400(self, http: httpx.Client) -> None:
        assert_error(http.get("/storage/fresh/x"), 400, "NO_CURRENT_VERSION")

    @pytest.mark.parametrize(
        "path", ["/storage/members/abc", f"/storage/members/{2**63}", "/storage/members/1.5", "/storage/pairs/%7Bbad"]
    )
    def test_invalid_key_is_400(self, http: httpx.Client, path: str) -> None:
        assert_error(http.get(path), 400, "INVALID_KEY")

    def test_reads_spread_over_replicas(self, cluster: SampleCluster) -> None:
        # A router of its own (the shared one remembers failures earlier tests provoked),
        # whose health tracker sees no time pass: replicas differ by measured latency only
        # on a busy machine, and how latency ranks replicas is tested with a fake clock in
        # tests/test_replica_health.py. Here: equally healthy replicas take turns.
        before = [s.reads for s in cluster.servers]
        with router_for(cluster.controller, ReplicaHealth(clock=lambda: 0.0)) as http:
            for _ in range(30):
                assert http.get("/storage/members/7").status_code == 200
        spread = [s.reads - b for s, b in zip(cluster.servers, before, strict=True)]
        assert all(count >= 5 for count in spread), spread

    def test_unknown_route_and_wrong_method(self, http: httpx.Client) -> None:
        assert_error(http.get("/nowhere"), 404, "NOT_FOUND")
        assert_error(http.post("/storage/members/1"), 405, "BAD_REQUEST")
        assert_error(http.get("/storage/members"), 405, "BAD_REQUEST")


class TestBatchGet:
    def test_results_follow_the_callers_order(self, http: httpx.Client) -> None:
        keys = [5, 123456, 1, BIG_LONG_KEYS[0], 5]
        response = http.post("/storage/members", json={"keys": keys})
        assert response.status_code == 200
        assert response.json() == {
            "results": [
                {"key": 5, "found": True, "value": as_json(member(5))},
                {"key": 123456, "found": False},
                {"key": 1, "found": True, "value": as_json(member(1))},
                {"key": BIG_LONG_KEYS[0], "found": True, "value": as_json(member(BIG_LONG_KEYS[0]))},
                {"key": 5, "found": True, "value": as_json(member(5))},
            ]
        }

    def test_string_and_record_keys(self, http: httpx.Client) -> None:
        tags = http.post("/storage/tags", json={"keys": ["a/b c", "nope", ""]}).json()["results"]
        assert [r.get("value") for r in tags] == ["slash and space", None, "empty key"]
        pairs = http.post("/storage/pairs", json={"keys": [{"a": 1, "b": "x"}, {"a": 1, "b": "q"}]}).json()
        assert [r["found"] for r in pairs["results"]] == [True, False]

    def test_one_version_per_batch(self, http: httpx.Client) -> None:
        results = http.post("/storage/members?version=1", json={"keys": [1, 2]}).json()["results"]
        assert [r["value"]["name"] for r in results] == ["member-1-v1", "member-2-v1"]

    def test_partitions_spread_over_servers(self, cluster: SampleCluster) -> None:
        # A router whose health tracker sees no time pass (as in test_reads_spread_over_replicas):
        # on a busy machine measured latency alone would send every partition to one server.
        before = [s.batch_requests for s in cluster.servers]
        with router_for(cluster.controller, ReplicaHealth(clock=lambda: 0.0)) as http:
            response = http.post("/storage/members", json={"keys": list(range(100))})
        assert all(r["found"] for r in response.json()["results"])
        used = sum(1 for s, b in zip(cluster.servers, before, strict=True) if s.batch_requests > b)
        assert used >= 2

    def test_empty_batch(self, http: httpx.Client) -> None:
        assert http.post("/storage/members", json={"keys": []}).json() == {"results": []}

    @pytest.mark.parametrize("body", [b"{not json", b'{"nokeys": 1}', b"[1, 2]", b'{"keys": ["x"]}'])
    def test_bad_body_or_key_is_400_invalid_key(self, http: httpx.Client, body: bytes) -> None:
        assert_error(http.post("/storage/members", content=body), 400, "INVALID_KEY")

    def test_batch_errors_of_the_store(self, http: httpx.Client) -> None:
        assert_error(http.post("/storage/nope", json={"keys": [1]}), 404, "STORE_NOT_FOUND")
        assert_error(http.post("/storage/fresh", json={"keys": ["a"]}), 400, "NO_CURRENT_VERSION")


class TestFailover:
    def test_refused_503_and_hanging_replicas_are_skipped(self, cluster: SampleCluster, http: httpx.Client) -> None:
        # Four reads rotate through all four starting replicas, the hanging one included.
        for _ in range(4):
            response = http.get("/storage/flaky/k")
            assert response.status_code == 200, response.text  # a 504 had the deadline passed
            assert response.json() == "v"

    def test_batch_fails_over_too(self, cluster: SampleCluster, http: httpx.Client) -> None:
        for _ in range(4):
            response = http.post("/storage/flaky", json={"keys": ["k2", "zz", "k"]})
            assert response.status_code == 200, response.text  # a 504 had the deadline passed
            assert [r.get("value") for r in response.json()["results"]] == ["v2", None, "v"]

    def test_missing_key_is_final_without_failover(self, cluster: SampleCluster, http: httpx.Client) -> None:
        assert_error(http.get("/storage/flaky/absent"), 404, "KEY_NOT_FOUND")

    def test_all_replicas_down_is_503(self, http: httpx.Client) -> None:
        response = http.get("/storage/down/k")
        assert_error(response, 503, "NO_REPLICA")
        assert len(response.json()["error"]["details"]["replica_errors"]) == 2
        assert_error(http.post("/storage/down", json={"keys": ["k"]}), 503, "NO_REPLICA")

    def test_only_a_hanging_replica_hits_the_deadline(self, cluster: SampleCluster, http: httpx.Client) -> None:
        started = time.monotonic()
        assert_error(http.get("/storage/stuck/k"), 504, "DEADLINE_EXCEEDED")
        assert time.monotonic() - started >= cluster.deadline_s  # it waited its whole deadline


@contextmanager
def router_for(
    controller: FakeController, health: ReplicaHealth | None = None, **config: Any
) -> Iterator[httpx.Client]:
    """A router of its own on ``controller``; ``health`` replaces its replica health tracker."""
    with serve_in_thread(controller) as controller_url:
        router_config = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5, **config)
        app = build_app(router_config)
        if health is not None:
            app.reader.health = health
        with serve_in_thread(build_server(router_config, app)) as url, httpx.Client(base_url=url, timeout=10) as http:
            yield http


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def one_server() -> Iterator[tuple[FakeStorage, str]]:
    server = FakeStorage()
    load([server], "s", 1, "string", "string", 2, {"k": "one"})
    load([server], "s", 2, "string", "string", 2, {"k": "two"})
    with serve_in_thread(server) as url:
        yield server, url


class TestRoutingRefresh:
    def test_starts_without_controller_and_serves_once_it_answers(self, one_server: tuple[FakeStorage, str]) -> None:
        controller = FakeController()
        controller.available = False
        controller.set_store("s", store_entry("string", {1: "string"}, 2, 1, {1: [one_server[1]]}))
        with router_for(controller, refresh_interval_s=0.1) as http:
            assert_error(http.get("/storage/s/k"), 503, "UNAVAILABLE")
            controller.available = True
            eventually(lambda: http.get("/storage/s/k").status_code == 200)

    def test_keeps_serving_when_the_controller_goes_down(self, one_server: tuple[FakeStorage, str]) -> None:
        controller = FakeController()
        controller.set_store("s", store_entry("string", {1: "string"}, 2, 1, {1: [one_server[1]]}))
        with router_for(controller, refresh_interval_s=0.1) as http:
            controller.available = False
            fetches = controller.fetches
            eventually(lambda: controller.fetches > fetches + 2)
            assert http.get("/storage/s/k").json() == "one"

    def test_long_polls_and_picks_up_a_new_version_at_once(self, one_server: tuple[FakeStorage, str]) -> None:
        controller = FakeController()
        url = one_server[1]
        controller.set_store("s", store_entry("string", {1: "string"}, 2, 1, {1: [url]}))
        with router_for(controller, refresh_interval_s=0.1) as http:
            assert http.get("/storage/s/k").json() == "one"
            eventually(lambda: controller.fetches >= 2)  # the first fetch, then a long poll
            time.sleep(0.3)
            assert controller.not_modified == 0, "a long poll must wait for a change, not spin"
            controller.set_store("s", store_entry("string", {1: "string"}, 2, 2, {1: [url], 2: [url]}))
            eventually(lambda: http.get("/storage/s/k").json() == "two")
            assert controller.woken_long_polls == 1, "the waiting long poll answered with the change"

    def test_stale_replica_triggers_an_early_refresh(self, one_server: tuple[FakeStorage, str]) -> None:
        """A REPLICA_NOT_READY answer refreshes routing now, not at the next (far) poll."""
        empty = FakeStorage()
        with serve_in_thread(empty) as empty_url:
            controller = FakeController()
            controller.wakes_long_polls = False  # else the change below reaches the router at once
            controller.set_store("s", store_entry("string", {1: "string"}, 2, 1, {1: [empty_url]}))
            with router_for(controller, refresh_interval_s=60) as http:
                eventually(lambda: controller.fetches >= 2)  # the router's background long poll is held
                controller.set_store("s", store_entry("string", {1: "string"}, 2, 1, {1: [one_server[1]]}))
                assert_error(http.get("/storage/s/k"), 503, "NO_REPLICA")
                eventually(lambda: http.get("/storage/s/k").status_code == 200, timeout=2)


class TestReplicaHealth:
    """The router learns which replicas fail or stall and stops sending reads there first."""

    @staticmethod
    @contextmanager
    def two_replicas(health: ReplicaHealth | None = None, **config: Any) -> Iterator[tuple[FakeStorage, FakeStorage, httpx.Client]]:
        first, second = FakeStorage(), FakeStorage()
        records = {f"k{i}": f"v{i}" for i in range(50)}
        load([first, second], "s", 1, "string", "string", 1, records)
        with serve_in_thread(first) as first_url, serve_in_thread(second) as second_url:
            controller = FakeController()
            controller.set_store("s", store_entry("string", {1: "string"}, 1, 1, {1: [first_url, second_url]}))
            with router_for(controller, health, **config) as http:
                yield first, second, http

    def test_a_failing_replica_is_asked_first_no_more(self) -> None:
        with self.two_replicas() as (first, second, http):
            first.mode = "unavailable"
            for i in range(40):
                response = http.get(f"/storage/s/k{i}")
                assert response.status_code == 200 and response.json() == f"v{i}"
            # Without health tracking every other read would start on the failing replica
            # (~20 of 40); after its first 503 it goes last for a couple of seconds.
            assert 1 <= first.reads <= 3
            assert second.reads >= 40

    def test_hedge_delay_follows_observed_latency(self) -> None:
        """After fast reads, a stalled replica gets company in tens of ms, not the 250 ms ceiling.

        The health tracker sees no time pass, so reads take turns on the two replicas: with a
        real clock on a busy machine, measured latency could rank the first replica last and
        no read would start on it once it stalls."""
        with self.two_replicas(ReplicaHealth(clock=lambda: 0.0), deadline_s=5.0) as (first, _second, http):
            for i in range(200):  # latency samples for the hedge delay
                assert http.get(f"/storage/s/k{i % 50}").status_code == 200
            first.mode, first.hang_s = "hang", 3.0
            before = first.reads
            for i in range(10):
                response = http.get(f"/storage/s/k{i}")
                assert response.status_code == 200 and response.json() == f"v{i}"
            # Some reads started on the stalled replica and were answered by the other one
            # (its 3 s stall is far past the hedge delay); how the delay follows observed
            # latency is checked on ReplicaHealth with a fake clock in test_health.py.
            assert first.reads > before


def test_the_asgi_paths_answer_like_the_fast_paths(cluster: SampleCluster, http: httpx.Client) -> None:
    """RouterApp stays a plain ASGI app: under uvicorn (no fast path) it answers the same."""
    from router.app import RouterApp

    with serve_in_thread(RouterApp(cluster.controller_url)) as url, httpx.Client(base_url=url, timeout=10) as plain:
        eventually(lambda: plain.get("/storage/members/1").status_code == 200)
        for path in ("/storage/members/1", "/storage/members/999999", "/storage/nope/1"):
            fast, asgi = http.get(path), plain.get(path)
            assert (fast.status_code, fast.json()) == (asgi.status_code, asgi.json())
        body = {"keys": [3, 999999, 1, 3]}
        fast, asgi = http.post("/storage/members", json=body), plain.post("/storage/members", json=body)
        assert fast.status_code == asgi.status_code == 200
        assert fast.json() == asgi.json()
        assert [r["found"] for r in asgi.json()["results"]] == [True, False, True, True]


EVO_V1 = {"type": "record", "name": "Member", "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"}]}
EVO_V2 = {
    "type": "record",
    "name": "Member",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "visits", "type": "long"},  # promoted from int
        {"name": "city", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": ["new"]},
    ],
}
EVO_V3 = {**EVO_V2, "fields": [*EVO_V2["fields"], {"name": "score", "type": "double", "default": 0.5}]}


def _avro(schema: Any, datum: Any) -> bytes:
    """fastavro's own encoding: the independent writer of stored values."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


class TestNewestSchema:
    """Readers get every value in the store's newest value schema, whichever schema it was
    stored with (value-schema evolution, issue 12)."""

    @staticmethod
    @contextmanager
    def evolving() -> Iterator[tuple[str, FakeController, httpx.Client]]:
        server = FakeStorage()
        key = lambda k: _avro("long", k)
        server.host("evo", 1, 2)
        server.host("evo", 2, 2)
        for k in (1, 2):  # version 1 pushed with schema 1
            server.put("evo", 1, partition_for(key(k), 2), key(k), _avro(EVO_V1, {"name": f"n{k}", "visits": k}), 1)
        # Version 2: key 1 pushed with schema 2, key 2 written later by an older producer (schema 1).
        v2_value = {"name": "n1b", "visits": 1 << 40, "city": "Oslo", "tags": ["a"]}
        server.put("evo", 2, partition_for(key(1), 2), key(1), _avro(EVO_V2, v2_value), 2)
        server.put("evo", 2, partition_for(key(2), 2), key(2), _avro(EVO_V1, {"name": "n2b", "visits": 7}), 1)
        server.put("evo", 2, partition_for(key(3), 2), key(3), b"\xff\xff\xff", 1)  # does not decode
        server.put("evo", 2, partition_for(key(4), 2), key(4), _avro(EVO_V3, {**v2_value, "score": 2.5}), 3)
        with serve_in_thread(server) as url:
            controller = FakeController()
            controller.set_store("evo", store_entry("long", {1: EVO_V1, 2: EVO_V2}, 2, 2, {1: [url], 2: [url]}))
            with router_for(controller) as http:
                yield url, controller, http

    def test_single_and_batch_gets_of_any_schema_come_back_in_the_newest(self) -> None:
        with self.evolving() as (_, _, http):
            old = {"city": None, "tags": ["new"]}  # schema 2's defaults, filled in for schema-1 values
            assert http.get("/storage/evo/1", params={"version": 1}).json() == {"name": "n1", "visits": 1, **old}
            assert http.get("/storage/evo/1").json() == {"name": "n1b", "visits": 1 << 40, "city": "Oslo", "tags": ["a"]}
            assert http.get("/storage/evo/2").json() == {"name": "n2b", "visits": 7, **old}
            answer = http.post("/storage/evo", params={"version": 1}, json={"keys": [2, 9, 1]}).json()
            assert answer == {"results": [
                {"key": 2, "found": True, "value": {"name": "n2", "visits": 2, **old}},
                {"key": 9, "found": False},
                {"key": 1, "found": True, "value": {"name": "n1", "visits": 1, **old}},
            ]}  # fmt: skip
            mixed = http.post("/storage/evo", json={"keys": [1, 2]}).json()["results"]
            assert [r["value"]["tags"] for r in mixed] == [["a"], ["new"]]
            # fastavro's resolving reader, the independent reader, agrees.
            stored = _avro(EVO_V1, {"name": "n2b", "visits": 7})
            resolved = fastavro.schemaless_reader(io.BytesIO(stored), fastavro.parse_schema(EVO_V1), fastavro.parse_schema(EVO_V2))
            assert http.get("/storage/evo/2").json() == resolved

    def test_bytes_that_do_not_decode_are_a_500(self) -> None:
        with self.evolving() as (_, _, http):
            assert_error(http.get("/storage/evo/3"), 500, "INTERNAL")
            assert_error(http.post("/storage/evo", json={"keys": [3]}), 500, "INTERNAL")

    def test_a_schema_newer_than_the_table_is_retriable_and_refreshes_it(self) -> None:
        with self.evolving() as (url, controller, http):
            controller.wakes_long_polls = False  # the router learns of schema 3 only by asking anew
            eventually(lambda: controller.fetches >= 2)  # its background long poll is held
            controller.set_store("evo", store_entry("long", {1: EVO_V1, 2: EVO_V2, 3: EVO_V3}, 2, 2, {1: [url], 2: [url]}))
            assert_error(http.get("/storage/evo/4"), 503, "UNKNOWN_SCHEMA")
            eventually(lambda: http.get("/storage/evo/4").status_code == 200, timeout=2)
            assert http.get("/storage/evo/4").json() == {"name": "n1b", "visits": 1 << 40, "city": "Oslo", "tags": ["a"], "score": 2.5}
            assert http.get("/storage/evo/2").json()["score"] == 0.5  # schema 3 is the newest now: its default
