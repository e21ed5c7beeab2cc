"""The controller's HTTP API on a real controller process (loopback, embedded log):
hostile bodies get 400s in the platform's error shape, a change that cannot be saved is
undone with a 503, and the background loops outlive a failure (issue 8, items 2, 4-6)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from venice.cluster import ManagedProcess, free_port, wait_for

VALUE_SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


def _start_controller(tmp_path: Path) -> ManagedProcess:
    port = free_port()
    process = ManagedProcess(
        "controller",
        [
            "controller", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "controller"),
            "--pubsub-url", f"embedded://{tmp_path / 'log'}", "--dead-after", "30",
        ],
        tmp_path / "controller.log",
        f"http://127.0.0.1:{port}",
    )
    process.start()
    try:
        process.wait_healthy()
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A controller of this test's own."""
    process = _start_controller(tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(controller: ManagedProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=controller.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One controller for the hostile-input tests (they must leave no trace anyway), with
    store ``members`` and server ``s0``."""
    process = _start_controller(tmp_path_factory.mktemp("shared-controller"))
    try:
        with httpx.Client(base_url=process.url, timeout=10) as client:
            assert client.post("/stores", json=_store()).status_code == 201
            assert _beat(client).status_code == 200
            yield client
    finally:
        process.stop()


def _names(http: httpx.Client) -> set[str]:
    return {s["name"] for s in http.get("/stores").json()["stores"]}


def _store(name: str = "members", **extra: Any) -> dict[str, Any]:
    return {"name": name, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 2, "replication_factor": 1, **extra}


def _beat(http: httpx.Client, server: str = "s0", **body: Any) -> httpx.Response:
    return http.post(f"/servers/{server}/heartbeat", json={"url": "http://127.0.0.1:9", "replicas": [], **body})


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


def _works(http: httpx.Client) -> None:
    """The controller still takes changes and heartbeats."""
    assert _beat(http).status_code == 200
    assert http.patch("/stores/members", json={"keep_versions": 3}).status_code == 200


class TestBounds:
    @pytest.mark.parametrize(
        "extra",
        [
            {"replication_factor": 10**30}, {"replication_factor": 33}, {"partitions": 10**30}, {"partitions": 0},
            {"keep_versions": 10**30}, {"keep_versions": 0}, {"push_timeout_s": 10**30}, {"push_timeout_s": 0.1},
            {"push_timeout_s": "nan"}, {"max_value_bytes": 10**30}, {"max_value_bytes": 0}, {"partitions": "4"},
            {"replication_factor": 1.5}, {"partitions": True},
        ],
    )
    def test_out_of_bounds_store_fields_are_400_and_change_nothing(self, shared: httpx.Client, extra: dict[str, Any]) -> None:
        _error(shared.post("/stores", json=_store("other", **extra)))
        assert "other" not in _names(shared)
        _works(shared)

    @pytest.mark.parametrize(
        "body",
        [
            {"keep_versions": 10**30}, {"push_timeout_s": 10**400}, {"max_value_bytes": -1}, {"keep_versions": "2"},
            {"push_timeout_s": 8 * 86400},
        ],
    )
    def test_out_of_bounds_updates_are_400(self, shared: httpx.Client, body: dict[str, Any]) -> None:
        before = shared.get("/stores/members").json()
        _error(shared.patch("/stores/members", json=body))
        assert shared.get("/stores/members").json() == before
        _works(shared)

    def test_new_settings_are_taken_and_described(self, http: httpx.Client) -> None:
        answer = http.post("/stores", json=_store(keep_versions=3, push_timeout_s=60, max_value_bytes=2048))
        assert answer.status_code == 201, answer.text
        info = answer.json()
        assert (info["keep_versions"], info["push_timeout_s"], info["max_value_bytes"]) == (3, 60, 2048)
        assert len(info["incarnation"]) == 12
        assert http.patch("/stores/members", json={"max_value_bytes": 4 << 20}).json()["max_value_bytes"] == 4 << 20
        assert http.post("/stores", json=_store("plain")).json()["max_value_bytes"] == 1 << 20


class TestNamesAndSchemas:
    @pytest.mark.parametrize("name", ["..", ".", "日本", "x" * 10_000, "a/b", "", "a b"])
    def test_invalid_store_names_are_400(self, shared: httpx.Client, name: str) -> None:
        before = _names(shared)
        assert "invalid store name" in _error(shared.post("/stores", json=_store(name)))["message"]
        assert _names(shared) == before

    def test_names_that_collide_on_kafka_are_refused(self, shared: httpx.Client) -> None:
        assert shared.post("/stores", json=_store("a.b")).status_code == 201
        assert "collides with store 'a.b'" in _error(shared.post("/stores", json=_store("a_b")), 409)["message"]

    @pytest.mark.parametrize(
        ("schema", "why"),
        [
            ({"type": "enum", "name": "E", "symbols": []}, "at least one symbol"),
            ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "unique"),
            (["null", "null"], "'null' is there twice"),
            ([], "at least one branch"),
            (["null", ["null", "long"]], "may not hold a union"),
            ({"type": "fixed", "name": "F", "size": -1}, "size must be an integer from 1 to 1048576"),
            ({"type": "fixed", "name": "F", "size": 10**12}, "size must be an integer from 1 to 1048576"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]}, "default"),
            ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}, "twice"),
            ({"type": "record", "name": "1R", "fields": []}, "not a valid Avro name"),
            ({"type": "long", "note": 10**30}, "64 bits"),
        ],
    )
    def test_invalid_value_schemas_are_400(self, shared: httpx.Client, schema: Any, why: str) -> None:
        error = _error(shared.post("/stores", json={**_store("schemas"), "value_schema": schema}))
        assert error["code"] == "INVALID_SCHEMA" and why in error["message"], error
        assert "schemas" not in _names(shared)

    @pytest.mark.parametrize(
        ("key_schema", "kind"),
        [
            ({"type": "map", "values": "long"}, "map"), (["null", "long"], "union"), ("float", "float"),
            ("double", "double"), ("null", "null"),
            ({"type": "record", "name": "K", "fields": [{"name": "a", "type": ["null", "long"]}]}, "union"),
            ({"type": "record", "name": "K", "fields": [{"name": "a", "type": {"type": "array", "items": "double"}}]}, "double"),
        ],
    )
    def test_key_schemas_without_one_binary_form_are_400(self, shared: httpx.Client, key_schema: Any, kind: str) -> None:
        error = _error(shared.post("/stores", json={**_store("keys"), "key_schema": key_schema}))
        assert error["code"] == "INVALID_SCHEMA" and f"{kind} is not allowed in a key" in error["message"], error


class TestHeartbeats:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            [],
            {"url": 5},
            {"url": "not a url"},
            {"url": "http://127.0.0.1:9", "replicas": "x"},
            {"url": "http://127.0.0.1:9", "replicas": [{}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": "members", "version": 1, "partition": 0, "status": "BOGUS"}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": "members", "version": "1", "partition": 0, "status": "READY"}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": "members", "version": 1, "partition": 0, "status": "READY",
                                                         "offset": 10**30}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": "members", "version": 10**30, "partition": 0, "status": "READY"}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": "members", "version": 1, "partition": -1, "status": "READY"}]},
            {"url": "http://127.0.0.1:9", "replicas": [{"store": ["x"], "version": 1, "partition": 0, "status": "READY"}]},
            {"url": "http://127.0.0.1:9", "draining": "yes"},
            {"url": "http://" + "h" * 5000},
        ],
    )
    def test_malformed_heartbeats_are_400(self, shared: httpx.Client, body: Any) -> None:
        error = _error(shared.post("/servers/hostile/heartbeat", json=body))
        assert error["code"] == "BAD_REQUEST"
        assert "hostile" not in {s["server_id"] for s in shared.get("/cluster").json()["servers"]}
        _works(shared)

    @pytest.mark.parametrize("body", [b"\xff{", b"{", b"", b"[" * 100_000, b'{"url": "http://127.0.0.1:9", "replicas": [' + b"{}," * 10 + b"]}"])
    def test_bodies_that_are_not_json_are_400(self, shared: httpx.Client, body: bytes) -> None:
        _error(shared.post("/servers/hostile/heartbeat", content=body, headers={"content-type": "application/json"}))
        _works(shared)

    @pytest.mark.parametrize("server_id", ["a%20b", "s" * 300, "%E6%97%A5"])
    def test_bad_server_ids_are_400(self, shared: httpx.Client, server_id: str) -> None:
        _error(shared.post(f"/servers/{server_id}/heartbeat", json={"url": "http://127.0.0.1:9"}))

    def test_long_reasons_are_kept_short(self, shared: httpx.Client) -> None:
        assert shared.post("/stores", json=_store("reasons")).status_code == 201
        assert shared.post("/stores/reasons/versions").status_code == 201
        report = {"store": "reasons", "version": 1, "partition": 0, "status": "ERROR", "reason": "x" * 100_000}
        assert _beat(shared, replicas=[report]).status_code == 200
        info = shared.get("/stores/reasons/versions/1").json()
        assert info["status"] == "ERROR" and len(info["reason"]) < 2100


class TestVersions:
    def test_end_of_push_is_idempotent_over_http(self, http: httpx.Client) -> None:
        assert http.post("/stores", json=_store()).status_code == 201
        assert _beat(http).status_code == 200
        assert http.post("/stores/members/versions").status_code == 201
        first = http.post("/stores/members/versions/1/end", json={"records": 7})
        again = http.post("/stores/members/versions/1/end", json={"records": 7})
        assert first.status_code == again.status_code == 200 and first.json()["records"] == again.json()["records"] == 7
        assert "not 8" in _error(http.post("/stores/members/versions/1/end", json={"records": 8}), 409)["message"]
        _error(http.post("/stores/members/versions/1/end", json={"records": 10**30}))
        _error(http.post("/stores/members/versions/1/end", json={"records": -1}))
        assert http.post("/stores/members/versions/1/kill").status_code == 200
        assert "is KILLED" in _error(http.post("/stores/members/versions/1/end", json={"records": 7}), 409)["message"]

    def test_ready_replicas_without_end_of_push_stay_started(self, http: httpx.Client) -> None:
        assert http.post("/stores", json=_store()).status_code == 201
        assert _beat(http).status_code == 200
        assert http.post("/stores/members/versions").status_code == 201
        ready = [{"store": "members", "version": 1, "partition": p, "status": "READY"} for p in (0, 1)]
        assert _beat(http, replicas=ready).status_code == 200
        assert http.get("/stores/members/versions/1").json()["status"] == "STARTED"
        assert http.post("/stores/members/versions/1/end", json={"records": 0}).json()["status"] == "ONLINE"
        assert http.get("/stores/members").json()["current_version"] == 1


class TestSaveFailures:
    def test_a_change_that_cannot_be_saved_is_undone_and_the_loops_keep_going(
        self, http: httpx.Client, controller: ManagedProcess, tmp_path: Path
    ) -> None:
        assert http.post("/stores", json=_store(push_timeout_s=1)).status_code == 201
        assert _beat(http).status_code == 200
        assert http.post("/stores/members/versions").status_code == 201
        # A directory where the metadata's temporary file goes: every save fails (even as root).
        blocker = tmp_path / "controller" / "controller-state.tmp"
        blocker.mkdir()
        try:
            error = _error(http.post("/stores", json=_store("other")), 503)
            assert error["code"] == "UNAVAILABLE" and "could not save" in error["message"]
            assert [s["name"] for s in http.get("/stores").json()["stores"]] == ["members"]
            # The push timeout passes while saving fails: the background loop keeps failing.
            time.sleep(2.0)
            assert http.get("/stores/members/versions/1").json()["status"] == "STARTED"
        finally:
            shutil.rmtree(blocker)
        # Disk back: the next request works and the loop that failed is still running.
        assert http.post("/stores", json=_store("other")).status_code == 201
        wait_for(lambda: http.get("/stores/members/versions/1").json()["status"] == "ERROR", 30, "the push timeout")
        assert _beat(http).status_code == 200
        log = (tmp_path / "controller.log").read_text()
        assert "crashed; restarting it" in log and "Traceback" in log


MEMBER = {"type": "record", "name": "Member", "fields": [{"name": "visits", "type": "long"}]}
MEMBER_V2 = {**MEMBER, "fields": [*MEMBER["fields"], {"name": "city", "type": ["null", "string"], "default": None}]}
HYBRID = {"rewind_seconds": 3600, "offset_lag": 10}


def _rt_partitions(tmp_path: Path, store: str) -> int | None:
    """Partitions of the store's real-time topic in the controller's embedded log (None: no topic)."""
    import asyncio

    from venice.errors import TopicNotFoundError
    from venice.pubsub.embedded import EmbeddedPubSub

    async def count() -> int | None:
        try:
            return await EmbeddedPubSub(tmp_path / "log").partition_count(f"{store}_rt")
        except TopicNotFoundError:
            return None

    return asyncio.run(count())


class TestHybridStores:
    def test_create_hybrid_then_batch_only_then_hybrid(self, http: httpx.Client, tmp_path: Path) -> None:
        answer = http.post("/stores", json=_store(partitions=3, hybrid=HYBRID, write_compute=False))
        assert answer.status_code == 201, answer.text
        info = answer.json()
        assert info["hybrid"] == {**HYBRID, "real_time_topic": "members_rt"} and info["write_compute"] is False
        assert _rt_partitions(tmp_path, "members") == 3  # created before the answer
        info = http.patch("/stores/members", json={"hybrid": {"rewind_seconds": 60, "offset_lag": 0}, "write_compute": True}).json()
        assert info["hybrid"]["rewind_seconds"] == 60 and info["write_compute"] is True
        assert list(info["update_schemas"]) == ["1"]
        info = http.patch("/stores/members", json={"hybrid": None}).json()
        assert info["hybrid"] is None and info["write_compute"] is False and "update_schemas" not in info
        assert _rt_partitions(tmp_path, "members") is None
        assert http.patch("/stores/members", json={"keep_versions": 3}).json()["hybrid"] is None  # not given: unchanged
        assert http.patch("/stores/members", json={"hybrid": HYBRID}).json()["hybrid"]["offset_lag"] == 10
        assert _rt_partitions(tmp_path, "members") == 3
        routing = http.get("/routing").json()["stores"]["members"]
        assert routing["hybrid"] == {**HYBRID, "real_time_topic": "members_rt"} and routing["write_compute"] is False

    def test_deleting_a_hybrid_store_deletes_its_topic(self, http: httpx.Client, tmp_path: Path) -> None:
        assert http.post("/stores", json=_store(hybrid=HYBRID)).status_code == 201
        assert _rt_partitions(tmp_path, "members") == 2
        assert http.delete("/stores/members").status_code == 200
        wait_for(lambda: _rt_partitions(tmp_path, "members") is None, 30, "the janitor to delete members_rt")

    @pytest.mark.parametrize(
        "extra",
        [
            {"hybrid": "yes"}, {"hybrid": []}, {"hybrid": {}}, {"hybrid": {"rewind_seconds": 60}},
            {"hybrid": {"rewind_seconds": -1, "offset_lag": 0}}, {"hybrid": {"rewind_seconds": 30 * 86400 + 1, "offset_lag": 0}},
            {"hybrid": {"rewind_seconds": 0, "offset_lag": 10**9 + 1}}, {"hybrid": {"rewind_seconds": 10**30, "offset_lag": 0}},
            {"hybrid": {"rewind_seconds": "60", "offset_lag": 0}}, {"hybrid": {"rewind_seconds": 1.5, "offset_lag": 0}},
            {"hybrid": {"rewind_seconds": True, "offset_lag": 0}}, {"hybrid": {"rewind_seconds": 0, "offset_lag": None}},
            {"write_compute": "true"}, {"write_compute": 1}, {"write_compute": True},
            {"write_compute": True, "hybrid": HYBRID, "value_schema": "string"},
        ],
    )
    def test_hostile_hybrid_settings_on_create_are_400(self, shared: httpx.Client, extra: dict[str, Any]) -> None:
        error = _error(shared.post("/stores", json=_store("other", **extra)))
        assert error["code"] in ("BAD_REQUEST", "INVALID_SCHEMA")
        assert "other" not in _names(shared)
        _works(shared)

    @pytest.mark.parametrize(
        "body",
        [
            {"hybrid": 5}, {"hybrid": {"rewind_seconds": 0}}, {"hybrid": {"rewind_seconds": -5, "offset_lag": 1}},
            {"hybrid": {"rewind_seconds": 0, "offset_lag": 10**40}}, {"write_compute": "no"}, {"write_compute": True},
            {"hybrid": None, "write_compute": True},
        ],
    )
    def test_hostile_hybrid_updates_are_400_and_change_nothing(self, shared: httpx.Client, body: dict[str, Any]) -> None:
        before = shared.get("/stores/members").json()
        _error(shared.patch("/stores/members", json=body))
        assert shared.get("/stores/members").json() == before
        _works(shared)

    def test_replica_reports_show_real_time_progress(self, http: httpx.Client) -> None:
        assert http.post("/stores", json=_store(hybrid=HYBRID)).status_code == 201
        assert _beat(http).status_code == 200
        assert http.post("/stores/members/versions").status_code == 201
        version = http.get("/stores/members/versions/1").json()
        assert version["rt_start_offsets"] == {"0": 0, "1": 0}  # the first version: the topic's beginning
        assignment = _beat(http).json()["assignment"][0]
        assert assignment["hybrid"]["real_time_topic"] == "members_rt" and assignment["consume_rt"] is True
        assert assignment["rt_start_offsets"] == {"0": 0, "1": 0}
        reports = [
            {"store": "members", "version": 1, "partition": p, "status": "STARTED", "rt_offset": 5, "rt_lag": 3 + p, "skipped": p * 2}
            for p in (0, 1)
        ]
        assert _beat(http, replicas=reports).status_code == 200
        version = http.get("/stores/members/versions/1").json()
        assert [(r["rt_offset"], r["rt_lag"], r["skipped"]) for r in version["replicas"]["1"]] == [(5, 4, 2)]
        assert (version["rt_lag"], version["poison_pills"]) == (4, 2)

    @pytest.mark.parametrize(
        "fields",
        [{"rt_offset": -1}, {"rt_lag": "3"}, {"skipped": 10**30}, {"rt_offset": 1.5}, {"incarnation": "x" * 100}, {"skipped": None}],
    )
    def test_hostile_real_time_reports_are_400(self, shared: httpx.Client, fields: dict[str, Any]) -> None:
        report = {"store": "members", "version": 1, "partition": 0, "status": "STARTED", **fields}
        _error(shared.post("/servers/hostile/heartbeat", json={"url": "http://127.0.0.1:9", "replicas": [report]}))
        assert "hostile" not in {s["server_id"] for s in shared.get("/cluster").json()["servers"]}


class TestValueSchemas:
    def test_register_compatible_identical_and_incompatible(self, http: httpx.Client) -> None:
        assert http.post("/stores", json=_store(value_schema=MEMBER)).status_code == 201
        answer = http.post("/stores/members/value-schemas", json={"schema": MEMBER_V2})
        assert answer.status_code == 201 and answer.json() == {"id": 2, "schema": MEMBER_V2}
        again = http.post("/stores/members/value-schemas", json={"schema": MEMBER_V2})
        assert again.status_code == 200 and again.json() == {"id": 2, "schema": MEMBER_V2}
        first = http.post("/stores/members/value-schemas", json={"schema": MEMBER})
        assert first.status_code == 200 and first.json()["id"] == 1
        bad = {**MEMBER, "fields": [*MEMBER_V2["fields"], {"name": "age", "type": "int"}]}
        error = _error(http.post("/stores/members/value-schemas", json={"schema": bad}))
        assert error["code"] == "INVALID_SCHEMA" and "field age" in error["message"]
        assert error["details"] == {"field": "age", "reader": "new", "writer": 1}
        info = http.get("/stores/members").json()
        assert info["value_schemas"] == {"1": MEMBER, "2": MEMBER_V2}
        assert http.get("/routing").json()["stores"]["members"]["value_schemas"] == {"1": MEMBER, "2": MEMBER_V2}

    def test_concurrent_registrations_get_distinct_consecutive_ids(self, http: httpx.Client) -> None:
        from concurrent.futures import ThreadPoolExecutor

        assert http.post("/stores", json=_store(value_schema=MEMBER)).status_code == 201
        schemas = [
            {**MEMBER, "fields": [*MEMBER["fields"], {"name": f"f{i}", "type": ["null", "long"], "default": None}]} for i in range(12)
        ]

        def register(schema: dict[str, Any]) -> int:
            with httpx.Client(base_url=str(http.base_url), timeout=30) as client:
                response = client.post("/stores/members/value-schemas", json={"schema": schema})
                assert response.status_code == 201, response.text
                return int(response.json()["id"])

        with ThreadPoolExecutor(6) as pool:
            ids = list(pool.map(register, schemas))
        assert sorted(ids) == list(range(2, 14))
        registered = http.get("/stores/members").json()["value_schemas"]
        assert {registered[str(i)]["fields"][-1]["name"] for i in ids} == {f"f{i}" for i in range(12)}

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({}, "BAD_REQUEST"), ([], "BAD_REQUEST"), ({"schema": None}, "INVALID_SCHEMA"), ({"schema": 5}, "INVALID_SCHEMA"),
            ({"schema": "nope"}, "INVALID_SCHEMA"), ({"schema": {"type": "record", "name": "V"}}, "INVALID_SCHEMA"),
            ({"schema": {"type": "record", "name": "V", "fields": [], "doc": "x" * (300 << 10)}}, "INVALID_SCHEMA"),
            ({"schema": {"type": "long", "n": 10**30}}, "INVALID_SCHEMA"),
            ({"schema": "long"}, "INVALID_SCHEMA"),  # incompatible with the record V
        ],
    )
    def test_hostile_schemas_are_400_and_register_nothing(self, shared: httpx.Client, body: Any, code: str) -> None:
        error = _error(shared.post("/stores/members/value-schemas", json=body))
        assert error["code"] == code, error
        assert list(shared.get("/stores/members").json()["value_schemas"]) == ["1"]
        _works(shared)

    @pytest.mark.parametrize("body", [b"[" * 100_000, b"\xff", b'{"schema": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
    def test_bodies_that_are_not_json_are_400(self, shared: httpx.Client, body: bytes) -> None:
        _error(shared.post("/stores/members/value-schemas", content=body, headers={"content-type": "application/json"}))
        assert list(shared.get("/stores/members").json()["value_schemas"]) == ["1"]

    def test_unknown_store_is_404(self, shared: httpx.Client) -> None:
        assert _error(shared.post("/stores/nope/value-schemas", json={"schema": MEMBER}), 404)["code"] == "STORE_NOT_FOUND"
