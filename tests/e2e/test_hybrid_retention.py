"""Real-time records deleted by retention before a version read them, end to end on real
processes (controller, two storage servers, routers) and the real Kafka broker: a new
version whose rewind reaches past retention, and a backup paused while retention
deleted past its checkpoint and then rolled back to. Both replicas go on at the oldest
record kept, count the records in between as lost (replica reports, the version
description, ``venice store describe``) and hold the same values.

Retention is applied at exact offsets with Kafka's DeleteRecords (what the broker's
retention does to old segments, without waiting for its clock). The version's push is
written here the way the push job writes it (start-of-push, records, end-of-push, then
``POST .../end``), so the deletion can fall between the version's opening (when its
start offsets are fixed) and its end-of-push."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import push, venice_cli, write_jsonl
from tests.e2e.test_hybrid_control import MEMBER, _avro, _create, _eventually_reads, _name, _read, _versions, _write_rt
from tests.ingestion.helpers import keys_of_partition, write_push
from venice.cluster import LocalCluster, wait_for
from venice.partitioner import partition_for
from venice.protocol import replica_get_path
from venice.pubsub import connect
from venice.testing.kafka import KafkaBroker, delete_records

pytestmark = pytest.mark.kafka

P = 2
KEYS = keys_of_partition(0, P, 20)
"""Keys whose nearline writes go to real-time partition 0, in write order (offsets 0..19)."""


def _version(controller: str, store: str, number: int) -> dict[str, Any]:
    return dict(httpx.get(f"{controller}/stores/{store}/versions/{number}", timeout=5).json())


def _ends(pubsub_url: str, topic: str) -> dict[int, int]:
    async def ask() -> dict[int, int]:
        async with connect(pubsub_url) as pubsub:
            return await pubsub.end_offsets(topic)

    return asyncio.run(ask())


def _caught_up(controller: str, store: str, number: int, ends: dict[int, int]) -> bool:
    replicas = _version(controller, store, number)["replicas"]
    return all(len(rs) == 2 and all(r["rt_offset"] == ends[int(p)] for r in rs) for p, rs in replicas.items())


def _on_each_replica(controller: str, store: str, number: int, key: int) -> list[tuple[int, bytes]]:
    """``(status, body)`` of key ``key`` read from each replica's own read path."""
    partition = partition_for(_avro("long", key), P)
    answers = []
    for replica in _version(controller, store, number)["replicas"][str(partition)]:
        response = httpx.get(replica["url"] + replica_get_path(store, number, partition, _avro("long", key)), timeout=5)
        answers.append((response.status_code, response.content))
    return answers


def _member(name: str, visits: int) -> dict[str, Any]:
    return {"name": name, "visits": visits}


def test_rewind_and_paused_backups_reaching_past_retention(
    kafka_cluster: LocalCluster, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("retention")
    pubsub_url, rt_topic = kafka_cluster.pubsub_url, f"{store}_rt"
    _create(controller, store, hybrid={"rewind_seconds": 3600, "offset_lag": 10}, partitions=P)
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", [{"id": 1, **_member("pushed", 1)}])).returncode == 0
    # Ten nearline writes to partition 0 (offsets 0..9), one to partition 1; version 1 applies them all.
    _write_rt(pubsub_url, store, P, {KEYS[n]: _member("early", n) for n in range(10)})
    _write_rt(pubsub_url, store, P, {1: _member("nearline", 1)})
    ends = _ends(pubsub_url, rt_topic)
    assert ends == {0: 10, 1: 1}
    wait_for(lambda: _caught_up(controller, store, 1, ends), 60, "version 1 to apply the nearline writes")

    # Version 2 rewinds an hour: it starts at offset 0 of both partitions...
    opened = httpx.post(f"{controller}/stores/{store}/versions", json={}, timeout=30)
    assert opened.status_code == 201, opened.text
    assert _versions(controller, store)[2]["rt_start_offsets"] == {"0": 0, "1": 0}
    # ...but retention deletes partition 0's first six records before the version reads them.
    assert asyncio.run(delete_records(kafka_broker.bootstrap, rt_topic, {0: 6})) == {0: 6}

    async def write_version_2() -> None:
        async with connect(pubsub_url) as pubsub:
            await write_push(pubsub, f"{store}_v2", P, {_avro("long", 1): _avro(MEMBER, _member("pushed-2", 1))}, create=False)

    asyncio.run(write_version_2())
    ended = httpx.post(f"{controller}/stores/{store}/versions/2/end", json={"records": 1}, timeout=30)
    assert ended.status_code == 200, ended.text
    wait_for(lambda: httpx.get(f"{controller}/stores/{store}", timeout=5).json()["current_version"] == 2, 60, "v2 current")
    wait_for(lambda: _caught_up(controller, store, 2, ends), 60, "version 2 past the gap")

    described = _version(controller, store, 2)
    assert described["rt_lost"] == 6
    assert {p: [r["rt_lost"] for r in rs] for p, rs in described["replicas"].items()} == {"0": [6, 6], "1": [0, 0]}
    for n in range(10):
        expected = (404, None) if n < 6 else (200, _member("early", n))
        _eventually_reads_or_missing(router, store, KEYS[n], expected)
        replicas = _on_each_replica(controller, store, 2, KEYS[n])
        assert len(replicas) == 2 and replicas[0] == replicas[1], (n, replicas)  # both replicas decided alike
        assert replicas[0][0] == expected[0], (n, replicas)
    assert _read(router, store, 1).json() == _member("nearline", 1)
    assert _read(router, store, KEYS[3], version=1).json() == _member("early", 3)  # v1 read them before retention
    out = venice_cli("store", "describe", "--controller", controller, store)
    assert out.returncode == 0, out.stderr
    assert "v2 ONLINE (current); real-time lag 0, applying real-time writes; 6 real-time record(s) lost to retention" in out.stdout

    # Version 1 is now a backup: it stops reading. Servers hear so from their next
    # heartbeat answers (every 0.5 s); give them a few before writing.
    assert _versions(controller, store)[1]["consume_rt"] is False
    time.sleep(3)
    _write_rt(pubsub_url, store, P, {KEYS[n]: _member("late", n) for n in range(10, 18)})  # offsets 10..17
    ends = _ends(pubsub_url, rt_topic)
    assert ends == {0: 18, 1: 1}
    wait_for(lambda: _caught_up(controller, store, 2, ends), 60, "version 2 to apply the late writes")
    # The premise: the backup did not move (its checkpoint is at 10).
    assert [r["rt_offset"] for r in _version(controller, store, 1)["replicas"]["0"]] == [10, 10]
    # Retention deletes past the backup's checkpoint; then it is rolled back to.
    assert asyncio.run(delete_records(kafka_broker.bootstrap, rt_topic, {0: 15})) == {0: 15}
    rolled = venice_cli("version", "rollback", "--controller", controller, "--store", store)
    assert rolled.returncode == 0, rolled.stderr
    wait_for(lambda: _caught_up(controller, store, 1, ends), 60, "version 1 past the gap after the rollback")
    described = _version(controller, store, 1)
    assert described["rt_lost"] == 5 and described["current"] is True
    assert {p: [r["rt_lost"] for r in rs] for p, rs in described["replicas"].items()} == {"0": [5, 5], "1": [0, 0]}
    for n in range(10, 18):
        expected = (404, None) if n < 15 else (200, _member("late", n))
        _eventually_reads_or_missing(router, store, KEYS[n], expected)
        replicas = _on_each_replica(controller, store, 1, KEYS[n])
        assert len(replicas) == 2 and replicas[0] == replicas[1] and replicas[0][0] == expected[0], (n, replicas)
    # Version 2 had applied them all before the deletion: nothing lost there.
    assert _read(router, store, KEYS[12], version=2).json() == _member("late", 12)
    assert _version(controller, store, 2)["rt_lost"] == 6


def _eventually_reads_or_missing(router: str, store: str, key: int, expected: tuple[int, Any]) -> None:
    status, value = expected
    if status == 200:
        _eventually_reads(router, store, key, value)
    else:
        wait_for(lambda: _read(router, store, key).status_code == 404, 30, f"{store}/{key} to be missing")
