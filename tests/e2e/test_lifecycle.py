"""Version lifecycle on a real cluster: atomic swaps under read load, rollback, swap,
deferred swap, kill, empty pushes, reads by version, retention, and failed pushes that
never reach readers."""

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
from tests.e2e.conftest import (
    create_store,
    current_version,
    make_records,
    push,
    push_process,
    venice_cli,
    version_info,
    wait_router_serves,
    write_jsonl,
)
from venice.cluster import LocalCluster, wait_for
from venice.pubsub import connect

pytestmark = pytest.mark.kafka


def _versioned(records: list[dict[str, Any]], number: int) -> list[dict[str, Any]]:
    """The same keys with values that say which version they belong to."""
    return [{**r, "name": f"v{number}-{r['id']}"} for r in records]


def _cli_ok(*args: str) -> str:
    result = venice_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _topics(cluster: LocalCluster) -> set[str]:
    async def topics() -> set[str]:
        async with connect(cluster.pubsub_url) as pubsub:
            return await pubsub.list_topics()

    return asyncio.run(topics())


def _server_dirs(cluster: LocalCluster, prefix: str) -> list[str]:
    """Store-versions with files on the servers, by topic (a directory is ``<topic>-<incarnation>``)."""
    return sorted(
        p.name.rpartition("-")[0] for s in cluster.servers for p in (cluster.data_dir / s.name / "versions").glob(f"{prefix}*")
    )


class _ReadLoad:
    """Readers hammering every router with single and batch gets until stopped."""

    def __init__(self, routers: list[str], store: str, keys: list[int], readers: int = 4) -> None:
        self.routers, self.store, self.keys, self.readers = routers, store, keys, readers
        self.reads = self.batches = 0
        self.failures: list[str] = []
        self.mixed: list[set[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> _ReadLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        clients = [venice.AsyncClient(url) for url in self.routers]
        try:
            await asyncio.gather(*(self._reader(clients[i % len(clients)], random.Random(i)) for i in range(self.readers)))
        finally:
            for client in clients:
                await client.close()

    async def _reader(self, client: venice.AsyncClient, rng: random.Random) -> None:
        while not self._stop.is_set():
            try:
                value = await client.get(self.store, rng.choice(self.keys))
                self.reads += 1
                if value is None:
                    self.failures.append("an existing key read as missing")
                values = await client.batch_get(self.store, rng.sample(self.keys, 50))
                self.batches += 1
                versions = {v["name"].split("-")[0] for v in values if v is not None}
                if None in values:
                    self.failures.append("an existing key missing from a batch")
                if len(versions) != 1:
                    self.mixed.append(versions)
            except venice.VeniceError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


def test_five_pushes_under_read_load_then_rollback_on_every_router(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller = kafka_cluster.controller_url
    routers = [r.url for r in kafka_cluster.routers]
    create_store(controller, "swapped", partitions=4, replication_factor=2)
    base = make_records(2_000, seed=21)
    assert push(controller, "swapped", write_jsonl(tmp_path / "v1.jsonl", _versioned(base, 1))).returncode == 0
    for url in routers:
        wait_router_serves(url, "swapped", base[0]["id"])

    with _ReadLoad(routers, "swapped", [r["id"] for r in base]) as load:
        for number in range(2, 7):
            path = write_jsonl(tmp_path / f"v{number}.jsonl", _versioned(base, number))
            result = push(controller, "swapped", path)
            assert result.returncode == 0, result.stderr
        time.sleep(1.0)  # reads of the last version, too
    assert load.failures == []
    assert load.mixed == [], "a batch get mixed versions"
    assert load.reads > 100 and load.batches > 100
    assert current_version(controller, "swapped") == 6

    # Rollback reaches every router within one routing refresh (a long poll answers at once).
    key = base[0]["id"]
    started = time.monotonic()
    _cli_ok("version", "rollback", "--controller", controller, "--store", "swapped")
    for url in routers:
        wait_for(lambda u=url: httpx.get(f"{u}/storage/swapped/{key}").json()["name"] == f"v5-{key}", 5, "rollback")
    elapsed = time.monotonic() - started
    print(f"\nrollback visible on {len(routers)} routers after {elapsed * 1000:.0f} ms")


def test_version_commands_swap_defer_empty_and_retention(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    create_store(controller, "versions", partitions=2, replication_factor=2)
    base = make_records(300, seed=4)
    key = base[0]["id"]
    for number in (1, 2):
        assert push(controller, "versions", write_jsonl(tmp_path / f"{number}.jsonl", _versioned(base, number))).returncode == 0
    listing = _cli_ok("version", "list", "--controller", controller, "--store", "versions")
    lines = listing.splitlines()
    assert lines[0].split()[:4] == ["VERSION", "STATUS", "RECORDS", "PUSHED"]
    assert lines[2].startswith("*") and " 2 " in lines[2] and "ONLINE" in lines[2] and "300" in lines[2]

    with venice.Client(router) as client:
        _cli_ok("version", "rollback", "--controller", controller, "--store", "versions")
        wait_for(lambda: client.get("versions", key)["name"] == f"v1-{key}", 5, "rollback to v1")
        _cli_ok("version", "swap", "--controller", controller, "--store", "versions", "--version", "2")
        wait_for(lambda: client.get("versions", key)["name"] == f"v2-{key}", 5, "swap to v2")

        out = push(controller, "versions", write_jsonl(tmp_path / "3.jsonl", _versioned(base, 3)), "--defer-swap")
        assert out.returncode == 0 and "not current" in out.stdout
        assert current_version(controller, "versions") == 2
        assert client.get("versions", key)["name"] == f"v2-{key}"
        wait_for(lambda: client.get("versions", key, version=3) is not None, 5, "router to learn v3")
        assert client.get("versions", key, version=3)["name"] == f"v3-{key}"

        # v3 ONLINE besides current v2: with two versions kept, v1 is retired.
        assert version_info(controller, "versions", 1)["status"] == "RETIRED"
        wait_for(lambda: httpx.get(f"{router}/storage/versions/{key}?version=1").status_code == 410, 5, "v1 retired")
        assert httpx.get(f"{router}/storage/versions/{key}?version=1").json()["error"]["code"] == "VERSION_RETIRED"
        assert httpx.get(f"{router}/storage/versions/{key}?version=99").json()["error"]["code"] == "VERSION_NOT_FOUND"
        with pytest.raises(venice.VersionRetiredError):
            client.get("versions", key, version=1)
        wait_for(lambda: "versions_v1" not in _topics(kafka_cluster), 10, "v1's topic deleted")
        wait_for(lambda: "versions_v1" not in _server_dirs(kafka_cluster, "versions_v1"), 10, "v1's files removed")
        assert _server_dirs(kafka_cluster, "versions_v") == ["versions_v2", "versions_v2", "versions_v3", "versions_v3"]

        _cli_ok("version", "swap", "--controller", controller, "--store", "versions", "--version", "3")
        wait_for(lambda: client.get("versions", key)["name"] == f"v3-{key}", 5, "swap to v3")

        # An ONLINE version cannot be killed; an unknown one is an error too.
        result = venice_cli("version", "kill", "--controller", controller, "--store", "versions", "--version", "3")
        assert result.returncode == 1 and "STARTED" in result.stderr

        # Retention is per store: keep three, then an empty push clears the store.
        _cli_ok("store", "update", "--controller", controller, "versions", "--keep-versions", "3")
        _cli_ok("push", "--controller", controller, "--store", "versions", "--empty", "--no-progress")
        wait_for(lambda: client.get("versions", key) is None, 5, "empty version current")
        assert [v["status"] for v in httpx.get(f"{controller}/stores/versions").json()["versions"]] == [
            "RETIRED", "ONLINE", "ONLINE", "ONLINE"
        ]
        assert client.get("versions", key, version=3)["name"] == f"v3-{key}"


def test_killing_a_running_push(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller = kafka_cluster.controller_url
    create_store(controller, "killed", partitions=4, replication_factor=2)
    base = make_records(100, seed=6)
    assert push(controller, "killed", write_jsonl(tmp_path / "v1.jsonl", _versioned(base, 1))).returncode == 0
    big = write_jsonl(tmp_path / "v2.jsonl", _versioned(make_records(300_000, seed=6), 2))
    pusher = push_process(controller, "killed", big)
    try:
        wait_for(lambda: len(httpx.get(f"{controller}/stores/killed").json()["versions"]) == 2, 60, "v2 opened")
        _cli_ok("version", "kill", "--controller", controller, "--store", "killed", "--version", "2")
        _, err = pusher.communicate(timeout=120)
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.wait()
    assert pusher.returncode != 0 and "KILLED" in err
    assert version_info(controller, "killed", 2)["status"] == "KILLED"
    assert current_version(controller, "killed") == 1
    wait_for(lambda: "killed_v2" not in _topics(kafka_cluster), 15, "killed topic deleted")
    wait_for(lambda: not _server_dirs(kafka_cluster, "killed_v2"), 15, "killed version's files removed")
    with venice.Client(kafka_cluster.router_url) as client:
        assert client.get("killed", base[0]["id"])["name"] == f"v1-{base[0]['id']}"


def test_push_killed_with_sigkill_times_out_to_error(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller = kafka_cluster.controller_url
    create_store(controller, "abandoned", partitions=4, replication_factor=2)
    base = make_records(100, seed=8)
    assert push(controller, "abandoned", write_jsonl(tmp_path / "v1.jsonl", _versioned(base, 1))).returncode == 0
    _cli_ok("store", "update", "--controller", controller, "abandoned", "--push-timeout", "4")
    pusher = push_process(controller, "abandoned", write_jsonl(tmp_path / "v2.jsonl", _versioned(make_records(300_000), 2)))
    try:
        wait_for(lambda: len(httpx.get(f"{controller}/stores/abandoned").json()["versions"]) == 2, 60, "v2 opened")
        time.sleep(0.5)  # halfway through writing
        pusher.send_signal(signal.SIGKILL)
        pusher.wait(10)
    finally:
        if pusher.stdout:
            pusher.stdout.close()
        if pusher.stderr:
            pusher.stderr.close()
    assert version_info(controller, "abandoned", 2)["status"] == "STARTED"
    wait_for(lambda: version_info(controller, "abandoned", 2)["status"] == "ERROR", 20, "push timeout")
    assert "timed out" in version_info(controller, "abandoned", 2)["reason"]
    assert current_version(controller, "abandoned") == 1
    wait_for(lambda: "abandoned_v2" not in _topics(kafka_cluster), 15, "abandoned topic deleted")
    wait_for(lambda: not _server_dirs(kafka_cluster, "abandoned_v2"), 15, "abandoned version's files removed")


@pytest.fixture
def small_disk_cluster(kafka_broker: Any, tmp_path: Path) -> Iterator[LocalCluster]:
    """server-0's LMDB may hold at most 1 MiB per store-version: a disk that fills up."""
    with LocalCluster(
        tmp_path / "cluster", servers=2, pubsub_url=kafka_broker.url, server_args={0: ["--lmdb-map-size", str(1 << 20)]}
    ) as cluster:
        yield cluster


def test_a_server_failing_to_write_fails_the_push_and_keeps_current(small_disk_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = small_disk_cluster
    create_store(cluster.controller_url, "full", partitions=2, replication_factor=2)
    base = make_records(200, seed=9)
    assert push(cluster.controller_url, "full", write_jsonl(tmp_path / "v1.jsonl", _versioned(base, 1))).returncode == 0
    wait_router_serves(cluster.router_url, "full", base[0]["id"])
    result = push(cluster.controller_url, "full", write_jsonl(tmp_path / "v2.jsonl", _versioned(make_records(30_000), 2)))
    assert result.returncode == 1
    assert "server-0" in result.stderr and "LMDB" in result.stderr, result.stderr
    assert version_info(cluster.controller_url, "full", 2)["status"] == "ERROR"
    assert current_version(cluster.controller_url, "full") == 1
    with venice.Client(cluster.router_url) as client:
        assert client.batch_get("full", [r["id"] for r in base]) == [
            {k: v for k, v in r.items() if k != "id"} for r in _versioned(base, 1)
        ]
