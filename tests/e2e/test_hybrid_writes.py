"""Every way of writing to a hybrid store, end to end on real processes: the SDK, the
command line, the router's HTTP writes and kcat (the recipe of docs/api.md), on a real
controller, storage servers and routers over the real Kafka broker (and the embedded
log); what they write is read back through the router."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import venice
from tests.e2e.conftest import venice_cli, write_jsonl
from venice.cluster import LocalCluster, wait_for

PROFILE: dict[str, Any] = {
    "type": "record",
    "name": "Profile",
    "fields": [
        {"name": "name", "type": "string", "default": ""},
        {"name": "visits", "type": "long", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "photo", "type": ["null", "bytes"], "default": None},
    ],
}
HYBRID = {"rewind_seconds": 3600, "offset_lag": 100}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def create_store(
    cluster: LocalCluster, name: str, *, key: Any = "long", value: Any = PROFILE, hybrid: bool = True, write_compute: bool = True
) -> None:
    body: dict[str, Any] = {"name": name, "key_schema": key, "value_schema": value, "partitions": 4, "replication_factor": 2}
    if hybrid:
        body["hybrid"] = HYBRID
        body["write_compute"] = write_compute
    response = httpx.post(f"{cluster.controller_url}/stores", json=body, timeout=30)
    assert response.status_code == 201, response.text


def read(router_url: str, store: str, key: str) -> Any:
    """The value through the router, or None for 404."""
    response = httpx.get(f"{router_url}/storage/{store}/{key}", timeout=10)
    if response.status_code == 404 and response.json()["error"]["code"] == "KEY_NOT_FOUND":
        return None
    assert response.status_code == 200, response.text
    return response.json()


def eventually(router_urls: list[str], store: str, expected: dict[str, Any], timeout_s: float = 60) -> None:
    """Until every router returns ``expected[key]`` for every key (None: not found)."""

    def seen() -> bool:
        return all(read(url, store, key) == value for url in router_urls for key, value in expected.items())

    wait_for(seen, timeout_s, f"{store} to show {expected}")


def with_retries(write: Callable[[], None], timeout_s: float = 60) -> None:
    """A hybrid store's real-time topic may still be on its way (the controller's janitor
    creates it when it could not at once): a write is UNAVAILABLE until then."""

    def attempt() -> bool:
        try:
            write()
        except venice.UnavailableError:
            return False
        return True

    wait_for(attempt, timeout_s, "a write to be accepted")


def push(cluster: LocalCluster, store: str, records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / f"{store}.jsonl", records)
    done = venice_cli("push", "--controller", cluster.controller_url, "--store", store, "--input", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr


def routers(cluster: LocalCluster) -> list[str]:
    return [r.url for r in cluster.routers]


def test_sdk_writes_before_and_after_the_first_push(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    store = unique("sdk")
    create_store(kafka_cluster, store)
    with venice.Producer(kafka_cluster.controller_url) as producer:

        def first() -> None:
            producer.put(store, 1, {"name": "ann", "visits": 1, "tags": ["a"], "photo": b"\x00\xff"})
            producer.flush()

        with_retries(first)  # a put may be retried; an increment must not be
        producer.update(store, 2, {"increment": {"visits": 5}})  # from the defaults
    # Written before any version existed: applied by the first one.
    push(kafka_cluster, store, [{"key": 10, "name": "pushed", "visits": 0, "tags": []}], tmp_path)
    eventually(routers(kafka_cluster), store, {
        "1": {"name": "ann", "visits": 1, "tags": ["a"], "photo": "AP8="},
        "2": {"name": "", "visits": 5, "tags": [], "photo": None},
        "10": {"name": "pushed", "visits": 0, "tags": [], "photo": None},
    })  # fmt: skip
    with venice.Producer(kafka_cluster.controller_url) as producer:
        producer.update(store, 1, {"increment": {"visits": 2}, "add_to_list": {"tags": ["b"]}})
        producer.update(store, 10, {"set": {"name": "nearline"}})
        producer.delete(store, 2)
    eventually(routers(kafka_cluster), store, {
        "1": {"name": "ann", "visits": 3, "tags": ["a", "b"], "photo": "AP8="},
        "2": None,
        "10": {"name": "nearline", "visits": 0, "tags": [], "photo": None},
    })  # fmt: skip


def test_command_line_and_http_writes(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    store = unique("cli")
    create_store(kafka_cluster, store)
    push(kafka_cluster, store, [{"key": 1, "name": "one", "visits": 1, "tags": []}], tmp_path)
    controller = kafka_cluster.controller_url

    def cli_put() -> None:
        done = venice_cli("put", "--controller", controller, "--store", store, "--key", "2", "--value", '{"name": "two"}')
        if done.returncode != 0:
            raise venice.UnavailableError(done.stderr)

    with_retries(cli_put)
    done = venice_cli("update", "--controller", controller, "--store", store, "--key", "1", "--ops", '{"increment": {"visits": 41}}')
    assert done.returncode == 0, done.stderr
    lines = [{"key": 3, "value": {"name": "three"}}, {"key": 4, "update": {"add_to_list": {"tags": ["x"]}}}, {"key": 2, "delete": True}]
    path = write_jsonl(tmp_path / "writes.jsonl", lines)
    done = venice_cli("write", "--controller", controller, "--store", store, "--input", str(path))
    assert done.returncode == 0 and done.stdout.startswith("wrote 3 records"), done.stderr
    first, second = routers(kafka_cluster)
    assert httpx.put(f"{first}/storage/{store}/5", content=b'{"name": "five", "photo": "AQI="}', timeout=30).status_code == 202
    assert httpx.patch(f"{second}/storage/{store}/5", content=b'{"increment": {"visits": 7}}', timeout=30).status_code == 202
    assert httpx.put(f"{second}/storage/{store}/6", content=b'{"name": "six"}', timeout=30).status_code == 202
    assert httpx.delete(f"{first}/storage/{store}/6", timeout=30).status_code == 202
    default = {"name": "", "visits": 0, "tags": [], "photo": None}
    eventually([first, second], store, {
        "1": {**default, "name": "one", "visits": 42},
        "2": None,
        "3": {**default, "name": "three"},
        "4": {**default, "tags": ["x"]},
        "5": {**default, "name": "five", "visits": 7, "photo": "AQI="},
        "6": None,
    })  # fmt: skip


def test_batch_only_stores_refuse_writes(kafka_cluster: LocalCluster) -> None:
    store = unique("batch")
    create_store(kafka_cluster, store, hybrid=False)
    answer = httpx.put(f"{kafka_cluster.router_url}/storage/{store}/1", content=b'{"name": "x"}', timeout=30)
    if answer.status_code == 404:  # the router has not seen the new store yet
        wait_for(lambda: httpx.put(f"{kafka_cluster.router_url}/storage/{store}/1", content=b"{}", timeout=30).status_code != 404, 30, "router")
        answer = httpx.put(f"{kafka_cluster.router_url}/storage/{store}/1", content=b'{"name": "x"}', timeout=30)
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "NOT_HYBRID")
    with venice.Producer(kafka_cluster.controller_url) as producer, pytest.raises(venice.NotHybridError):
        producer.put(store, 1, {"name": "x"})
    done = venice_cli("delete", "--controller", kafka_cluster.controller_url, "--store", store, "--key", "1")
    assert done.returncode == 1 and "batch-only" in done.stderr


def test_updates_need_write_compute(kafka_cluster: LocalCluster) -> None:
    store = unique("nowc")
    create_store(kafka_cluster, store, write_compute=False)
    with venice.Producer(kafka_cluster.controller_url) as producer, pytest.raises(venice.WriteComputeDisabledError):
        producer.update(store, 1, {"increment": {"visits": 1}})


def test_the_kcat_recipe_is_read_back_through_the_router(kafka_cluster: LocalCluster, kcat: str, tmp_path: Path) -> None:
    from tests.test_kcat_recipe import recipe

    store = unique("greetings")
    create_store(kafka_cluster, store, key="string", value="string", write_compute=False)
    done = venice_cli("push", "--controller", kafka_cluster.controller_url, "--store", store, "--empty")
    assert done.returncode == 0, done.stderr
    broker = kafka_cluster.pubsub_url.removeprefix("kafka://")
    env = {**os.environ, "CONTROLLER": kafka_cluster.controller_url, "BROKER": broker, "STORE": store,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip

    def run(name: str) -> None:
        wait_for(lambda: httpx.get(f"{kafka_cluster.controller_url}/stores/{store}", timeout=10).json()["hybrid"], 30, "hybrid")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe(name)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr

    run("by-hand")  # bob = "hi kcat"
    eventually(routers(kafka_cluster), store, {"bob": "hi kcat"})
    run("encode")  # bob = "hello from kcat", then deleted
    eventually(routers(kafka_cluster), store, {"bob": None})


def test_embedded_log(embedded_cluster: LocalCluster, tmp_path: Path) -> None:
    store = unique("embedded")
    create_store(embedded_cluster, store)
    push(embedded_cluster, store, [{"key": 1, "name": "one"}], tmp_path)
    with venice.Producer(embedded_cluster.controller_url) as producer:

        def first() -> None:
            producer.put(store, 2, {"name": "two"})
            producer.flush()

        with_retries(first)
        producer.update(store, 1, {"increment": {"visits": 3}})
    lines = b"".join(orjson.dumps(line) + b"\n" for line in [{"key": 3, "value": {"name": "three"}}, {"key": 1, "update": {"add_to_list": {"tags": ["t"]}}}])
    (tmp_path / "w.jsonl").write_bytes(lines)
    done = venice_cli("write", "--controller", embedded_cluster.controller_url, "--store", store, "--input", str(tmp_path / "w.jsonl"))
    assert done.returncode == 0, done.stderr
    assert httpx.put(f"{embedded_cluster.router_url}/storage/{store}/4", content=b'{"name": "four"}', timeout=30).status_code == 202
    default = {"name": "", "visits": 0, "tags": [], "photo": None}
    eventually(routers(embedded_cluster), store, {
        "1": {**default, "name": "one", "visits": 3, "tags": ["t"]},
        "2": {**default, "name": "two"},
        "3": {**default, "name": "three"},
        "4": {**default, "name": "four"},
    })  # fmt: skip
