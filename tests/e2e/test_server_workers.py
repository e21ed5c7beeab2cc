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


def test_metrics_count_the_reads_of_every_process(cluster: LocalCluster) -> None:
    """Reads on fresh connections land on all three processes (none on the ingesting one
    with odds of (1/3)^40); its /metrics counts each exactly once, the workers' within
    their publishing interval. Refusals a worker answers itself count too."""
    from tests.e2e.scrape import scrape, value

    server = cluster.servers[0]
    version = int(httpx.get(f"{cluster.controller_url}/stores/{STORE}", timeout=5).json()["current_version"])
    single = {"store": STORE, "version": str(version), "kind": "single"}

    def counts() -> tuple[float, float, float]:
        samples = scrape(server.url)
        return (value(samples, "venice_server_reads_total", **single, result="hit"),
                value(samples, "venice_server_reads_total", **single, result="miss"),
                value(samples, "venice_server_reads_total", **single, result="BAD_REQUEST"))

    settled: list[tuple[float, float, float]] = []

    def stable() -> bool:  # two scrapes a publishing interval apart agree: no read is on its way
        settled.append(counts())
        return len(settled) > 1 and settled[-1] == settled[-2]

    wait_for(stable, 30, "the read counts to settle", interval_s=1.5)
    before = settled[-1]
    records = make_records(200, seed=3)
    for record in records[:40]:
        assert _direct_get(server.url, version, record["id"]).status_code == 200
    for key in (-1, -2, -3):
        assert _direct_get(server.url, version, key).status_code == 404
    for _ in range(5):
        with httpx.Client() as fresh:
            assert fresh.get(f"{server.url}/v1/{STORE}/{version}/0/a", timeout=3).status_code == 400
    expected = (before[0] + 40, before[1] + 3, before[2] + 5)
    wait_for(lambda: counts() == expected, 30, f"the counts to reach {expected}")


def test_a_killed_ingesting_process_takes_its_workers_along(cluster: LocalCluster) -> None:
    server = cluster.servers[0]
    port = _port(cluster)
    wait_for(lambda: len(_listeners(port)) == 3, 60, "three server processes listening")
    workers = _children(server.pid)
    server.kill()
    wait_for(lambda: all(_gone(w) for w in workers), 30, "the read workers to follow")
    wait_for(lambda: _listeners(port) == set(), 30, "the port to be free")


def test_on_a_closed_cluster_no_worker_answers_a_private_read_without_a_token(tmp_path: Path) -> None:
    """Only the ingesting process checks tokens (it learns which stores are private from
    the controller): on a cluster with a secret its read workers relay every read, so a
    read of a private store without a token is refused whichever process it lands on."""
    from venice.auth import Role, TokensFile, new_secret
    from venice.push.job import run_push

    tokens_file = tmp_path / "tokens.json"
    file = TokensFile(tokens_file)
    secret, admin, reader = new_secret(), file.create(Role.ADMIN)[0], file.create(Role.READER, STORE)[0]
    with LocalCluster(tmp_path / "cluster", servers=1, server_args={0: ["--workers", "3"]}, cluster_secret=secret,
                      tokens_file=tokens_file) as cluster:
        port = _port(cluster)
        wait_for(lambda: len(_listeners(port)) == 3, 60, "three server processes listening")
        auth = {"authorization": f"Bearer {admin}"}
        created = httpx.post(f"{cluster.controller_url}/stores", headers=auth, timeout=30, json={
            "name": STORE, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 4, "replication_factor": 1,
        })
        assert created.status_code == 201, created.text
        records = make_records(20, seed=5)
        run_push(cluster.controller_url, STORE, write_jsonl(tmp_path / "in.jsonl", records), key_field="id",
                 progress=False, timeout_s=120, token=admin)
        made = httpx.patch(f"{cluster.controller_url}/stores/{STORE}", headers=auth, json={"private": True}, timeout=10)
        assert made.status_code == 200, made.text
        server = cluster.servers[0]
        record = records[0]
        wait_for(lambda: _direct_get(server.url, 1, record["id"]).status_code == 401, 30, "the server to know the store is private")
        for _ in range(30):  # fresh connections: every process in turn
            assert _direct_get(server.url, 1, record["id"]).status_code == 401
            key_bytes = AvroCodec("long", kind="key").encode(record["id"])
            segment = base64.urlsafe_b64encode(key_bytes).rstrip(b"=").decode()
            with httpx.Client() as fresh:
                allowed = fresh.get(f"{server.url}/v1/{STORE}/1/{partition_for(key_bytes, 4)}/{segment}",
                                    headers={"authorization": f"Bearer {reader}"}, timeout=3)
            assert allowed.status_code == 200 and allowed.content == _value(record)
