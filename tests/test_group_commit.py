"""GroupCommit: concurrent writers share flushes, order is kept, memory is bounded, failures
reach exactly the records they concern.

The timing-dependent cases use :class:`GatedProducer`, a small implementation of the
pub-sub Producer interface whose flush waits for the test to open a gate (no clock, no
sleeps); durability is checked on the real embedded log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from venice.errors import OverloadedError, PubSubError, RequestError, TopicNotFoundError, UnavailableError
from venice.group_commit import GroupCommit
from venice.pubsub.base import Headers, Producer
from venice.pubsub.embedded import EmbeddedPubSub
from venice.structs import TopicPartition
from venice.writer import OutgoingRecord


class GatedProducer(Producer):
    """Keeps what it is sent; ``flush`` waits for ``gate`` and then makes the sent records
    durable (``durable``), or raises ``fail_flush`` once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.buffered: list[tuple[str, int, bytes]] = []
        self.durable: list[tuple[str, int, bytes]] = []
        self.flushes = 0
        self.flushing = asyncio.Event()
        self.fail_flush: Exception | None = None
        self.missing_topics: set[str] = set()
        self.closed = False

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes | None, headers: Headers = (), timestamp_ms: int | None = None
    ) -> None:
        if topic in self.missing_topics:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        self.buffered.append((topic, partition, key))

    async def flush(self) -> None:
        self.flushing.set()
        await self.gate.wait()
        self.flushes += 1
        if self.fail_flush is not None:
            error, self.fail_flush = self.fail_flush, None
            self.buffered.clear()
            raise error
        self.durable += self.buffered
        self.buffered.clear()

    async def close(self) -> None:
        self.closed = True


def record(key: int, topic: str = "s_rt", size: int = 10) -> OutgoingRecord:
    return OutgoingRecord(topic, key % 3, key.to_bytes(4, "big"), b"v" * (size - 4), (("schema-id", b"1"),))


class Opener:
    """Hands out GatedProducers sharing one ``gate`` (open unless the test closes it);
    the first flush of the first one fails with ``fail_first_flush``."""

    def __init__(self, *, fail_first_flush: Exception | None = None, missing_topics: frozenset[str] = frozenset()) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.producers: list[GatedProducer] = []
        self.fail_first_flush = fail_first_flush
        self.missing_topics = missing_topics

    async def __call__(self) -> Producer:
        producer = GatedProducer()
        producer.gate = self.gate
        producer.missing_topics = set(self.missing_topics)
        if not self.producers:
            producer.fail_flush = self.fail_first_flush
        self.producers.append(producer)
        return producer


async def outcome(futures: Sequence[asyncio.Future[None]]) -> list[str]:
    await asyncio.wait(futures)
    return ["ok" if f.exception() is None else type(f.exception()).__name__ for f in futures]


async def test_writers_arriving_during_a_flush_share_the_next_one() -> None:
    opener = Opener()
    opener.gate.clear()
    commit = GroupCommit(opener)
    first = commit.submit_nowait(record(0))
    while not opener.producers or not opener.producers[0].flushing.is_set():
        await asyncio.sleep(0)  # round 1 (one record) reaches its flush and is held there
    later = [commit.submit_nowait(record(i)) for i in range(1, 101)]
    opener.gate.set()
    assert await outcome([first, *later]) == ["ok"] * 101
    producer = opener.producers[0]
    assert producer.flushes == 2  # 101 writers, two flushes
    assert commit.rounds == 2 and commit.committed == 101
    assert [key for _, _, key in producer.durable] == [i.to_bytes(4, "big") for i in range(101)]  # submission order
    await commit.close()
    assert producer.closed


async def test_buffer_is_bounded_overload_or_wait() -> None:
    opener = Opener()
    opener.gate.clear()
    commit = GroupCommit(opener, max_pending_records=10, max_pending_bytes=1000)
    futures = [commit.submit_nowait(record(i)) for i in range(10)]
    with pytest.raises(OverloadedError) as caught:
        commit.submit_nowait(record(10))
    assert caught.value.http_status == 503 and caught.value.retriable
    assert commit.pending_records == 10
    waiting = asyncio.create_task(commit.submit(record(11)))  # back-pressure: waits for room
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    opener.gate.set()
    futures.append(await waiting)
    assert await outcome(futures) == ["ok"] * 11
    await commit.close()


async def test_byte_budget_and_a_record_larger_than_it() -> None:
    opener = Opener()
    opener.gate.clear()
    commit = GroupCommit(opener, max_pending_records=1000, max_pending_bytes=100)
    big = commit.submit_nowait(record(1, size=500))  # alone it goes, though over the budget
    with pytest.raises(OverloadedError):
        commit.submit_nowait(record(2, size=10))
    opener.gate.set()
    assert await outcome([big]) == ["ok"]
    assert commit.pending_bytes == 0
    await commit.close()


async def test_a_failed_flush_fails_its_round_and_replaces_the_producer() -> None:
    opener = Opener(fail_first_flush=PubSubError("broker gone"))
    commit = GroupCommit(opener)
    round_one = [commit.submit_nowait(record(i)) for i in range(5)]
    assert await outcome(round_one) == ["PubSubError"] * 5
    messages = {f.exception().message for f in round_one}  # type: ignore[union-attr]
    assert messages == {"broker gone"}
    assert len({id(f.exception()) for f in round_one}) == 5  # one error object per writer
    round_two = [commit.submit_nowait(record(i)) for i in range(5, 8)]
    assert await outcome(round_two) == ["ok"] * 3
    assert len(opener.producers) == 2  # a new producer for the next round
    await commit.close()
    assert opener.producers[0].closed


async def test_a_missing_topic_fails_only_its_records_and_is_retriable() -> None:
    commit = GroupCommit(Opener(missing_topics=frozenset({"gone_rt"})))
    futures = [commit.submit_nowait(record(1)), commit.submit_nowait(record(2, topic="gone_rt")), commit.submit_nowait(record(3))]
    assert await outcome(futures) == ["ok", "UnavailableError", "ok"]
    error = futures[1].exception()
    assert isinstance(error, UnavailableError) and error.retriable and "gone_rt" in error.message
    await commit.close()


async def test_a_producer_that_cannot_be_opened_fails_the_round_then_is_retried() -> None:
    attempts: list[int] = []

    async def opener() -> Producer:
        attempts.append(1)
        if len(attempts) == 1:
            raise PubSubError("cannot connect")
        return GatedProducer()

    commit = GroupCommit(opener)
    assert await outcome([commit.submit_nowait(record(1))]) == ["PubSubError"]
    assert await outcome([commit.submit_nowait(record(2))]) == ["ok"]
    assert len(attempts) == 2
    await commit.close()


async def test_flush_waits_for_everything_submitted_and_close_refuses_more() -> None:
    opener = Opener()
    commit = GroupCommit(opener)
    futures = [commit.submit_nowait(record(i)) for i in range(20)]
    await commit.flush()
    assert all(f.done() for f in futures)
    await commit.close()
    with pytest.raises(RequestError, match="closed"):
        commit.submit_nowait(record(99))


async def test_durable_on_the_embedded_log(tmp_path: Path) -> None:
    log = EmbeddedPubSub(tmp_path / "log")
    await log.create_topic("s_rt", 3)
    commit = GroupCommit(log.producer)
    futures = [commit.submit_nowait(record(i)) for i in range(300)]
    assert await outcome(futures) == ["ok"] * 300
    assert commit.rounds == 1  # submitted in one burst: one round, one flush (one fsync)
    await commit.close()
    consumer = await log.consumer()
    await consumer.assign({TopicPartition("s_rt", p): 0 for p in range(3)})
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    while sum(map(len, seen.values())) < 300:
        for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
            seen[tp.partition] += [int.from_bytes(m.key, "big") for m in messages]
    await consumer.close()
    for partition, keys in seen.items():
        assert keys == [i for i in range(300) if i % 3 == partition]  # every record, in submission order


async def test_close_gives_up_on_writes_that_cannot_complete() -> None:
    opener = Opener()
    opener.gate.clear()  # the first flush never finishes
    commit = GroupCommit(opener, max_round_records=2)
    futures = [commit.submit_nowait(record(i)) for i in range(5)]  # a round of 2 held, 3 queued
    while not opener.producers or not opener.producers[0].flushing.is_set():
        await asyncio.sleep(0)
    await commit.close(timeout_s=0.05)
    assert await outcome(futures) == ["UnavailableError"] * 5
    assert all("closed" in f.exception().message for f in futures)  # type: ignore[union-attr]
