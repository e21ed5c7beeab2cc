"""kill -9 of a storage server mid-stream on a whole cluster: the real controller, two
storage servers and a router as OS processes, the real Kafka broker, a hybrid store with
write compute and R=2, and a steady stream of nearline increments and list appends and
removals. One server is SIGKILLed while the stream flows and restarted on its data
directory; at the end both replicas of every partition hold exactly the values worked
out here (read from each server's own read path), every real-time record was applied
once on each (change logs), and both replicas' LMDB environments are byte-identical.

The updates are written the way any Kafka producer writes them (docs/hybrid.md, "Writing
updates from other producers"): Avro of the update schema the controller publishes in
the store description, encoded with fastavro, headers ``schema-id`` and
``venice-op: update``, partition by the contract's hash."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest

from tests.e2e.conftest import push, write_jsonl
from venice.cluster import LocalCluster, wait_for
from venice.ingestion import VersionStorage
from venice.partitioner import partition_for
from venice.protocol import SCHEMA_ID_HEADER, replica_get_path
from venice.pubsub import connect
from venice.testing.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

COUNTER: dict[str, Any] = {
    "type": "record",
    "name": "Counter",
    "fields": [
        {"name": "name", "type": "string", "default": ""},
        {"name": "count", "type": "long", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}
P = 4
KEYS = 200
WRITES = 12_000
PUSHED = range(0, KEYS, 2)
"""Even keys are pushed; odd keys first exist through an update (from the field defaults)."""


@pytest.fixture
def cluster(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[LocalCluster]:
    # A generous dead-after: this test is about a crash and restart of ingestion, not failover.
    with LocalCluster(tmp_path / "c", servers=2, pubsub_url=kafka_broker.url, dead_after_s=60) as cluster:
        yield cluster


def _avro(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


def _ops(n: int) -> tuple[int, str, bool]:
    """Write n of the stream: key, tag, and whether the tag is removed (else added); the
    count of the key goes up by one either way."""
    return (n * 7) % KEYS, f"t{n % 5}", n % 7 == 6


def _after(current: dict[str, Any] | None, n: int) -> dict[str, Any]:
    """What write n makes of ``current``, worked out here: count + 1; the tag appended
    when not there yet, or removed."""
    _, tag, remove = _ops(n)
    after = {"name": "", "count": 0, "tags": []} if current is None else {**current, "tags": list(current["tags"])}
    after["count"] += 1
    if remove:
        after["tags"] = [t for t in after["tags"] if t != tag]
    elif tag not in after["tags"]:
        after["tags"].append(tag)
    return after


def _replicas(controller: str, store: str) -> dict[str, list[dict[str, Any]]]:
    return dict(httpx.get(f"{controller}/stores/{store}/versions/1", timeout=5).json()["replicas"])


def _applied_by(controller: str, store: str, server: str) -> int:
    """Real-time records ``server``'s copies of version 1 report applied (from offset 0)."""
    return sum(r["rt_offset"] or 0 for rs in _replicas(controller, store).values() for r in rs if r["server"] == server)


def test_kill_9_of_a_server_mid_stream_loses_nothing_applies_nothing_twice(cluster: LocalCluster, tmp_path: Path) -> None:
    controller, store = cluster.controller_url, f"crash-{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{controller}/stores",
        json={"name": store, "key_schema": "long", "value_schema": COUNTER, "partitions": P, "replication_factor": 2,
              "hybrid": {"rewind_seconds": 3600, "offset_lag": 100}, "write_compute": True},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    update_schema = created.json()["update_schemas"]["1"]
    pushed = [{"id": k, "name": "pushed", "count": k, "tags": ["p"]} for k in PUSHED]
    result = push(controller, store, write_jsonl(tmp_path / "v1.jsonl", pushed))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: all(len(rs) == 2 and all(r["status"] == "READY" for r in rs) for rs in _replicas(controller, store).values()),
             60, "both replicas of every partition ready")
    victim = cluster.servers[1]
    victim_id = "server-1"

    expected: dict[int, dict[str, Any] | None] = {k: None for k in range(KEYS)}
    for record in pushed:
        expected[record["id"]] = {"name": "pushed", "count": record["id"], "tags": ["p"]}
    produced = dict.fromkeys(range(P), 0)
    events: dict[str, int] = {}
    """``killed``/``restarted``: how many writes had been produced then; ``applied``: how many the victim had applied."""

    async def stream() -> None:
        async with connect(cluster.pubsub_url) as pubsub, await pubsub.producer() as producer:
            for n in range(WRITES):
                k, tag, remove = _ops(n)
                key = _avro("long", k)
                tags = {"add": [], "remove": [tag]} if remove else {"add": [tag], "remove": []}
                update = _avro(update_schema, {"count": ("count_Increment", {"by": 1}), "tags": ("tags_ListOps", tags)})
                partition = partition_for(key, P)
                await producer.send(f"{store}_rt", partition, key, update, [("schema-id", b"1"), ("venice-op", b"update")])
                produced[partition] += 1
                expected[k] = _after(expected[k], n)
                if n % 250 == 249:
                    await producer.flush()
                    if "killed" not in events and n >= WRITES // 4:
                        applied = await asyncio.to_thread(_applied_by, controller, store, victim_id)
                        if applied > 1_000:
                            victim.kill()  # SIGKILL, mid-stream: no chance to clean up
                            events.update(killed=n + 1, applied=applied)
                    elif "killed" in events and "restarted" not in events and n >= WRITES // 2:
                        victim.start()  # on its data directory; the stream goes on meanwhile
                        events["restarted"] = n + 1
                    await asyncio.sleep(0.02)

    asyncio.run(stream())
    # The premise: killed while it was applying the stream, restarted while it still flowed.
    assert 0 < events["applied"] <= events["killed"] < events["restarted"] < WRITES, events
    victim.wait_healthy()

    def caught_up() -> bool:
        replicas = _replicas(controller, store)
        return all(
            len(rs) == 2 and {r["server"] for r in rs} == {"server-0", "server-1"}
            and all(r["status"] == "READY" and r["rt_offset"] == produced[int(p)] for r in rs)
            for p, rs in replicas.items()
        )

    wait_for(caught_up, 180, "both replicas of every partition at the end of the real-time topic")

    # Exact values on both replicas, each read through its own server's read path.
    urls = {r["server"]: r["url"] for rs in _replicas(controller, store).values() for r in rs}
    assert set(urls) == {"server-0", "server-1"}
    with httpx.Client(timeout=10) as http:
        for k in range(KEYS):
            key = _avro("long", k)
            path = replica_get_path(store, 1, partition_for(key, P), key)
            for server, url in sorted(urls.items()):
                answer = http.get(url + path)
                if expected[k] is None:
                    assert answer.status_code == 404, (server, k, answer.text)
                    continue
                assert answer.status_code == 200, (server, k, answer.text)
                assert answer.headers[SCHEMA_ID_HEADER] == "1"
                assert answer.content == _avro(COUNTER, expected[k]), (server, k, fastavro.schemaless_reader(
                    io.BytesIO(answer.content), fastavro.parse_schema(COUNTER)), expected[k])
    # The premise of the test: every key changed many times (a write applied twice would show).
    assert sum(v["count"] for v in expected.values() if v is not None) == sum(PUSHED) + WRITES

    cluster.stop()  # quiescent files: compare the two replicas' LMDB environments byte for byte
    dumps = []
    for index in range(2):
        (path,) = (tmp_path / "c" / f"server-{index}" / "versions").glob(f"{store}_v1-*")
        storage = VersionStorage(path, P, range(P), readonly=True)
        try:
            dumps.append(storage.dump())
            for p in range(P):
                # Each real-time offset applied exactly once, in order.
                assert [c.offset for c in storage.changes(p, limit=WRITES + 1)] == list(range(produced[p])), (index, p)
                assert storage.checkpoint(p).rt_offset == produced[p]
        finally:
            storage.close()
    assert set(dumps[0]) == {b"__checkpoints__", *(b"p%d" % p for p in range(P)), *(b"c%d" % p for p in range(P))}
    assert dumps[0] == dumps[1]
