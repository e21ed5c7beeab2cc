"""Da Vinci clients against a real cluster on the real Kafka broker: values as pushed,
swaps and rollbacks followed under concurrent reads, a storage server killed while it
reads, a restart that serves local data before catching up, partitions, a directory
shared read-only with other processes, and hostile set-ups."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import create_store, make_records, push, write_jsonl
from venice.cluster import LocalCluster, wait_for
from venice.davinci.state import STATE_NAME
from venice.partitioner import partition_for
from venice.schema import AvroCodec

pytestmark = pytest.mark.kafka

KEYS = AvroCodec("long", kind="key")


@pytest.fixture(scope="module")
def cluster(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("davinci"), servers=2, pubsub_url=kafka_broker.url) as cluster:
        yield cluster


def versioned(records: list[dict[str, Any]], number: int) -> list[dict[str, Any]]:
    """The same keys with values that say which push they came from."""
    return [{**r, "name": f"v{number}-{r['id']}", "visits": number} for r in records]


def value_of(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "id"}


def push_ok(cluster: LocalCluster, store: str, records: list[dict[str, Any]], path: Path) -> None:
    result = push(cluster.controller_url, store, write_jsonl(path, records))
    assert result.returncode == 0, result.stderr[-2000:]


class Readers:
    """Threads reading through one Da Vinci client all the time: every answer must be one
    of the pushed versions' values, and a batch all of one version."""

    def __init__(self, dv: venice.DaVinciClient, versions: dict[int, dict[int, dict[str, Any]]]) -> None:
        self.dv, self.versions = dv, versions
        self.keys = sorted(next(iter(versions.values())))
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(3)]

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            try:
                if seed == 0:
                    keys = rng.sample(self.keys, 20)
                    got = self.dv.batch_get(keys)
                    if not any(all(got[i] == v[k] for i, k in enumerate(keys)) for v in self.versions.values()):
                        self.failures.append(f"batch mixes versions: {[g['visits'] for g in got if g]}")
                else:
                    key = rng.choice(self.keys)
                    value = self.dv.get(key)
                    if not any(value == v[key] for v in self.versions.values()):
                        self.failures.append(f"key {key}: {value!r}")
                self.reads += 1
            except venice.VeniceError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


def test_values_swaps_rollbacks_and_a_killed_server_under_concurrent_reads(cluster: LocalCluster, tmp_path: Path) -> None:
    base = make_records(400, seed=3)
    v1, v2 = versioned(base, 1), versioned(base, 2)
    expected = {1: {r["id"]: value_of(r) for r in v1}, 2: {r["id"]: value_of(r) for r in v2}}
    create_store(cluster.controller_url, "dv-follow", partitions=4, replication_factor=2)
    push_ok(cluster, "dv-follow", v1, tmp_path / "v1.jsonl")

    with venice.DaVinciClient(cluster.controller_url, "dv-follow", data_dir=tmp_path / "dv") as dv:
        assert dv.version == 1
        assert all(dv.get(k) == v for k, v in expected[1].items())
        assert dv.get(-1) is None and dv.get(0) is None
        keys = [v1[5]["id"], 424242, v1[0]["id"], v1[5]["id"]]
        assert dv.batch_get(keys) == [expected[1][keys[0]], None, expected[1][keys[2]], expected[1][keys[0]]]
        assert dv.batch_get([]) == []

        with Readers(dv, expected) as readers:
            push_ok(cluster, "dv-follow", v2, tmp_path / "v2.jsonl")
            wait_for(lambda: dv.version == 2, 60, "the client to swap to v2")
            assert all(dv.get(k) == v for k, v in expected[2].items())

            cluster.servers[0].kill()  # reads are local: a storage server's death costs nothing
            at_kill = readers.reads
            wait_for(lambda: readers.reads > at_kill + 500, 30, "reads after the kill")

            answer = httpx.post(f"{cluster.controller_url}/stores/dv-follow/rollback", timeout=10)
            assert answer.status_code == 200, answer.text
            # The backup was not kept here: it is ingested again, then swapped in.
            wait_for(lambda: dv.version == 1, 60, "the client to follow the rollback")
            assert all(dv.get(k) == v for k, v in expected[1].items())
            wait_for(lambda: readers.reads > at_kill + 2000, 30, "more reads")
        assert readers.failures == []
        assert readers.reads > 2000
    cluster.servers[0].start()
    cluster.servers[0].wait_healthy()


def test_restart_serves_local_data_before_catching_up(cluster: LocalCluster, tmp_path: Path) -> None:
    base = make_records(200, seed=5)
    v1, v2 = versioned(base, 1), versioned(base, 2)
    create_store(cluster.controller_url, "dv-restart", partitions=4, replication_factor=1)
    push_ok(cluster, "dv-restart", v1, tmp_path / "v1.jsonl")
    data_dir = tmp_path / "dv"
    with venice.DaVinciClient(cluster.controller_url, "dv-restart", data_dir=data_dir) as dv:
        assert dv.version == 1
    push_ok(cluster, "dv-restart", v2, tmp_path / "v2.jsonl")

    cluster.controller.signal(signal.SIGSTOP)  # nobody can tell the client about v2 for now
    try:
        dv = venice.DaVinciClient(cluster.controller_url, "dv-restart", data_dir=data_dir)
        try:
            # Constructed: already serving what it held, before any catch-up.
            assert dv.version == 1
            assert [dv.get(r["id"]) for r in v1] == [value_of(r) for r in v1]
            with pytest.raises(venice.DeadlineExceededError):
                dv.start(timeout=1.0)
        finally:
            cluster.controller.signal(signal.SIGCONT)
        dv.start(timeout=120)
        assert dv.version == 2
        assert [dv.get(r["id"]) for r in v2] == [value_of(r) for r in v2]
        # The old version's files are dropped by the client's next planning round after the swap.
        versions = data_dir / "dv-restart" / "versions"
        wait_for(lambda: [p.name.rpartition("-")[0] for p in versions.iterdir()] == ["dv-restart_v2"], 60,
                 "the client to drop v1's files")
        dv.close()
    finally:
        cluster.controller.signal(signal.SIGCONT)
    state = json.loads((data_dir / "dv-restart" / STATE_NAME).read_text())
    assert state["serving"] == 2
    # Only the served version's files remain.
    assert [p.name.rpartition("-")[0] for p in versions.iterdir()] == ["dv-restart_v2"]


def test_a_subset_of_partitions(cluster: LocalCluster, tmp_path: Path) -> None:
    records = make_records(200, seed=11)
    create_store(cluster.controller_url, "dv-parts", partitions=4, replication_factor=1)
    push_ok(cluster, "dv-parts", records, tmp_path / "v1.jsonl")
    mine = [r for r in records if partition_for(KEYS.encode(r["id"]), 4) in (1, 3)]
    others = [r for r in records if r not in mine]
    with venice.DaVinciClient(cluster.controller_url, "dv-parts", data_dir=tmp_path / "dv", partitions=[3, 1]) as dv:
        assert [dv.get(r["id"]) for r in mine] == [value_of(r) for r in mine]
        with pytest.raises(venice.NotSubscribedError, match="partition"):
            dv.get(others[0]["id"])
        with pytest.raises(venice.NotSubscribedError):
            dv.batch_get([mine[0]["id"], others[0]["id"]])
    versions_dir = tmp_path / "dv" / "dv-parts" / "versions"
    assert len(list(versions_dir.iterdir())) == 1
    with pytest.raises(venice.RequestError, match="partition"):
        with venice.DaVinciClient(cluster.controller_url, "dv-parts", data_dir=tmp_path / "dv2", partitions=[4], start_timeout_s=30):
            pass


READER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import venice
    data_dir, keys = sys.argv[1], json.loads(sys.argv[2])
    with venice.DaVinciClient("http://127.0.0.1:1", "dv-shared", data_dir=data_dir, read_only=True, start_timeout_s=60) as dv:
        print(json.dumps({"version": dv.version, "values": dv.batch_get(keys)}), flush=True)
        sys.stdin.readline()  # the writer swapped: follow it
        deadline = time.monotonic() + 60
        while dv.version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({"version": dv.version, "values": [dv.get(k) for k in keys]}), flush=True)
    """
)


def test_one_writer_and_read_only_processes_share_a_directory(cluster: LocalCluster, tmp_path: Path) -> None:
    base = make_records(100, seed=13)
    v1, v2 = versioned(base, 1), versioned(base, 2)
    keys = [r["id"] for r in base]
    create_store(cluster.controller_url, "dv-shared", partitions=2, replication_factor=1)
    push_ok(cluster, "dv-shared", v1, tmp_path / "v1.jsonl")
    data_dir = tmp_path / "shared"
    with venice.DaVinciClient(cluster.controller_url, "dv-shared", data_dir=data_dir) as writer:
        with pytest.raises(venice.ConflictError, match="read_only"):
            venice.DaVinciClient(cluster.controller_url, "dv-shared", data_dir=data_dir)
        readers = [
            subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(data_dir), json.dumps(keys)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
            for _ in range(2)
        ]
        try:
            for reader in readers:
                assert reader.stdout is not None
                first = json.loads(reader.stdout.readline() or "null")
                assert first == {"version": 1, "values": [value_of(r) for r in v1]}, reader.stderr
            push_ok(cluster, "dv-shared", v2, tmp_path / "v2.jsonl")
            wait_for(lambda: writer.version == 2, 60, "the writer to swap")
            for reader in readers:
                assert reader.stdin is not None and reader.stdout is not None
                reader.stdin.write("go\n")
                reader.stdin.flush()
                second = json.loads(reader.stdout.readline() or "null")
                assert second == {"version": 2, "values": [value_of(r) for r in v2]}
                assert reader.wait(30) == 0
        finally:
            for reader in readers:
                if reader.poll() is None:
                    reader.kill()
                reader.communicate()  # waits, and closes the pipes


def test_hostile_set_ups(cluster: LocalCluster, tmp_path: Path) -> None:
    records = make_records(20, seed=17)
    create_store(cluster.controller_url, "dv-hostile", partitions=2, replication_factor=1)
    create_store(cluster.controller_url, "dv-empty", partitions=2, replication_factor=1)
    push_ok(cluster, "dv-hostile", records, tmp_path / "v1.jsonl")

    # A torn or hand-edited state file is ignored: the client starts as on a new directory.
    (tmp_path / "dv" / "dv-hostile").mkdir(parents=True)
    (tmp_path / "dv" / "dv-hostile" / STATE_NAME).write_bytes(b'{"format": 1, "store": "dv-hostile", "assignm')
    with venice.DaVinciClient(cluster.controller_url, "dv-hostile", data_dir=tmp_path / "dv") as dv:
        assert dv.get(records[0]["id"]) == value_of(records[0])
        with pytest.raises(venice.InvalidKeyError):
            dv.get("not a long")
        with pytest.raises(venice.InvalidKeyError):
            dv.batch_get([1, None])
    with pytest.raises(venice.ReplicaNotReadyError, match="closed"):
        dv.get(records[0]["id"])

    with pytest.raises(venice.StoreNotFoundError):
        with venice.DaVinciClient(cluster.controller_url, "no-such-store", data_dir=tmp_path / "x", start_timeout_s=30):
            pass
    with pytest.raises(venice.NoCurrentVersionError):
        with venice.DaVinciClient(cluster.controller_url, "dv-empty", data_dir=tmp_path / "y", start_timeout_s=30):
            pass
    for name in ("", "..", "a/b", "x" * 400, 7):
        with pytest.raises(venice.RequestError):
            venice.DaVinciClient(cluster.controller_url, name, data_dir=tmp_path / "z")  # type: ignore[arg-type]
    with pytest.raises(venice.RequestError):
        venice.DaVinciClient(cluster.controller_url, "dv-hostile", data_dir=tmp_path / "z", partitions=["1"])  # type: ignore[list-item]
    # A read-only client with no writer in its directory waits, then says so.
    reader = venice.DaVinciClient(cluster.controller_url, "dv-hostile", data_dir=tmp_path / "nobody", read_only=True)
    try:
        with pytest.raises(venice.DeadlineExceededError):
            reader.start(timeout=0.5)
        with pytest.raises(venice.ReplicaNotReadyError):
            reader.get(1)
    finally:
        reader.close()


async def test_async_client_reads_computes_and_follows_a_push(cluster: LocalCluster, tmp_path: Path) -> None:
    """``AsyncDaVinciClient`` (docs/clients.md): the same local copy behind ``await``,
    checked against the records pushed, and a new version followed while it is open."""
    base = make_records(120, seed=19)
    v1, v2 = versioned(base, 1), versioned(base, 2)
    create_store(cluster.controller_url, "dv-async", partitions=3, replication_factor=1)
    # Pushes block (a `venice push` process): off the event loop, which keeps serving reads.
    await asyncio.to_thread(push_ok, cluster, "dv-async", v1, tmp_path / "v1.jsonl")
    vector = [0.5, -1.0, 2.0, 0.25]

    async with venice.AsyncDaVinciClient(cluster.controller_url, "dv-async", data_dir=tmp_path / "dv") as dv:
        assert dv.version == 1
        assert [await dv.get(r["id"]) for r in v1] == [value_of(r) for r in v1]
        assert await dv.get(424242) is None
        keys = [v1[7]["id"], 424242, v1[0]["id"]]
        assert await dv.batch_get(keys) == [value_of(v1[7]), None, value_of(v1[0])]
        computed = await dv.compute(
            keys, project=["name"],
            compute=[{"op": "dot_product", "field": "embedding", "vector": vector, "as": "dot"},
                     {"op": "count", "field": "embedding", "as": "n"}],
        )
        assert computed[1] is None
        for got, record in ((computed[0], v1[7]), (computed[2], v1[0])):
            assert got is not None and set(got) == {"name", "dot", "n"}
            assert got["name"] == record["name"] and got["n"] == len(record["embedding"]) == 4
            assert got["dot"] == pytest.approx(sum(e * x for e, x in zip(record["embedding"], vector, strict=True)), rel=1e-12)

        await asyncio.to_thread(push_ok, cluster, "dv-async", v2, tmp_path / "v2.jsonl")
        await asyncio.to_thread(wait_for, lambda: dv.version == 2, 60, "the async client to swap to v2")
        assert await dv.batch_get([r["id"] for r in v2]) == [value_of(r) for r in v2]
    with pytest.raises(venice.ReplicaNotReadyError, match="closed"):
        await dv.get(v1[0]["id"])
