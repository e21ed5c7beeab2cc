"""Crash safety: a storage server SIGKILLed mid-ingestion, and a controller restart."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import VALUE_SCHEMA, create_store, make_records, push, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster, wait_for
from venice.partitioner import partition_for
from venice.schema import AvroCodec

pytestmark = pytest.mark.kafka


@pytest.fixture
def cluster(kafka_broker: Any, tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own: these tests kill its processes."""
    with LocalCluster(tmp_path / "cluster", servers=2, pubsub_url=kafka_broker.url) as cluster:
        yield cluster


def _replicas(server_url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server_url}/admin/replicas", timeout=5).json()["replicas"])


def _expected_per_partition(records: list[dict[str, Any]], partitions: int) -> dict[int, int]:
    codec = AvroCodec("long", kind="key")
    counts = dict.fromkeys(range(partitions), 0)
    for record in records:
        counts[partition_for(codec.encode(record["id"]), partitions)] += 1
    return counts


def test_server_killed_mid_ingestion_resumes_exactly(cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(cluster.controller_url, "crash", partitions=4, replication_factor=2)
    records = make_records(150_000, seed=5)
    path = write_jsonl(tmp_path / "big.jsonl", records)
    pusher = subprocess.Popen(
        [sys.executable, "-m", "venice", "push", "--controller", cluster.controller_url, "--store", "crash",
         "--input", str(path), "--key-field", "id", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    victim = cluster.servers[0]
    try:
        def mid_ingestion() -> list[dict[str, Any]] | None:
            replicas = [r for r in _replicas(victim.url) if r["store"] == "crash"]
            applied = sum(r["records"] for r in replicas)
            return replicas if applied > 5_000 and len(replicas) == 4 else None

        at_kill = wait_for(mid_ingestion, 120, "server-0 to be ingesting", interval_s=0.02)
        victim.kill()
        assert any(r["status"] == "STARTED" for r in at_kill), "ingestion had already finished"
        victim.start()
        victim.wait_healthy()
        _out, err = pusher.communicate(timeout=300)
        assert pusher.returncode == 0, err
    finally:
        if pusher.poll() is None:
            pusher.kill()

    expected = _expected_per_partition(records, 4)
    for server in cluster.servers:
        replicas = {r["partition"]: r for r in _replicas(server.url) if r["store"] == "crash"}
        assert sorted(replicas) == [0, 1, 2, 3]
        for partition, replica in replicas.items():
            assert replica["status"] == "READY"
            assert replica["lmdb_entries"] == expected[partition], (server.name, partition)
            assert replica["records"] == expected[partition], "a record was applied twice or lost"
            # start-of-push + records + end-of-push
            assert replica["offset"] == expected[partition] + 2
    wait_router_serves(cluster.router_url, "crash", records[0]["id"])
    with venice.Client(cluster.router_url) as client:
        sample = records[::997]
        assert client.batch_get("crash", [r["id"] for r in sample]) == [
            {k: v for k, v in r.items() if k != "id"} for r in sample
        ]


def test_controller_restart_keeps_stores_versions_and_assignment(cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(cluster.controller_url, "durable", partitions=3, replication_factor=2)
    records = make_records(500, seed=8)
    assert push(cluster.controller_url, "durable", write_jsonl(tmp_path / "a.jsonl", records)).returncode == 0
    wait_router_serves(cluster.router_url, "durable", records[0]["id"])
    before_store = httpx.get(f"{cluster.controller_url}/stores/durable").json()
    before_version = httpx.get(f"{cluster.controller_url}/stores/durable/versions/1").json()
    before_routing = httpx.get(f"{cluster.controller_url}/routing").json()

    cluster.controller.signal(signal.SIGKILL)
    cluster.controller.popen.wait()  # type: ignore[union-attr]
    cluster.controller.start()
    cluster.controller.wait_healthy()

    assert httpx.get(f"{cluster.controller_url}/stores/durable").json() == before_store
    after_version = httpx.get(f"{cluster.controller_url}/stores/durable/versions/1").json()
    assert after_version == before_version
    after_routing = httpx.get(f"{cluster.controller_url}/routing").json()
    assert after_routing["stores"] == before_routing["stores"]
    assert after_routing["generation"] > before_routing["generation"]
    assert before_store["value_schemas"]["1"] == VALUE_SCHEMA

    # The restarted controller takes a new push, and the router serves it.
    cluster.wait_servers_alive(2)
    newer = [{**r, "name": "v2"} for r in records]
    assert push(cluster.controller_url, "durable", write_jsonl(tmp_path / "b.jsonl", newer)).returncode == 0
    with venice.Client(cluster.router_url) as client:
        wait_for(lambda: client.get("durable", records[0]["id"])["name"] == "v2", 15, "router to serve v2")
