"""``venice server --workers 3`` in a real cluster (controller, router, the embedded log):
three processes on the server's port; reads answered by the read workers from the LMDB
files read-only (proven by stopping the ingesting process: reads still come back, right),
a second push seen by the workers, every other endpoint relayed, and no orphan after a
kill -9 of the ingesting process."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import VALUE_SCHEMA, make_records, push, wait_router_serves, write_jsonl
from tests.router.test_workers import _children, _gone, _listeners
from venice.cluster import LocalCluster, wait_for
from venice.partitioner import partition_for
from venice.schema import AvroCodec

STORE = "workers"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("workers"), servers=1, server_args={0: ["--workers", "3"]})
    cluster.start()
    try:
        response = httpx.post(f"{cluster.controller_url}/stores", json={
            "name": STORE, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 4, "replication_factor": 1,
        }, timeout=30)
        assert response.status_code == 201, response.text
        yield cluster
    finally:
        cluster.stop()


def _port(cluster: LocalCluster) -> int:
    return int(cluster.servers[0].url.rsplit(":", 1)[1])


def _direct_get(url: str, version: int, key: int) -> httpx.Response:
    key_bytes = AvroCodec("long", kind="key").encode(key)
    segment = base64.urlsafe_b64encode(key_bytes).rstrip(b"=").decode()
    with httpx.Client() as fresh:  # a new connection: the kernel picks the process
        return fresh.get(f"{url}/v1/{STORE}/{version}/{partition_for(key_bytes, 4)}/{segment}", timeout=3)


def _value(record: dict[str, Any]) -> bytes:
    return AvroCodec(VALUE_SCHEMA).encode({k: v for k, v in record.items() if k != "id"})


def _push(cluster: LocalCluster, tmp: Path, records: list[dict[str, Any]]) -> int:
    result = push(cluster.controller_url, STORE, write_jsonl(tmp / "in.jsonl", records))
    assert result.returncode == 0, result.stderr
    wait_router_serves(cluster.router_url, STORE, records[0]["id"])
    return int(httpx.get(f"{cluster.controller_url}/stores/{STORE}", timeout=5).json()["current_version"])


def test_reads_come_from_the_workers_and_everything_else_is_relayed(cluster: LocalCluster, tmp_path: Path) -> None:
    server = cluster.servers[0]
    port = _port(cluster)
    wait_for(lambda: len(_listeners(port)) == 3, 60, "three server processes listening")
    workers = _children(server.pid)
    assert _listeners(port) == {server.pid, *workers} and len(workers) == 2

    records = make_records(200, seed=3)
    version = _push(cluster, tmp_path, records)
    with httpx.Client() as client:
        for record in records[:50]:
            got = client.get(f"{cluster.router_url}/storage/{STORE}/{record['id']}", timeout=10)
            assert got.json() == {k: v for k, v in record.items() if k != "id"}
    for record in records[:30]:  # fresh connections: every process answers alike
        answer = _direct_get(server.url, version, record["id"])
        assert answer.status_code == 200 and answer.content == _value(record)
        with httpx.Client() as fresh:
            health = fresh.get(f"{server.url}/health", timeout=10).json()
            replicas = fresh.get(f"{server.url}/admin/replicas", timeout=10).json()
        assert health["status"] == "ok" and health["server_id"] == replicas["server_id"]
        assert {r["partition"] for r in replicas["replicas"] if r["version"] == version} == {0, 1, 2, 3}

    # With the ingesting process stopped, only the workers can answer: some new
    # connections land on them and get the right value, none gets a wrong one.
    os.kill(server.pid, signal.SIGSTOP)
    try:
        answered = 0
        for record in records[:30]:
            try:
                answer = _direct_get(server.url, version, record["id"])
            except httpx.TimeoutException:
                continue  # this connection went to the stopped process
            assert answer.status_code == 200 and answer.content == _value(record)
            answered += 1
        assert answered > 0
    finally:
        os.kill(server.pid, signal.SIGCONT)

    # A new version: the workers find it in the manifest and serve it.
    newer = [{**r, "name": "v2-" + r["name"]} for r in records]
    version2 = _push(cluster, tmp_path, newer)
    assert version2 > version
    seen = {_direct_get(server.url, version2, r["id"]).content for r in newer[:30]}
    assert seen == {_value(r) for r in newer[:30]}


def test_a_killed_ingesting_process_takes_its_workers_along(cluster: LocalCluster) -> None:
    server = cluster.servers[0]
    port = _port(cluster)
    wait_for(lambda: len(_listeners(port)) == 3, 60, "three server processes listening")
    workers = _children(server.pid)
    server.kill()
    wait_for(lambda: all(_gone(w) for w in workers), 30, "the read workers to follow")
    wait_for(lambda: _listeners(port) == set(), 30, "the port to be free")
