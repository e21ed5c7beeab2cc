"""One contract suite for every pub-sub backend (embedded log and real Kafka)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from venice.errors import ConflictError, TopicNotFoundError
from venice.pubsub import PubSub, connect
from venice.pubsub.embedded import EmbeddedPubSub
from venice.structs import Message, TopicPartition


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _read(pubsub: PubSub, positions: dict[TopicPartition, int], count: int, timeout_s: float = 20) -> list[Message]:
    consumer = await pubsub.consumer()
    got: list[Message] = []
    try:
        await consumer.assign(positions)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(got) < count and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200, max_records=500)).values():
                got.extend(messages)
    finally:
        await consumer.close()
    return got


class TestTopics:
    async def test_create_list_count_delete(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 3)
            assert topic in await pubsub.list_topics()
            assert await pubsub.partition_count(topic) == 3
            assert await pubsub.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
            await pubsub.delete_topic(topic)
            assert topic not in await pubsub.list_topics()
            await pubsub.delete_topic(topic)  # deleting again is not an error

    async def test_create_twice_is_a_conflict(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            with pytest.raises(ConflictError):
                await pubsub.create_topic(topic, 1)
            await pubsub.delete_topic(topic)

    async def test_missing_topic(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            with pytest.raises(TopicNotFoundError):
                await pubsub.partition_count(_topic())


class TestRecords:
    async def test_round_trip_in_order_with_tombstones_and_headers(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            async with await pubsub.producer() as producer:
                for i in range(300):
                    value = None if i % 7 == 0 else b"value-%d" % i
                    await producer.send(topic, i % 2, b"key-%d" % i, value, [("schema-id", b"%d" % (i % 3))])
            assert await pubsub.end_offsets(topic) == {0: 150, 1: 150}
            got = await _read(pubsub, {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 0}, 300)
            by_partition = {p: [m for m in got if m.partition == p] for p in (0, 1)}
            for partition, messages in by_partition.items():
                assert [m.offset for m in messages] == list(range(150))
                for m in messages:
                    i = int(m.key.split(b"-")[1])
                    assert i % 2 == partition
                    assert m.value == (None if i % 7 == 0 else b"value-%d" % i)
                    assert m.header("schema-id") == b"%d" % (i % 3)
            await pubsub.delete_topic(topic)

    async def test_read_from_a_middle_offset(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            async with await pubsub.producer() as producer:
                for i in range(50):
                    await producer.send(topic, 0, b"%d" % i, b"v")
            got = await _read(pubsub, {TopicPartition(topic, 0): 30}, 20)
            assert [m.offset for m in got] == list(range(30, 50))
            assert [m.key for m in got] == [b"%d" % i for i in range(30, 50)]

    async def test_reader_sees_records_written_while_it_reads(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)

            async def write() -> None:
                async with await pubsub.producer() as producer:
                    for i in range(100):
                        await producer.send(topic, 0, b"%d" % i, b"v")
                        if i % 10 == 9:
                            await producer.flush()
                            await asyncio.sleep(0.02)

            writer = asyncio.create_task(write())
            got = await _read(pubsub, {TopicPartition(topic, 0): 0}, 100)
            await writer
            assert [m.key for m in got] == [b"%d" % i for i in range(100)]

    async def test_records_survive_reopening(self, pubsub_url: str) -> None:
        topic = _topic()
        async with connect(pubsub_url) as pubsub:
            await pubsub.create_topic(topic, 1)
            async with await pubsub.producer() as producer:
                await producer.send(topic, 0, b"k", b"durable")
        async with connect(pubsub_url) as pubsub:
            got = await _read(pubsub, {TopicPartition(topic, 0): 0}, 1)
            assert [(m.key, m.value) for m in got] == [(b"k", b"durable")]


_WRITER = """
import asyncio, sys
from venice.pubsub import connect
async def main():
    pubsub = connect(sys.argv[1])
    async with await pubsub.producer() as producer:
        for i in range(2000):
            await producer.send(sys.argv[2], 0, b"%s-%d" % (sys.argv[3].encode(), i), b"x" * 50)
            if i % 100 == 0:
                await producer.flush()
asyncio.run(main())
"""


class TestEmbeddedLog:
    async def test_concurrent_writer_processes_lose_nothing(self, tmp_path: Path) -> None:
        url = f"embedded://{tmp_path / 'log'}"
        pubsub = connect(url)
        await pubsub.create_topic("shared", 1)
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER, url, "shared", name], env=os.environ.copy())
            for name in ("a", "b", "c")
        ]
        assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
        got = await _read(pubsub, {TopicPartition("shared", 0): 0}, 6000)
        assert len(got) == 6000
        for name in (b"a", b"b", b"c"):
            mine = [int(m.key.split(b"-")[1]) for m in got if m.key.startswith(name + b"-")]
            assert mine == list(range(2000))  # each writer's records, once each, in its order

    async def test_torn_tail_is_invisible_then_repaired(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("t", 1)
        async with await pubsub.producer() as producer:
            await producer.send("t", 0, b"k1", b"v1")
        path = pubsub.partition_path("t", 0)
        whole = path.read_bytes()
        with open(path, "ab") as f:  # a writer killed halfway through its frame
            f.write(whole[: len(whole) // 2])
        assert await pubsub.end_offsets("t") == {0: 1}
        assert [m.key for m in await _read(pubsub, {TopicPartition("t", 0): 0}, 2, timeout_s=0.5)] == [b"k1"]
        async with await pubsub.producer() as producer:
            await producer.send("t", 0, b"k2", b"v2")
        got = await _read(pubsub, {TopicPartition("t", 0): 0}, 2)
        assert [(m.offset, m.key) for m in got] == [(0, b"k1"), (1, b"k2")]
