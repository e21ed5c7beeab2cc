"""End-to-end fixtures: real controller, servers and router processes on loopback,
on a real Kafka broker (or the embedded log), with real LMDB files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from venice.cluster import LocalCluster, wait_for

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "MemberFeatures",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "visits", "type": "int"},
        {"name": "embedding", "type": {"type": "array", "items": "double"}},
        {"name": "country", "type": ["null", "string"], "default": None},
    ],
}


def make_records(count: int, *, seed: int = 7, start: int = 1) -> list[dict[str, Any]]:
    """``count`` member-feature records with unique long keys ``id``."""
    rng = random.Random(seed)
    records = []
    for i in range(start, start + count):
        records.append(
            {
                "id": i * 7919,
                "name": f"member-{i}",
                "score": round(rng.random() * 100, 6),
                "visits": rng.randrange(0, 1000),
                "embedding": [round(rng.uniform(-1, 1), 6) for _ in range(4)],
                "country": rng.choice(["US", "FR", "IN", None]),
            }
        )
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def venice_cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``venice`` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "venice", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def create_store(controller_url: str, name: str, *, partitions: int = 4, replication_factor: int = 2) -> None:
    response = httpx.post(
        f"{controller_url}/stores",
        json={
            "name": name,
            "key_schema": "long",
            "value_schema": VALUE_SCHEMA,
            "partitions": partitions,
            "replication_factor": replication_factor,
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text


def push(controller_url: str, store: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return venice_cli(
        "push", "--controller", controller_url, "--store", store, "--input", str(path), "--key-field", "id",
        "--no-progress", *extra,
    )


def push_process(controller_url: str, store: str, path: Path) -> subprocess.Popen[str]:
    """A ``venice push`` running in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "venice", "push", "--controller", controller_url, "--store", store,
         "--input", str(path), "--key-field", "id", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def version_info(controller_url: str, store: str, number: int) -> dict[str, Any]:
    return dict(httpx.get(f"{controller_url}/stores/{store}/versions/{number}", timeout=5).json())


def wait_router_serves(router_url: str, store: str, key: Any, timeout_s: float = 15) -> None:
    """Routers learn of a new current version by long-polling the controller: wait for it."""
    wait_for(
        lambda: httpx.get(f"{router_url}/storage/{store}/{key}", timeout=5).status_code == 200,
        timeout_s,
        f"router to serve {store}",
    )


def current_version(controller_url: str, store: str) -> int | None:
    return httpx.get(f"{controller_url}/stores/{store}", timeout=5).json()["current_version"]


def _cluster(
    tmp_path_factory: pytest.TempPathFactory, name: str, pubsub_url: str | None, servers: int, routers: int = 1
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp(name), servers=servers, routers=routers, pubsub_url=pubsub_url)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_cluster(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Controller, 2 servers and 2 routers on the session's Kafka broker."""
    yield from _cluster(tmp_path_factory, "kafka-cluster", kafka_broker.url, servers=2, routers=2)


@pytest.fixture(scope="session")
def embedded_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Controller, 2 servers and a router on the embedded log."""
    yield from _cluster(tmp_path_factory, "embedded-cluster", None, servers=2)
