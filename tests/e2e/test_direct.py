"""The direct client on a real cluster on the real Kafka broker: the pushed values, a
swap and a rollback followed through the router's routing table, and no failed read
while a storage server is killed (SIGKILL) or hangs (SIGSTOP) under load."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import create_store, make_records, push, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def cluster(kafka_broker: Any, tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "c", servers=2, pubsub_url=kafka_broker.url, dead_after_s=2.0) as cluster:
        yield cluster


def versioned(records: list[dict[str, Any]], number: int) -> dict[int, dict[str, Any]]:
    return {r["id"]: {**{k: v for k, v in r.items() if k != "id"}, "name": f"v{number}-{r['id']}"} for r in records}


def push_ok(cluster: LocalCluster, store: str, values: dict[int, dict[str, Any]], path: Path) -> None:
    result = push(cluster.controller_url, store, write_jsonl(path, [{"id": k, **v} for k, v in values.items()]))
    assert result.returncode == 0, result.stderr[-2000:]


class Load:
    """Sync direct clients on threads and an async one, reading all the time; every read
    must succeed with the expected value."""

    def __init__(self, router_url: str, store: str, expected: dict[int, dict[str, Any]]) -> None:
        self.router_url, self.store, self.expected = router_url, store, expected
        self.keys = sorted(expected)
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sync, args=(i,), daemon=True) for i in range(2)]
        self._threads.append(threading.Thread(target=lambda: asyncio.run(self._async()), daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.reads > 200, 30, "reads to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _check(self, key: int, value: Any) -> None:
        if value != self.expected[key]:
            self.failures.append(f"key {key}: {value!r}")
        self.reads += 1

    def _sync(self, seed: int) -> None:
        rng = random.Random(seed)
        with venice.Client(self.router_url, direct=True) as client:
            while not self._stop.is_set():
                try:
                    if seed == 0:
                        keys = rng.sample(self.keys, 10)
                        for key, value in zip(keys, client.batch_get(self.store, keys), strict=True):
                            self._check(key, value)
                    else:
                        key = rng.choice(self.keys)
                        self._check(key, client.get(self.store, key))
                except venice.VeniceError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    async def _async(self) -> None:
        rng = random.Random(7)
        async with venice.AsyncClient(self.router_url, direct=True) as client:
            while not self._stop.is_set():
                key = rng.choice(self.keys)
                try:
                    self._check(key, await client.get(self.store, key))
                except venice.VeniceError as exc:
                    self.failures.append(f"async {type(exc).__name__}: {exc}")


def test_no_failed_read_while_a_server_is_killed_or_hangs(cluster: LocalCluster, tmp_path: Path) -> None:
    records = make_records(300, seed=21)
    expected = versioned(records, 1)
    create_store(cluster.controller_url, "direct-kill", partitions=4, replication_factor=2)
    push_ok(cluster, "direct-kill", expected, tmp_path / "v1.jsonl")
    wait_router_serves(cluster.router_url, "direct-kill", records[0]["id"])
    with Load(cluster.router_url, "direct-kill", expected) as load:
        cluster.servers[0].kill()
        mark = load.reads
        wait_for(lambda: load.reads > mark + 3000, 60, "reads after the kill")
        cluster.servers[0].start()
        cluster.servers[0].wait_healthy()
        wait_for(lambda: len(httpx.get(f"{cluster.router_url}/routing", timeout=5).json()["stores"]["direct-kill"]["versions"]["1"]["partitions"]["0"]) == 2,
                 60, "the restarted server to serve again")
        cluster.servers[1].signal(signal.SIGSTOP)  # hangs: reads hedge to the other replica
        try:
            mark = load.reads
            wait_for(lambda: load.reads > mark + 1000, 60, "reads while a server hangs")
        finally:
            cluster.servers[1].signal(signal.SIGCONT)
        mark = load.reads
        wait_for(lambda: load.reads > mark + 500, 60, "reads after")
    assert load.failures == []


def test_swaps_and_rollbacks_are_followed(cluster: LocalCluster, tmp_path: Path) -> None:
    records = make_records(100, seed=23)
    v1, v2 = versioned(records, 1), versioned(records, 2)
    create_store(cluster.controller_url, "direct-swap", partitions=2, replication_factor=2)
    push_ok(cluster, "direct-swap", v1, tmp_path / "v1.jsonl")
    wait_router_serves(cluster.router_url, "direct-swap", records[0]["id"])
    key = records[0]["id"]
    with venice.Client(cluster.router_url, direct=True) as client:
        wait_for(lambda: client.get("direct-swap", key) == v1[key], 30, "v1 through the direct client")
        assert client.batch_get("direct-swap", list(v1)) == list(v1.values())
        assert client.get("direct-swap", -5) is None
        push_ok(cluster, "direct-swap", v2, tmp_path / "v2.jsonl")
        started = time.monotonic()
        wait_for(lambda: client.get("direct-swap", key) == v2[key], 30, "the direct client to read v2")
        print(f"\nswap seen by the direct client after {time.monotonic() - started:.2f} s")
        assert client.batch_get("direct-swap", list(v2)) == list(v2.values())
        assert client.get("direct-swap", key, version=1) == v1[key]
        answer = httpx.post(f"{cluster.controller_url}/stores/direct-swap/rollback", timeout=10)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: client.get("direct-swap", key) == v1[key], 30, "the direct client to follow the rollback")
        assert client.batch_get("direct-swap", list(v1)) == list(v1.values())
