"""Kafka backend through aiokafka.

Every aiokafka (and socket) exception is re-raised as a :mod:`venice.errors` type, so
no aiokafka type reaches a caller: ``TopicNotFoundError`` for an unknown topic or
partition, ``ConflictError`` for a topic that exists, ``PubSubError`` (retriable) for
everything a retry may cure.

Behaviour worth knowing (see also the tests in ``tests/pubsub`` and ``tests/testing``):

* Clients start with a bounded retry loop (``connect_timeout_s``): a broker that is
  briefly down delays a start, a broker that stays down gives ``PubSubError``.
* The producer is idempotent with ``acks=all``; ``send`` only enqueues, ``flush``
  waits for every delivery and raises the first delivery error. aiokafka retries a
  batch for up to ``request_timeout_ms`` (30 s), so a broker restart is ridden out.
* The consumer has no group and commits nothing. It rides out a broker restart: aiokafka
  reconnects and resumes fetching at its position, so nothing is skipped or repeated.
  An offset out of range raises ``OffsetOutOfRangeError`` naming the partitions and
  offsets (never a silent reset to another offset: the caller decides). A deleted topic is noticed by a metadata check while polls come back empty.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from venice.errors import ConflictError, OffsetOutOfRangeError, PubSubError, TopicNotFoundError, VeniceError
from venice.pubsub.base import Consumer, Headers, Producer, PubSub
from venice.structs import Message, TopicPartition

__all__ = ["KafkaConsumer", "KafkaProducer", "KafkaPubSub"]

CONNECT_TIMEOUT_S = 15.0
"""How long starting a client keeps retrying an unreachable broker."""
METADATA_WAIT_S = 30.0
"""How long create/delete wait for the topic's metadata to show the change."""
EXISTENCE_CHECK_S = 2.0
"""How often a consumer with nothing to read checks that its topics still exist."""
MAX_PENDING = 1_000
"""Delivery futures a producer keeps before it waits for the oldest."""

_NO_ERROR = 0
_UNKNOWN_TOPIC = kafka_errors.UnknownTopicOrPartitionError.errno
_TOPIC_EXISTS = kafka_errors.TopicAlreadyExistsError.errno

_Client = TypeVar("_Client", AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)
_T = TypeVar("_T")


def _translate(exc: BaseException, what: str) -> VeniceError:
    """Our error type for an aiokafka or socket error."""
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        return TopicNotFoundError(f"Kafka {what}: unknown topic or partition")
    if isinstance(exc, kafka_errors.TopicAlreadyExistsError):
        return ConflictError(f"Kafka {what}: topic already exists")
    if isinstance(exc, kafka_errors.OffsetOutOfRangeError):
        # aiokafka raises it with {TopicPartition: the offset asked for}.
        asked = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        positions = {TopicPartition(tp.topic, tp.partition): int(offset) for tp, offset in asked.items()}
        shown = ", ".join(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in positions.items()) or "unknown partition"
        return OffsetOutOfRangeError(f"Kafka {what}: offset out of range: {shown}", positions)
    return PubSubError(f"Kafka {what} failed: {exc!r}")


@contextlib.asynccontextmanager
async def _kafka_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (kafka_errors.KafkaError, OSError) as exc:  # TimeoutError is an OSError
        raise _translate(exc, what) from exc


async def _to_the_end(work: Awaitable[_T]) -> _T:
    """``work``'s result, awaited to its end even when the caller is cancelled meanwhile;
    the cancellation is raised once it has ended.

    For the starts and stops of aiokafka clients, which leak sockets when cut short: a
    start cancelled while it asks for metadata loses the connection it bootstraps with, and
    a stop cancelled half-way has marked the client closed without closing its connections
    (a later stop returns at once). Both are bounded by aiokafka's request timeouts."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # unlike awaiting the task, a cancelled wait leaves it running
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller is gone
        raise asyncio.CancelledError
    return task.result()


async def _stop(client: Any) -> None:
    """Stop an aiokafka client to the end, ignoring errors: we are giving it up anyway."""

    async def stop() -> None:
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())

    await _to_the_end(stop())


async def _started(factory: Callable[[], _Client], what: str, timeout_s: float) -> _Client:
    """A started client; retries a broker that is not reachable yet, within ``timeout_s``.

    A client whose ``start()`` failed is not reusable, so each attempt builds a new one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        client = factory()
        try:
            await _to_the_end(client.start())
            return client
        except (kafka_errors.KafkaError, OSError) as exc:
            await _stop(client)
            if loop.time() + 0.5 > deadline:
                raise PubSubError(f"cannot connect Kafka {what} within {timeout_s:.0f}s: {exc!r}") from exc
        except BaseException:
            await _stop(client)
            raise
        await asyncio.sleep(0.5)


class KafkaProducer(Producer):
    """Idempotent producer; keeps the delivery futures so :meth:`flush` can report failures."""

    def __init__(self, pubsub: KafkaPubSub, producer: AIOKafkaProducer) -> None:
        self._pubsub = pubsub
        self._producer = producer
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._partitions: dict[str, int] = {}
        # Records are appended straight to one open batch per partition and the batch is
        # handed to aiokafka whole when full (or on flush): aiokafka's per-record send()
        # took ~44% of a push's CPU in its async layers. Delivery, retries and idempotent
        # sequence numbers are aiokafka's as before: a batch is a batch either way.
        self._open: dict[tuple[str, int], Any] = {}

    @staticmethod
    def build(bootstrap: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,  # a retried batch is never written twice
            linger_ms=5,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=30_000,
        )

    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> None:
        self._reap()
        count = self._partitions.get(topic)
        if count is None:  # first record for this topic: fail fast when it does not exist
            count = self._partitions[topic] = await self._pubsub.partition_count(topic)
        if not 0 <= partition < count:
            raise TopicNotFoundError(f"topic {topic!r} has no partition {partition}")
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self._producer.create_batch()
        record_headers = list(headers)
        if batch.append(timestamp=timestamp_ms, key=key, value=value, headers=record_headers) is None:
            await self._submit(where)  # full: hand it over, start the next one
            batch = self._open[where] = self._producer.create_batch()
            if batch.append(timestamp=timestamp_ms, key=key, value=value, headers=record_headers) is None:
                del self._open[where]
                raise PubSubError(f"a record of {len(key) + len(value or b'')} bytes does not fit in one batch")

    async def send_many(
        self, topic: str, partition: int, keys: Sequence[bytes], values: Sequence[bytes | None], headers: Headers = ()
    ) -> None:
        """:meth:`send` of many records to one partition: the checks once, then appends to the
        open batch in a tight loop (no await per record), a batch handed over when full."""
        if not keys:
            return
        await self.send(topic, partition, keys[0], values[0], headers)  # checks the topic and partition
        where = (topic, partition)
        record_headers = list(headers)
        batch = self._open.get(where)
        for key, value in zip(keys[1:], values[1:], strict=True):
            if batch is None:
                batch = self._open[where] = self._producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=record_headers) is None:
                self._reap()
                await self._submit(where)
                batch = self._open[where] = self._producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value, headers=record_headers) is None:
                    del self._open[where]
                    raise PubSubError(f"a record of {len(key) + len(value or b'')} bytes does not fit in one batch")

    async def _submit(self, where: tuple[str, int]) -> None:
        batch = self._open.pop(where)
        batch.close()
        async with _kafka_errors(f"send to {where[0]}"):
            future = await self._producer.send_batch(batch, where[0], partition=where[1])
        self._pending.append(future)
        if len(self._pending) > MAX_PENDING:
            await asyncio.wait([self._pending[0]])

    def _reap(self) -> None:
        """Drop delivered futures; raise the first delivery failure at once."""
        pending = self._pending
        while pending and pending[0].done():
            future = pending.popleft()
            exc = future.exception()
            if exc is not None:
                raise _translate(exc, "delivery") from exc

    async def flush(self) -> None:
        for where in list(self._open):
            await self._submit(where)
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
            await _stop(self._producer)

    def _abandon(self) -> None:
        """Give up on undelivered records: a failing push must not wait out delivery retries.

        aiokafka's ``stop()`` waits until every queued batch is delivered or times out
        (30 s when a topic was deleted under it); stopping its sender task first makes
        it return at once. The delivery futures are consumed so none is left unretrieved.
        """
        self._open.clear()
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
    """Manual assignment, no group, no commits; positions are set by :meth:`assign`."""

    def __init__(self, pubsub: KafkaPubSub, consumer: AIOKafkaConsumer) -> None:
        self._pubsub = pubsub
        self._consumer = consumer
        self._topics: set[str] = set()
        self._idle_since: float | None = None

    @staticmethod
    def build(bootstrap: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # out of range is an error, never a silent jump
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            request_timeout_ms=30_000,
        )

    async def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        for topic in {tp.topic for tp in positions}:
            count = await self._pubsub.partition_count(topic)
            for tp in positions:
                if tp.topic == topic and not 0 <= tp.partition < count:
                    raise TopicNotFoundError(f"topic {topic!r} has no partition {tp.partition}")
        wanted = {KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in positions.items()}
        if any(offset < 0 for offset in wanted.values()):
            raise PubSubError(f"negative offset in {dict(positions)}")
        async with _kafka_errors("assign"):
            self._consumer.assign(list(wanted))
            for tp, offset in wanted.items():
                self._consumer.seek(tp, offset)
        self._topics = {tp.topic for tp in positions}
        self._idle_since = None

    async def getmany(self, timeout_ms: int = 500, max_records: int = 1000) -> dict[TopicPartition, list[Message]]:
        if not self._topics:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        # aiokafka returns buffered records without suspending; yield once so a consumer
        # working through a backlog cannot starve the other tasks of its process.
        await asyncio.sleep(0)
        async with _kafka_errors("fetch"):
            batches = await self._consumer.getmany(timeout_ms=max(0, timeout_ms), max_records=max(1, max_records))
        # One Message per record is a storage server's hottest Python while it ingests a
        # push: tuple.__new__ builds the named tuple without the call of its __new__.
        new = tuple.__new__
        result = {
            TopicPartition(tp.topic, tp.partition): [
                new(Message, (
                    r.topic,
                    r.partition,
                    r.offset,
                    b"" if r.key is None else r.key,
                    r.value,
                    tuple(r.headers),
                    r.timestamp if r.timestamp is not None and r.timestamp >= 0 else 0,
                ))
                for r in records
            ]
            for tp, records in batches.items()
            if records
        }
        if result:
            self._idle_since = None
        else:
            await self._check_topics_exist(max(0.5, timeout_ms / 1000))
        return result

    async def _check_topics_exist(self, timeout_s: float) -> None:
        """aiokafka keeps polling a deleted topic silently; notice it while idle.

        Only a definite "unknown topic" answer raises. A broker that is down (restarting)
        makes the check fail or time out, which is ignored so the poll loop rides it out
        and ``getmany`` never blocks much longer than asked."""
        now = asyncio.get_running_loop().time()
        if self._idle_since is None:
            self._idle_since = now
            return
        if now - self._idle_since < EXISTENCE_CHECK_S:
            return
        self._idle_since = now
        for topic in self._topics:
            with contextlib.suppress(PubSubError, TimeoutError):
                await asyncio.wait_for(self._pubsub.partition_count(topic), timeout_s)

    async def close(self) -> None:
        await _stop(self._consumer)


class KafkaPubSub(PubSub):
    """Kafka at ``bootstrap`` (``HOST:PORT[,HOST:PORT...]``). Topics get replication factor 1
    unless ``replication_factor`` says otherwise."""

    def __init__(
        self, bootstrap: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, replication_factor: int = 1
    ) -> None:
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"
        self.connect_timeout_s = connect_timeout_s
        self.replication_factor = replication_factor
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None  # for end_offsets; admin has no ListOffsets
        self._lock = asyncio.Lock()

    # --- shared clients ------------------------------------------------------------

    async def _admin_call(self, what: str, call: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
        async with self._lock:
            if self._admin is None:
                self._admin = await _started(
                    lambda: AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15_000),
                    "admin client",
                    self.connect_timeout_s,
                )
            admin = self._admin
        try:
            async with _kafka_errors(what):
                return await call(admin)
        except PubSubError:
            await self._drop_admin(admin)  # a broker restart can leave the admin client stale
            raise

    async def _drop_admin(self, admin: AIOKafkaAdminClient) -> None:
        if self._admin is admin:
            self._admin = None
            await _stop(admin)

    async def _describe(self, topic: str) -> dict[str, Any] | None:
        """The topic's metadata, or ``None`` when it does not exist."""
        described = await self._admin_call(f"describe {topic}", lambda a: a.describe_topics([topic]))
        if not described or described[0]["error_code"] == _UNKNOWN_TOPIC:
            return None
        if described[0]["error_code"] != _NO_ERROR:
            raise PubSubError(f"cannot describe topic {topic!r}: error {described[0]['error_code']}")
        return dict(described[0])

    # --- admin operations ----------------------------------------------------------

    async def create_topic(self, topic: str, partitions: int, *, max_message_bytes: int | None = None) -> None:
        configs = {} if max_message_bytes is None else {"max.message.bytes": str(max_message_bytes)}
        new = NewTopic(topic, partitions, self.replication_factor, topic_configs=configs)
        response = await self._admin_call(f"create topic {topic}", lambda a: a.create_topics([new]))
        for entry in response.topic_errors:
            code, message = entry[1], entry[2] if len(entry) > 2 else ""
            if code == _TOPIC_EXISTS:
                raise ConflictError(f"topic {topic!r} already exists")
            if code != _NO_ERROR:
                raise PubSubError(f"cannot create topic {topic!r}: error {code} {message}")
        await self._wait_for(topic, lambda d: d is not None and _has_leaders(d, partitions), "leaders")

    async def delete_topic(self, topic: str) -> None:
        response = await self._admin_call(f"delete topic {topic}", lambda a: a.delete_topics([topic]))
        for entry in response.topic_error_codes:
            if entry[1] not in (_NO_ERROR, _UNKNOWN_TOPIC):
                raise PubSubError(f"cannot delete topic {topic!r}: error {entry[1]}")
        await self._wait_for(topic, lambda d: d is None, "deletion")

    async def _wait_for(self, topic: str, done: Callable[[dict[str, Any] | None], bool], what: str) -> None:
        """Poll metadata until ``done``: the broker answers create/delete before its
        metadata cache shows the change, and callers expect to see it at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + METADATA_WAIT_S
        while not done(await self._describe(topic)):
            if loop.time() > deadline:
                raise PubSubError(f"topic {topic!r}: no {what} in metadata after {METADATA_WAIT_S:.0f}s")
            await asyncio.sleep(0.05)

    async def list_topics(self) -> set[str]:
        topics = await self._admin_call("list topics", lambda a: a.list_topics())
        return {t for t in topics if not t.startswith("__")}

    async def partition_count(self, topic: str) -> int:
        described = await self._describe(topic)
        if described is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return len(described["partitions"])

    async def end_offsets(self, topic: str) -> dict[int, int]:
        offsets = await self._list_offsets(topic, "end offsets", lambda c, tps: c.end_offsets(tps))
        return {tp.partition: int(offset) for tp, offset in offsets.items()}

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        offsets = await self._list_offsets(topic, "beginning offsets", lambda c, tps: c.beginning_offsets(tps))
        return {tp.partition: int(offset) for tp, offset in offsets.items()}

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        found = await self._list_offsets(
            topic, "offsets for time", lambda c, tps: c.offsets_for_times(dict.fromkeys(tps, timestamp_ms))
        )
        ends = await self.end_offsets(topic)
        # aiokafka answers None for a partition with no record that recent.
        return {tp.partition: ends[tp.partition] if hit is None else int(hit.offset) for tp, hit in found.items()}

    async def _list_offsets(
        self, topic: str, what: str, ask: Callable[[AIOKafkaConsumer, list[KafkaTopicPartition]], Awaitable[Any]]
    ) -> dict[KafkaTopicPartition, Any]:
        count = await self.partition_count(topic)
        async with self._lock:
            if self._offsets is None:
                self._offsets = await _started(
                    lambda: KafkaConsumer.build(self.bootstrap), "offsets consumer", self.connect_timeout_s
                )
            offsets_client = self._offsets
        try:
            async with _kafka_errors(f"{what} of {topic}"):
                return dict(await ask(offsets_client, [KafkaTopicPartition(topic, p) for p in range(count)]))
        except PubSubError:
            if self._offsets is offsets_client:
                self._offsets = None
                await _stop(offsets_client)
            raise

    # --- clients -------------------------------------------------------------------

    async def producer(self) -> Producer:
        client = await _started(lambda: KafkaProducer.build(self.bootstrap), "producer", self.connect_timeout_s)
        return KafkaProducer(self, client)

    async def consumer(self) -> Consumer:
        client = await _started(lambda: KafkaConsumer.build(self.bootstrap), "consumer", self.connect_timeout_s)
        return KafkaConsumer(self, client)

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        offsets_client, self._offsets = self._offsets, None
        if admin is not None:
            await _stop(admin)
        if offsets_client is not None:
            await _stop(offsets_client)


def _has_leaders(described: dict[str, Any], partitions: int) -> bool:
    parts = described["partitions"]
    return len(parts) == partitions and all(p["leader"] >= 0 for p in parts)
