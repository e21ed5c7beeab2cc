"""The pub-sub interface every backend implements.

Two backends live beside this module: :mod:`venice.pubsub.kafka` (Kafka through
aiokafka, for production) and :mod:`venice.pubsub.embedded` (a durable log in a
directory, shareable by several processes on one machine). A backend is chosen by
URL with :func:`venice.pubsub.connect`:

* ``kafka://HOST:PORT[,HOST:PORT...]``
* ``embedded:///absolute/path/to/log-dir``

All methods are async. Backends raise only :mod:`venice.errors` types:
``PubSubError`` (retriable: broker unreachable, timeouts), ``TopicNotFoundError``,
``ConflictError`` (topic exists).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType

from venice.structs import Message, TopicPartition

__all__ = ["Consumer", "Producer", "PubSub"]

Headers = Sequence[tuple[str, bytes]]


class Producer(abc.ABC):
    """Writes records to explicit partitions. Sends may be buffered until :meth:`flush`."""

    @abc.abstractmethod
    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record (stamped now unless ``timestamp_ms`` is given). May wait when
        buffers are full (back-pressure)."""

    async def send_many(
        self, topic: str, partition: int, keys: Sequence[bytes], values: Sequence[bytes | None], headers: Headers = ()
    ) -> None:
        """Queue records to one partition, in order, all with the same ``headers``: what a
        push ships in chunks. The default sends them one by one; a backend may do better
        (one call per chunk instead of per record)."""
        for key, value in zip(keys, values, strict=True):
            await self.send(topic, partition, key, value, headers)

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once every record sent so far is durably in the log."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release resources."""

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Consumer(abc.ABC):
    """Reads assigned partitions from given offsets. No consumer groups, no commits:
    the caller keeps its own checkpoints."""

    @abc.abstractmethod
    async def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        """Replace the assignment; read each partition from the given offset."""

    @abc.abstractmethod
    async def getmany(self, timeout_ms: int = 500, max_records: int = 1000) -> dict[TopicPartition, list[Message]]:
        """Records available now (waiting up to ``timeout_ms`` for some), by partition,
        in offset order. Empty dict when nothing arrived in time."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class PubSub(abc.ABC):
    """Admin operations plus factories for producers and consumers of one backend."""

    url: str

    @abc.abstractmethod
    async def create_topic(self, topic: str, partitions: int, *, max_message_bytes: int | None = None) -> None:
        """Create ``topic``; ``ConflictError`` if it exists. ``max_message_bytes`` sizes the
        topic for records up to that many bytes where the backend limits them (Kafka's
        ``max.message.bytes``; the embedded log has no such limit)."""

    @abc.abstractmethod
    async def delete_topic(self, topic: str) -> None:
        """Delete ``topic`` and its records; no error if it does not exist."""

    @abc.abstractmethod
    async def list_topics(self) -> set[str]: ...

    @abc.abstractmethod
    async def partition_count(self, topic: str) -> int:
        """``TopicNotFoundError`` if the topic does not exist."""

    @abc.abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next record written will get."""

    @abc.abstractmethod
    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the oldest offset still readable (retention may have removed older ones)."""

    @abc.abstractmethod
    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose record is stamped at or after
        ``timestamp_ms``; the end offset where every record is older."""

    @abc.abstractmethod
    async def producer(self) -> Producer:
        """A started producer."""

    @abc.abstractmethod
    async def consumer(self) -> Consumer:
        """A started consumer with nothing assigned."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> PubSub:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
