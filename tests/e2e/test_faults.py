"""Faults under load on real processes: a server SIGKILLed, hung (SIGSTOP) and
restarted, the controller restarted, the Kafka broker restarted mid-ingestion."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import create_store, make_records, push, push_process, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster, ManagedProcess, wait_for
from venice.partitioner import partition_for
from venice.schema import AvroCodec
from venice.testing.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

DEAD_AFTER_S = 2.0


class ReadLoad:
    """Several clients reading existing keys through the router, timing every read."""

    def __init__(self, router_url: str, store: str, expected: dict[int, Any], clients: int = 4) -> None:
        self.router_url, self.store, self.expected, self.clients = router_url, store, expected, clients
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._keys = list(expected)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> ReadLoad:
        self._thread.start()
        wait_for(lambda: len(self.latencies) > 50, 10, "read load to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def mark(self) -> int:
        return len(self.latencies)

    def p99_ms(self, start: int, end: int) -> float:
        """p99 latency in ms of the reads between two :meth:`mark` calls."""
        return statistics.quantiles(self.latencies[start:end], n=100)[98] * 1000

    async def _run(self) -> None:
        async with venice.AsyncClient(self.router_url, timeout=10) as client:
            await asyncio.gather(*(self._reader(client, random.Random(i)) for i in range(self.clients)))

    async def _reader(self, client: venice.AsyncClient, rng: random.Random) -> None:
        while not self._stop.is_set():
            key = rng.choice(self._keys)
            started = time.perf_counter()
            try:
                value = await client.get(self.store, key)
            except venice.VeniceError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            self.latencies.append(time.perf_counter() - started)
            if value != self.expected[key]:
                self.failures.append(f"key {key}: {value!r}")


@pytest.fixture
def cluster(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "c", servers=3, pubsub_url=kafka_broker.url, dead_after_s=DEAD_AFTER_S) as cluster:
        yield cluster


def _loaded(cluster: LocalCluster, tmp_path: Path, store: str, count: int = 3000) -> dict[int, Any]:
    create_store(cluster.controller_url, store, partitions=6, replication_factor=2)
    records = make_records(count, seed=31)
    result = push(cluster.controller_url, store, write_jsonl(tmp_path / f"{store}.jsonl", records))
    assert result.returncode == 0, result.stderr
    wait_router_serves(cluster.router_url, store, records[0]["id"])
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in records}


def _replication(cluster: LocalCluster, store: str) -> dict[str, list[str]]:
    table = httpx.get(f"{cluster.controller_url}/routing", timeout=5).json()["stores"][store]
    return dict(table["versions"][str(table["current_version"])]["partitions"])


def _fully_replicated_without(cluster: LocalCluster, store: str, gone: ManagedProcess) -> bool:
    partitions = _replication(cluster, store)
    return all(len(urls) == 2 and gone.url not in urls for urls in partitions.values())


def _replicas(server: ManagedProcess, store: str) -> dict[int, dict[str, Any]]:
    body = httpx.get(f"{server.url}/admin/replicas", timeout=5).json()
    return {r["partition"]: r for r in body["replicas"] if r["store"] == store}


def test_server_killed_then_restarted_under_load(cluster: LocalCluster, tmp_path: Path) -> None:
    expected = _loaded(cluster, tmp_path, "kill9")
    victim = cluster.servers[0]
    held = set(_replicas(victim, "kill9"))
    assert held, "the victim hosts some partitions"
    with ReadLoad(cluster.router_url, "kill9", expected) as load:
        victim.kill()
        killed_at = time.monotonic()
        # Back to R=2 by itself: the dead server's replicas move to the others.
        wait_for(lambda: _fully_replicated_without(cluster, "kill9", victim), 30, "R=2 without the dead server")
        healed_s = time.monotonic() - killed_at
        victim.start()
        victim.wait_healthy()
        # It resumes from its checkpoints: ready again without re-ingesting anything.
        wait_for(lambda: set(_replicas(victim, "kill9")) >= held and all(
            r["status"] == "READY" for r in _replicas(victim, "kill9").values()), 30, "victim ready again")
        for partition in held:
            assert _replicas(victim, "kill9")[partition]["ingested"] == 0, "re-ingested after restart"
        wait_for(lambda: any(victim.url in urls for urls in _replication(cluster, "kill9").values()), 15, "routed again")
        time.sleep(0.5)
    print(f"\nSIGKILL: {len(load.latencies)} reads, {len(load.failures)} failed, back to R=2 after {healed_s:.1f} s")
    assert load.failures == []


def test_hung_server_costs_no_reads_and_little_latency(cluster: LocalCluster, tmp_path: Path) -> None:
    expected = _loaded(cluster, tmp_path, "hung")
    victim = cluster.servers[1]
    with ReadLoad(cluster.router_url, "hung", expected) as load:
        time.sleep(1.0)
        start = load.mark()
        victim.signal(signal.SIGSTOP)
        try:
            time.sleep(4.0)
        finally:
            victim.signal(signal.SIGCONT)
        during = load.mark()
        time.sleep(1.0)
    p99_ms = load.p99_ms(start, during)
    print(f"\nSIGSTOP 4 s: {during - start} reads while hung, p99 {p99_ms:.1f} ms, {len(load.failures)} failed")
    assert load.failures == []
    assert during - start > 100  # reads kept flowing while a replica hung (its p99 is printed, not asserted)


def test_controller_restart_costs_no_reads(cluster: LocalCluster, tmp_path: Path) -> None:
    expected = _loaded(cluster, tmp_path, "ctl")
    before = httpx.get(f"{cluster.controller_url}/stores/ctl").json()
    with ReadLoad(cluster.router_url, "ctl", expected) as load:
        cluster.controller.kill()
        time.sleep(2.0)  # routers serve from their cached table meanwhile
        served_while_down = load.mark()
        cluster.controller.start()
        cluster.controller.wait_healthy()
        cluster.wait_servers_alive(3)
        time.sleep(1.0)
    assert load.failures == []
    assert served_while_down > 50
    assert httpx.get(f"{cluster.controller_url}/stores/ctl").json() == before


def test_broker_restart_mid_ingestion_keeps_exact_counts(kafka_required: None, tmp_path: Path) -> None:
    with KafkaBroker(tmp_path / "broker") as broker, LocalCluster(
        tmp_path / "c", servers=2, pubsub_url=broker.url
    ) as cluster:
        create_store(cluster.controller_url, "bounce", partitions=4, replication_factor=2)
        records = make_records(150_000, seed=41)
        pusher = push_process(cluster.controller_url, "bounce", write_jsonl(tmp_path / "big.jsonl", records))
        try:
            wait_for(lambda: sum(r["records"] for r in _replicas(cluster.servers[0], "bounce").values()) > 5_000,
                     120, "ingestion under way", interval_s=0.05)
            assert any(r["status"] == "STARTED" for r in _replicas(cluster.servers[0], "bounce").values())
            broker.restart()
            _, err = pusher.communicate(timeout=300)
            assert pusher.returncode == 0, err
        finally:
            if pusher.poll() is None:
                pusher.kill()
                pusher.wait()
        codec = AvroCodec("long", kind="key")
        expected = dict.fromkeys(range(4), 0)
        for record in records:
            expected[partition_for(codec.encode(record["id"]), 4)] += 1
        for server in cluster.servers:
            replicas = _replicas(server, "bounce")
            assert {p: r["lmdb_entries"] for p, r in replicas.items()} == expected
            assert {p: r["records"] for p, r in replicas.items()} == expected
