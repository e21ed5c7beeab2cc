"""KafkaBroker (deploy/kafka/kafka.sh) and how the Kafka backend rides out a broker restart.

These tests start brokers of their own, never the session's shared one.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from venice.errors import PubSubError
from venice.pubsub import Consumer, connect
from venice.pubsub.kafka import KafkaPubSub
from venice.structs import Message, TopicPartition
from venice.testing.kafka import KafkaBroker, KafkaStartError


@pytest.fixture
def broker(kafka_required: None, tmp_path: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path / "kafka") as started:
        yield started


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped by init counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _collect(consumer: Consumer, count: int, timeout_s: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        for messages in (await consumer.getmany(timeout_ms=200, max_records=1000)).values():
            got.extend(messages)
    return got


@pytest.mark.kafka
async def test_records_clients_and_topics_survive_a_restart(broker: KafkaBroker) -> None:
    """A reader polls and a writer sends all through a restart, as a server and a nearline
    writer would: afterwards every record is there exactly once, in offset order."""
    parts = [TopicPartition("events", 0), TopicPartition("events", 1)]
    async with connect(broker.url) as pubsub:
        await pubsub.create_topic("events", 2)
        producer = await pubsub.producer()
        reader = await pubsub.consumer()
        seen: list[Message] = []
        stop_reading = asyncio.Event()

        async def read() -> None:
            while not stop_reading.is_set():
                for messages in (await reader.getmany(timeout_ms=200, max_records=1000)).values():
                    seen.extend(messages)

        async def write(prefix: bytes, count: int, pause_s: float) -> None:
            for i in range(count):
                await producer.send("events", i % 2, b"%s-%d" % (prefix, i), b"v")
                await asyncio.sleep(pause_s)

        try:
            await reader.assign({tp: 0 for tp in parts})
            reading = asyncio.create_task(read())
            await write(b"before", 100, 0)
            await producer.flush()

            old_pid = broker.pid
            writing = asyncio.create_task(write(b"during", 100, 0.03))  # spans the restart
            await asyncio.to_thread(broker.restart)
            assert old_pid is not None and broker.pid != old_pid
            assert _gone(old_pid)
            await writing
            await write(b"after", 100, 0)
            await producer.flush()

            deadline = time.monotonic() + 30
            while len(seen) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a duplicate would arrive now
            stop_reading.set()
            await reading
        finally:
            await producer.close()
            await reader.close()
        for partition in (0, 1):
            assert [m.offset for m in seen if m.partition == partition] == list(range(150))
        keys = {m.key for m in seen}
        assert keys == {b"%s-%d" % (p, i) for p in (b"before", b"during", b"after") for i in range(100)}
        # The admin side reconnects too, and a new reader finds everything on disk.
        assert "events" in await pubsub.list_topics()
        assert await pubsub.end_offsets("events") == {0: 150, 1: 150}
        async with await pubsub.consumer() as fresh:
            await fresh.assign({tp: 0 for tp in parts})
            assert {m.key for m in await _collect(fresh, 300)} == keys


@pytest.mark.kafka
async def test_stop_is_idempotent_and_start_refuses_a_busy_port(kafka_required: None, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        broker = KafkaBroker(tmp_path / "kafka", port=busy.getsockname()[1])
        with pytest.raises(KafkaStartError, match="already in use"):
            broker.start()
    broker.stop()
    broker.stop()
    assert broker.pid is None


async def test_unreachable_broker_gives_pubsub_error_in_bounded_time() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket closes
    pubsub = KafkaPubSub(f"127.0.0.1:{port}", connect_timeout_s=1.5)
    # Each call gives up after its connect timeout (the suite's pytest timeout catches a hang).
    with pytest.raises(PubSubError):
        await pubsub.partition_count("anything")
    with pytest.raises(PubSubError):
        await pubsub.consumer()
    await asyncio.wait_for(pubsub.close(), 5)
