"""One contract suite for every pub-sub backend (the embedded log and a real Kafka broker).

Each test in the ``Test*Contract`` classes runs once per backend through ``pubsub_url``.
Kafka's broker is shared by the session, so every test uses fresh topic names.
``TestEmbeddedLog`` covers what only the embedded log has: several OS processes on one
directory, torn writes, its on-disk index.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from venice.errors import ConflictError, OffsetOutOfRangeError, PubSubError, TopicNotFoundError
from venice.pubsub import Consumer, PubSub, connect, embedded
from venice.pubsub.embedded import EmbeddedPubSub, encode_frame
from venice.structs import Message, TopicPartition
from venice.testing.kafka import delete_records


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def _collect(consumer: Consumer, count: int, timeout_s: float = 20) -> list[Message]:
    """Poll until ``count`` records arrived (or time ran out), in arrival order."""
    got: list[Message] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        for messages in (await consumer.getmany(timeout_ms=200, max_records=500)).values():
            got.extend(messages)
    return got


async def _read(pubsub: PubSub, positions: dict[TopicPartition, int], count: int, timeout_s: float = 20) -> list[Message]:
    """Exactly the next ``count`` records from ``positions``: fails on fewer, or on any extra
    record arriving after them."""
    async with await pubsub.consumer() as consumer:
        await consumer.assign(positions)
        got = await _collect(consumer, count, timeout_s)
        assert len(got) == count, f"expected {count} records, got {len(got)}"
        assert await consumer.getmany(timeout_ms=300) == {}, "records beyond the expected ones"
    return got


async def _write(pubsub: PubSub, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    async with await pubsub.producer() as producer:
        for partition, key, value in records:
            await producer.send(topic, partition, key, value)


class TestTimestampsContract:
    async def test_records_carry_their_timestamps(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            async with await pubsub.producer() as producer:
                await producer.send(topic, 0, b"a", b"1", timestamp_ms=1_700_000_000_000)
                await producer.send(topic, 0, b"b", b"2")  # stamped now
            got = await _read(pubsub, {TopicPartition(topic, 0): 0}, 2)
            assert got[0].timestamp_ms == 1_700_000_000_000
            assert abs(got[1].timestamp_ms - time.time() * 1000) < 600_000  # the producer's clock, not 0
            await pubsub.delete_topic(topic)

    async def test_offsets_for_time_and_beginning(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            async with await pubsub.producer() as producer:
                for i, stamp in enumerate([1_000, 2_000, 3_000, 4_000]):
                    await producer.send(topic, 0, b"k%d" % i, b"v", timestamp_ms=stamp)
                await producer.send(topic, 1, b"old", b"v", timestamp_ms=500)
            assert await pubsub.beginning_offsets(topic) == {0: 0, 1: 0}
            assert await pubsub.offsets_for_time(topic, 2_500) == {0: 2, 1: 1}  # 1: every record is older: its end
            assert await pubsub.offsets_for_time(topic, 2_000) == {0: 1, 1: 1}
            assert await pubsub.offsets_for_time(topic, 0) == {0: 0, 1: 0}
            assert await pubsub.offsets_for_time(topic, 9_999) == {0: 4, 1: 1}
            await pubsub.delete_topic(topic)


class TestTopicsContract:
    async def test_create_list_count_delete(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 3)
            assert topic in await pubsub.list_topics()
            assert await pubsub.partition_count(topic) == 3
            assert await pubsub.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
            await pubsub.delete_topic(topic)
            assert topic not in await pubsub.list_topics()
            with pytest.raises(TopicNotFoundError):
                await pubsub.partition_count(topic)
            await pubsub.delete_topic(topic)  # deleting again is not an error

    async def test_create_twice_is_a_conflict(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            with pytest.raises(ConflictError):
                await pubsub.create_topic(topic, 1)
            assert await pubsub.partition_count(topic) == 2  # the first one is untouched
            await pubsub.delete_topic(topic)

    async def test_recreated_topic_starts_empty(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            await _write(pubsub, topic, [(0, b"old", b"v")])
            await pubsub.delete_topic(topic)
            await pubsub.create_topic(topic, 1)
            assert await pubsub.end_offsets(topic) == {0: 0}
            await _write(pubsub, topic, [(0, b"new", b"v")])
            assert [m.key for m in await _read(pubsub, {TopicPartition(topic, 0): 0}, 1)] == [b"new"]

    async def test_missing_topic_is_not_found_everywhere(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            missing = _topic()
            with pytest.raises(TopicNotFoundError):
                await pubsub.partition_count(missing)
            with pytest.raises(TopicNotFoundError):
                await pubsub.end_offsets(missing)
            async with await pubsub.consumer() as consumer:
                with pytest.raises(TopicNotFoundError):
                    await consumer.assign({TopicPartition(missing, 0): 0})
            async with await pubsub.producer() as producer:
                with pytest.raises(TopicNotFoundError):
                    await producer.send(missing, 0, b"k", b"v")

    async def test_missing_partition_is_not_found(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            async with await pubsub.consumer() as consumer:
                with pytest.raises(TopicNotFoundError):
                    await consumer.assign({TopicPartition(topic, 2): 0})
            async with await pubsub.producer() as producer:
                with pytest.raises(TopicNotFoundError):
                    await producer.send(topic, 2, b"k", b"v")
            await pubsub.delete_topic(topic)


class TestRecordsContract:
    async def test_round_trip_in_order_with_tombstones_and_headers(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            sent: dict[int, list[tuple[bytes, bytes | None, tuple[tuple[str, bytes], ...]]]] = {0: [], 1: []}
            async with await pubsub.producer() as producer:
                for i in range(300):
                    partition = (i * 7) % 2
                    key = b"key-%d" % i if i % 50 else b""  # an empty key is a key, not "no key"
                    value = None if i % 7 == 0 else (b"" if i % 11 == 0 else bytes(range(i % 256)) + b"v%d" % i)
                    headers = () if i % 5 == 0 else (("schema-id", b"%d" % (i % 3)), ("trace", bytes([i % 256, 0])))
                    await producer.send(topic, partition, key, value, headers)
                    sent[partition].append((key, value, headers))
            assert await pubsub.end_offsets(topic) == {0: len(sent[0]), 1: len(sent[1])}
            got = await _read(pubsub, {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 0}, 300)
            for partition in (0, 1):
                mine = [m for m in got if m.partition == partition]
                assert [m.offset for m in mine] == list(range(len(sent[partition])))
                assert [(m.key, m.value, m.headers) for m in mine] == sent[partition]
                assert all(m.topic == topic for m in mine)
            await pubsub.delete_topic(topic)

    async def test_read_from_a_middle_offset(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            await _write(pubsub, topic, [(0, b"%d" % i, b"v") for i in range(50)])
            got = await _read(pubsub, {TopicPartition(topic, 0): 30}, 20)
            assert [(m.offset, m.key) for m in got] == [(i, b"%d" % i) for i in range(30, 50)]
            assert await _read(pubsub, {TopicPartition(topic, 0): 50}, 0) == []  # at the end: nothing
            await pubsub.delete_topic(topic)

    async def test_offset_beyond_the_end_is_an_error(self, pubsub_url: str) -> None:
        """Never a silent jump to another offset: that would skip or repeat records."""
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            await _write(pubsub, topic, [(0, b"k", b"v")])
            async with await pubsub.consumer() as consumer:
                with pytest.raises(OffsetOutOfRangeError) as raised:
                    await consumer.assign({TopicPartition(topic, 0): 5})
                    for _ in range(50):  # Kafka reports it from the first fetch
                        await consumer.getmany(timeout_ms=100)
            # Its own class (a PubSubError, so callers that only retry still do), naming
            # where it was asked to read: the caller decides where to go on.
            assert isinstance(raised.value, PubSubError)
            assert raised.value.positions == {TopicPartition(topic, 0): 5}
            await pubsub.delete_topic(topic)

    async def test_one_consumer_two_partitions_and_reassignment(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 3)
            await _write(pubsub, topic, [(i % 3, b"%d" % i, b"v") for i in range(90)])
            async with await pubsub.consumer() as consumer:
                assert await consumer.getmany(timeout_ms=50) == {}  # nothing assigned yet
                await consumer.assign({TopicPartition(topic, 0): 10, TopicPartition(topic, 2): 0})
                got = await _collect(consumer, 50)
                by_partition = {tp: [m.offset for m in got if m.partition == tp.partition] for tp in
                                (TopicPartition(topic, 0), TopicPartition(topic, 2))}
                assert by_partition == {TopicPartition(topic, 0): list(range(10, 30)),
                                        TopicPartition(topic, 2): list(range(30))}
                assert await consumer.getmany(timeout_ms=300) == {}
                await consumer.assign({TopicPartition(topic, 1): 25})  # replaces the assignment
                got = await _collect(consumer, 5)
                assert [(m.partition, m.offset) for m in got] == [(1, o) for o in range(25, 30)]
                assert await consumer.getmany(timeout_ms=300) == {}
                await consumer.assign({TopicPartition(topic, 1): 3})  # back to an earlier offset
                got = await _collect(consumer, 27)
                assert [(m.partition, m.offset) for m in got] == [(1, o) for o in range(3, 30)]
                await consumer.assign({})
                assert await consumer.getmany(timeout_ms=50) == {}
            await pubsub.delete_topic(topic)

    async def test_max_records_is_respected_and_nothing_lost(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            await _write(pubsub, topic, [(i % 2, b"%d" % i, b"v") for i in range(200)])
            async with await pubsub.consumer() as consumer:
                await consumer.assign({TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 0})
                offsets: dict[int, list[int]] = {0: [], 1: []}
                deadline = asyncio.get_running_loop().time() + 20
                while sum(map(len, offsets.values())) < 200 and asyncio.get_running_loop().time() < deadline:
                    batch = await consumer.getmany(timeout_ms=200, max_records=7)
                    assert sum(map(len, batch.values())) <= 7
                    for tp, messages in batch.items():
                        offsets[tp.partition] += [m.offset for m in messages]
                assert offsets == {0: list(range(100)), 1: list(range(100))}
            await pubsub.delete_topic(topic)

    async def test_megabytes_per_partition_arrive_whole_and_in_order(self, pubsub_url: str) -> None:
        """Several producer batches' worth per partition (batches are 512 KB on Kafka)."""
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 3)
            records = [(i % 3, b"k%06d" % i, b"%06d" % i + b"x" * 600) for i in range(9000)]
            await _write(pubsub, topic, records)
            assert await pubsub.end_offsets(topic) == {0: 3000, 1: 3000, 2: 3000}
            async with await pubsub.consumer() as consumer:
                await consumer.assign({TopicPartition(topic, p): 0 for p in range(3)})
                keys: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
                deadline = asyncio.get_running_loop().time() + 30
                while sum(map(len, keys.values())) < 9000 and asyncio.get_running_loop().time() < deadline:
                    for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                        keys[tp.partition] += [m.key for m in messages]
                assert keys == {p: [k for q, k, _ in records if q == p] for p in range(3)}
            await pubsub.delete_topic(topic)

    async def test_reader_sees_records_written_while_it_reads(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)

            async def write() -> None:
                async with await pubsub.producer() as producer:
                    for i in range(200):
                        await producer.send(topic, 0, b"%d" % i, b"v" * (i % 40))
                        if i % 20 == 19:
                            await producer.flush()
                            await asyncio.sleep(0.02)

            writer = asyncio.create_task(write())
            got = await _read(pubsub, {TopicPartition(topic, 0): 0}, 200)
            await writer
            assert [(m.offset, m.key, m.value) for m in got] == [(i, b"%d" % i, b"v" * (i % 40)) for i in range(200)]
            await pubsub.delete_topic(topic)

    async def test_end_offsets_follow_writes(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            async with await pubsub.producer() as producer:
                for i in range(5):
                    await producer.send(topic, 1, b"%d" % i, None)
                await producer.flush()
                assert await pubsub.end_offsets(topic) == {0: 0, 1: 5}
                await producer.send(topic, 0, b"k", b"v")
                await producer.flush()
                assert await pubsub.end_offsets(topic) == {0: 1, 1: 5}
            await pubsub.delete_topic(topic)

    async def test_deleted_topic_is_noticed_by_a_reader(self, pubsub_url: str) -> None:
        async with connect(pubsub_url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 1)
            await _write(pubsub, topic, [(0, b"k", b"v")])
            async with await pubsub.consumer() as consumer:
                await consumer.assign({TopicPartition(topic, 0): 0})
                assert len(await _collect(consumer, 1)) == 1
                await pubsub.delete_topic(topic)
                with pytest.raises(TopicNotFoundError):
                    for _ in range(100):
                        await consumer.getmany(timeout_ms=100)

    async def test_records_survive_reopening(self, pubsub_url: str) -> None:
        topic = _topic()
        async with connect(pubsub_url) as pubsub:
            await pubsub.create_topic(topic, 1)
            await _write(pubsub, topic, [(0, b"k%d" % i, b"durable-%d" % i) for i in range(10)])
        async with connect(pubsub_url) as pubsub:
            assert await pubsub.end_offsets(topic) == {0: 10}
            got = await _read(pubsub, {TopicPartition(topic, 0): 0}, 10)
            assert [(m.key, m.value) for m in got] == [(b"k%d" % i, b"durable-%d" % i) for i in range(10)]
            await pubsub.delete_topic(topic)


_WRITER = """
import asyncio, sys
from venice.pubsub import connect
async def main():
    url, topic, name, count = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
    async with connect(url) as pubsub:
        async with await pubsub.producer() as producer:
            for i in range(count):
                await producer.send(topic, 0, b"%s-%d" % (name, i), b"x" * (i % 300))
                if i % 97 == 0:
                    await producer.flush()
asyncio.run(main())
"""


_BIG_WRITER = """
import asyncio, sys
from venice.pubsub import connect
async def main():
    async with await connect(sys.argv[1]).producer() as producer:
        for i in range(2000):  # 40 MB in 2 MB appends
            await producer.send("t", 0, b"a-%d" % i, b"x" * 20_000)
            if i % 100 == 99:
                await producer.flush()
asyncio.run(main())
"""


class TestEmbeddedLog:
    async def test_format_1_topics_stay_readable_and_writable(self, tmp_path: Path) -> None:
        """Topics written before records had timestamps (format 1) keep working."""
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("old", 1)
        topic_dir = pubsub.topic_dir("old")
        (topic_dir / "meta.json").write_bytes(b'{"partitions": 1, "format": 1}')
        with open(pubsub.partition_path("old", 0), "ab") as f:
            f.write(encode_frame(b"k1", b"v1", [("h", b"x")], fmt=1))
        await _write(pubsub, "old", [(0, b"k2", None)])
        got = await _read(pubsub, {TopicPartition("old", 0): 0}, 2)
        assert [(m.key, m.value, m.headers, m.timestamp_ms) for m in got] == [
            (b"k1", b"v1", (("h", b"x"),), 0),
            (b"k2", None, (), 0),
        ]
        assert await pubsub.offsets_for_time("old", 0) == {0: 2}  # no timestamps: nothing counts as recent

    async def test_unknown_format_is_refused(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("future", 1)
        (pubsub.topic_dir("future") / "meta.json").write_bytes(b'{"partitions": 1, "format": 9}')
        with pytest.raises(PubSubError, match="format 9"):
            await pubsub.end_offsets("future")

    async def test_concurrent_writer_processes_lose_nothing(self, tmp_path: Path) -> None:
        url = f"embedded://{tmp_path / 'log'}"
        pubsub = connect(url)
        await pubsub.create_topic("shared", 1)
        count = 3000
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER, url, "shared", name, str(count)], env=os.environ.copy())
            for name in ("a", "b", "c")
        ]
        # Read while they write: a reader never sees a half-written frame.
        got = await _read(pubsub, {TopicPartition("shared", 0): 0}, 3 * count, timeout_s=60)
        assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
        assert [m.offset for m in got] == list(range(3 * count))
        for name in (b"a", b"b", b"c"):
            mine = [int(m.key.split(b"-")[1]) for m in got if m.key.startswith(name + b"-")]
            assert mine == list(range(count))  # each writer's records, once each, in its order
        assert all(m.value == b"x" * (int(m.key.split(b"-")[1]) % 300) for m in got)
        assert await pubsub.end_offsets("shared") == {0: 3 * count}

    async def test_torn_tail_is_invisible_then_repaired(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("t", 1)
        await _write(pubsub, "t", [(0, b"k1", b"v1")])
        path = pubsub.partition_path("t", 0)
        frame = encode_frame(b"torn", b"x" * 100)
        with open(path, "ab") as f:  # a writer killed halfway through its frame
            f.write(frame[: len(frame) // 2])
        assert await pubsub.end_offsets("t") == {0: 1}
        async with await pubsub.consumer() as reader:  # a reader already at the tail
            await reader.assign({TopicPartition("t", 0): 0})
            assert [m.key for m in await _collect(reader, 1)] == [b"k1"]
            assert await reader.getmany(timeout_ms=100) == {}  # the torn frame is "not yet written"
            await _write(pubsub, "t", [(0, b"k2", b"v2")])  # the next writer cuts it off first
            assert [(m.offset, m.key, m.value) for m in await _collect(reader, 1)] == [(1, b"k2", b"v2")]
        got = await _read(pubsub, {TopicPartition("t", 0): 0}, 2)
        assert [(m.offset, m.key) for m in got] == [(0, b"k1"), (1, b"k2")]
        assert path.stat().st_size == 2 * len(encode_frame(b"k1", b"v1"))

    async def test_writer_killed_mid_write_loses_no_complete_record(self, tmp_path: Path) -> None:
        """SIGKILL during big appends usually leaves a torn frame; the next writer repairs it."""
        url = f"embedded://{tmp_path / 'log'}"
        pubsub = connect(url)
        await pubsub.create_topic("t", 1)
        writer = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, url])
        async with await pubsub.consumer() as reader:  # wait until it is mid-stream
            await reader.assign({TopicPartition("t", 0): 0})
            assert await _collect(reader, 1)
        writer.kill()
        writer.wait(timeout=30)
        before = (await pubsub.end_offsets("t"))[0]
        await _write(pubsub, "t", [(0, b"b-%d" % i, b"y") for i in range(10)])
        got = await _read(pubsub, {TopicPartition("t", 0): 0}, before + 10, timeout_s=60)
        assert [m.key for m in got] == [b"a-%d" % i for i in range(before)] + [b"b-%d" % i for i in range(10)]
        assert all(m.value == b"x" * 20_000 for m in got[:before])

    async def test_complete_frames_of_a_dead_writer_are_kept(self, tmp_path: Path) -> None:
        """A writer that died after its append but before recording the new end."""
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("t", 1)
        await _write(pubsub, "t", [(0, b"k0", b"v")])
        orphans = encode_frame(b"k1", b"v") + encode_frame(b"k2", None, [("h", b"1")])
        with open(pubsub.partition_path("t", 0), "ab") as f:
            f.write(orphans + encode_frame(b"torn", b"v")[:-1])
        assert await pubsub.end_offsets("t") == {0: 3}
        await _write(pubsub, "t", [(0, b"k3", b"v")])
        got = await _read(pubsub, {TopicPartition("t", 0): 0}, 4)
        assert [(m.offset, m.key) for m in got] == [(0, b"k0"), (1, b"k1"), (2, b"k2"), (3, b"k3")]
        assert got[2].value is None and got[2].headers == (("h", b"1"),)

    async def test_seeks_use_the_index_and_land_exactly(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("t", 1)
        total = 3 * embedded.INDEX_EVERY + 123
        async with await pubsub.producer() as producer:
            for i in range(total):
                await producer.send("t", 0, b"%d" % i, b"v" * (i % 17))
                if i % 1000 == 999:
                    await producer.flush()  # batches that start and end anywhere
        index = (tmp_path / "log" / "t" / "p0.idx").read_bytes()
        assert len(index) == 4 * 16  # offsets 0, 4096, 8192, 12288
        for start in (0, 1, embedded.INDEX_EVERY - 1, embedded.INDEX_EVERY, 2 * embedded.INDEX_EVERY + 7, total - 1):
            async with await pubsub.consumer() as consumer:
                await consumer.assign({TopicPartition("t", 0): start})
                first = (await consumer.getmany(timeout_ms=100, max_records=1))[TopicPartition("t", 0)][0]
                assert (first.offset, first.key) == (start, b"%d" % start)

    async def test_records_larger_than_a_read_chunk(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await pubsub.create_topic("t", 1)
        big = os.urandom(embedded.READ_CHUNK * 2 + 5)
        await _write(pubsub, "t", [(0, b"a", b"small"), (0, b"b", big), (0, b"c", big[:10])])
        got = await _read(pubsub, {TopicPartition("t", 0): 0}, 3)
        assert [(m.key, m.value) for m in got] == [(b"a", b"small"), (b"b", big), (b"c", big[:10])]
        async with await pubsub.consumer() as consumer:  # a seek past the big record
            await consumer.assign({TopicPartition("t", 0): 2})
            assert [m.key for m in await _collect(consumer, 1)] == [b"c"]

    async def test_invalid_topic_names_are_refused(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        for name in ("", "a/b", "..", ".hidden", "x" * 250, "sp ace"):
            with pytest.raises(PubSubError):
                await pubsub.create_topic(name, 1)
        assert await pubsub.list_topics() == set()


@pytest.mark.kafka
class TestKafkaRetention:
    """What retention does to readers, on the real broker (records deleted at an exact
    offset with the admin API's DeleteRecords, as retention deletes old segments)."""

    async def test_deleted_records_move_the_beginning_and_reading_them_is_out_of_range(self, kafka_broker: Any) -> None:
        async with connect(kafka_broker.url) as pubsub:
            topic = _topic()
            await pubsub.create_topic(topic, 2)
            await _write(pubsub, topic, [(0, b"k%d" % i, b"v%d" % i) for i in range(10)] + [(1, b"x", b"y")])
            assert await delete_records(kafka_broker.bootstrap, topic, {0: 6}) == {0: 6}
            assert await pubsub.beginning_offsets(topic) == {0: 6, 1: 0}
            assert await pubsub.end_offsets(topic) == {0: 10, 1: 1}
            async with await pubsub.consumer() as consumer:
                with pytest.raises(OffsetOutOfRangeError) as raised:
                    await consumer.assign({TopicPartition(topic, 0): 2})
                    for _ in range(50):
                        await consumer.getmany(timeout_ms=100)
            assert raised.value.positions == {TopicPartition(topic, 0): 2}
            got = await _read(pubsub, {TopicPartition(topic, 0): 6}, 4)
            assert [m.value for m in got] == [b"v6", b"v7", b"v8", b"v9"]
            await pubsub.delete_topic(topic)
