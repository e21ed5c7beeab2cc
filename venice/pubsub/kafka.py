"""Kafka backend through aiokafka.

Every aiokafka exception is re-raised as a :mod:`venice.errors` type (``PubSubError``
for anything a retry may cure), so no aiokafka type reaches a caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from venice.errors import ConflictError, PubSubError, TopicNotFoundError
from venice.pubsub.base import Consumer, Headers, Producer, PubSub
from venice.structs import Message, TopicPartition

__all__ = ["KafkaPubSub"]

_TOPIC_EXISTS = 36
_UNKNOWN_TOPIC = 3
START_TIMEOUT_S = 30.0
METADATA_WAIT_S = 30.0


@contextlib.asynccontextmanager
async def _kafka_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except KafkaError as exc:
        raise PubSubError(f"Kafka {what} failed: {exc!r}") from exc
    except (OSError, asyncio.TimeoutError) as exc:
        raise PubSubError(f"Kafka {what} failed: {exc!r}") from exc


async def _start(client: Any, what: str) -> None:
    """Start an aiokafka client, retrying while the broker comes up, within a bound."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        try:
            await client.start()
            return
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.stop() if hasattr(client, "stop") else await client.close()
            if asyncio.get_running_loop().time() > deadline:
                raise PubSubError(f"could not connect Kafka {what}: {exc!r}") from exc
            await asyncio.sleep(0.5)


class KafkaProducer(Producer):
    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,  # a retried batch is never written twice
            linger_ms=5,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=30_000,
        )
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def start(self) -> None:
        await _start(self._producer, "producer")

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes | None, headers: Headers = ()
    ) -> None:
        async with _kafka_errors("send"):
            future = await self._producer.send(topic, value=value, key=key, partition=partition, headers=list(headers))
        self._pending.append(future)
        if len(self._pending) >= 50_000:
            await self.flush()

    async def flush(self) -> None:
        async with _kafka_errors("flush"):
            await self._producer.flush()
            while self._pending:
                await self._pending[0]  # raises the delivery error of a failed batch
                self._pending.popleft()

    async def close(self) -> None:
        try:
            await self.flush()
        except BaseException:
            self._abandon()
            raise
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()

    def _abandon(self) -> None:
        """Give up on undelivered records: a failing push must not wait out delivery retries.

        aiokafka's ``stop()`` waits until every queued batch is delivered or times out
        (30 s when a topic was deleted under it); stopping its sender task first makes
        it return at once. The delivery futures are consumed so none is left unretrieved.
        """
        sender_task = getattr(getattr(self._producer, "_sender", None), "sender_task", None)
        if sender_task is not None:
            sender_task.cancel()
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()


class KafkaConsumer(Consumer):
    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def start(self) -> None:
        await _start(self._consumer, "consumer")

    async def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        partitions = {KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in positions.items()}
        async with _kafka_errors("assign"):
            self._consumer.assign(list(partitions))
            for tp, offset in partitions.items():
                self._consumer.seek(tp, offset)

    async def getmany(self, timeout_ms: int = 500, max_records: int = 1000) -> dict[TopicPartition, list[Message]]:
        if not self._consumer.assignment():
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        async with _kafka_errors("fetch"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {
            TopicPartition(tp.topic, tp.partition): [
                Message(r.topic, r.partition, r.offset, r.key or b"", r.value, tuple(r.headers or ()))
                for r in records
            ]
            for tp, records in batches.items()
            if records
        }

    async def close(self) -> None:
        with contextlib.suppress(KafkaError, OSError):
            await self._consumer.stop()


class KafkaPubSub(PubSub):
    """Kafka at ``bootstrap`` (``HOST:PORT[,HOST:PORT...]``)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15_000)
                await _start(admin, "admin client")
                self._admin = admin
            return self._admin

    async def _reset_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _admin_call(self, what: str, call: Any) -> Any:
        admin = await self._admin_client()
        try:
            async with _kafka_errors(what):
                return await call(admin)
        except PubSubError:
            await self._reset_admin()  # a broker restart can leave the admin client stale
            raise

    async def create_topic(self, topic: str, partitions: int) -> None:
        response = await self._admin_call(
            f"create topic {topic}", lambda a: a.create_topics([NewTopic(topic, partitions, 1)])
        )
        for _, code, message in response.topic_errors:
            if code == _TOPIC_EXISTS:
                raise ConflictError(f"topic {topic!r} already exists")
            if code != 0:
                raise PubSubError(f"could not create topic {topic!r}: error {code} {message}")
        await self._wait_for_leaders(topic, partitions)

    async def _wait_for_leaders(self, topic: str, partitions: int) -> None:
        """Return once every partition has a leader, so producers can write at once."""
        deadline = asyncio.get_running_loop().time() + METADATA_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            described = await self._admin_call(f"describe {topic}", lambda a: a.describe_topics([topic]))
            parts = described[0]["partitions"] if described and described[0]["error_code"] == 0 else []
            if len(parts) == partitions and all(p["leader"] >= 0 for p in parts):
                return
            await asyncio.sleep(0.05)
        raise PubSubError(f"topic {topic!r} has no leaders after {METADATA_WAIT_S:.0f}s")

    async def delete_topic(self, topic: str) -> None:
        response = await self._admin_call(f"delete topic {topic}", lambda a: a.delete_topics([topic]))
        for _, code in response.topic_error_codes:
            if code not in (0, _UNKNOWN_TOPIC):
                raise PubSubError(f"could not delete topic {topic!r}: error {code}")

    async def list_topics(self) -> set[str]:
        topics = await self._admin_call("list topics", lambda a: a.list_topics())
        return {t for t in topics if not t.startswith("__")}

    async def partition_count(self, topic: str) -> int:
        described = await self._admin_call(f"describe {topic}", lambda a: a.describe_topics([topic]))
        if not described or described[0]["error_code"] == _UNKNOWN_TOPIC:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return len(described[0]["partitions"])

    async def end_offsets(self, topic: str) -> dict[int, int]:
        count = await self.partition_count(topic)
        consumer = KafkaConsumer(self.bootstrap)
        await consumer.start()
        try:
            tps = [KafkaTopicPartition(topic, p) for p in range(count)]
            async with _kafka_errors("end offsets"):
                offsets = await consumer._consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in offsets.items()}
        finally:
            await consumer.close()

    async def producer(self) -> Producer:
        producer = KafkaProducer(self.bootstrap)
        await producer.start()
        return producer

    async def consumer(self) -> Consumer:
        consumer = KafkaConsumer(self.bootstrap)
        await consumer.start()
        return consumer

    async def close(self) -> None:
        await self._reset_admin()
