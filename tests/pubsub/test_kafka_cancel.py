"""Kafka clients whose start or stop is cancelled close their connections.

aiokafka loses the connection it bootstraps with when a start is cancelled while it asks
for metadata, and a stop cancelled half-way marks the client closed without closing its
connections. Ingestion cancels its consumers whenever a version is dropped or a host
stops, so both happen in production; the leaked sockets were only noticed when the
garbage collector found them later (a ResourceWarning in whatever ran then).

The check is the kernel's: this process's TCP sockets to the broker, from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from venice.pubsub import connect
from venice.pubsub.base import Consumer
from venice.structs import TopicPartition

pytestmark = pytest.mark.kafka

CANCEL_POINTS = 40
"""Cancellations, 2 ms apart: together they land before, during and after a start."""


def _sockets_to(port: int) -> int:
    """How many of this process's open TCP sockets are connected to ``port`` on loopback."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[9] in ours:
            count += 1
    return count


async def _settled(port: int, expected: int) -> int:
    """The socket count once stops left running in the background had time to end."""
    for _ in range(200):
        gc.collect()  # a leaked socket warns here, inside this test (warnings are errors)
        count = _sockets_to(port)
        if count == expected:
            return count
        await asyncio.sleep(0.05)
    return _sockets_to(port)


async def test_a_consumer_start_cancelled_at_any_point_leaves_no_socket(kafka_broker: Any) -> None:
    async with connect(kafka_broker.url) as pubsub:
        await pubsub.list_topics()  # the shared admin client keeps its connections: counted before
        before = _sockets_to(kafka_broker.port)
        cancelled = 0
        for point in range(CANCEL_POINTS):
            starting = asyncio.ensure_future(pubsub.consumer())
            await asyncio.sleep(point * 0.002)
            starting.cancel()
            try:
                consumer: Consumer = await starting
            except asyncio.CancelledError:
                cancelled += 1
            else:
                await consumer.close()
        assert cancelled > 0  # the premise: some starts were cut short
        assert await _settled(kafka_broker.port, before) == before


async def test_a_consumer_stop_cancelled_at_any_point_leaves_no_socket(kafka_broker: Any) -> None:
    async with connect(kafka_broker.url) as pubsub:
        topic = f"cancel-{uuid.uuid4().hex}"
        await pubsub.create_topic(topic, 1)
        before = _sockets_to(kafka_broker.port)
        for point in range(CANCEL_POINTS // 4):
            consumer = await pubsub.consumer()
            await consumer.assign({TopicPartition(topic, 0): 0})
            await consumer.getmany(timeout_ms=10)  # fetching: connected to the partition's leader
            assert _sockets_to(kafka_broker.port) > before  # the premise: it holds a connection
            closing = asyncio.ensure_future(consumer.close())
            for _ in range(point + 1):  # + 1: a close cancelled before it runs never starts at all
                await asyncio.sleep(0)
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
        assert await _settled(kafka_broker.port, before) == before
        await pubsub.delete_topic(topic)
