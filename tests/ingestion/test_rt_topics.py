"""A real-time topic changing under the replicas that read it, on real topics and real
LMDB: the store given a new real-time topic of the same name (a new epoch), records
deleted by retention before a replica read them (a start offset, or the checkpoint of a
paused backup), a version topic that lost records, and a topic that ends before the
checkpoint. Retention is done at exact offsets with Kafka's DeleteRecords, as the
broker's retention deletes old segments; the embedded log keeps every record, so those
tests run on Kafka only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ingestion.helpers import VALUE_SCHEMA, assignment, key, keys_of_partition, send_rt, value, wait_until, write_push
from venice.ingestion import IngestionHost, VersionStorage, decode_stored
from venice.partitioner import partition_for
from venice.protocol import Assignment, ReplicaReport, ReplicaStatus
from venice.pubsub import PubSub, connect
from venice.testing.kafka import KafkaBroker, delete_records


def _store() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


async def _schemas(store: str, incarnation: str) -> dict[int, Any]:
    return {1: VALUE_SCHEMA}


@pytest.fixture
async def pubsub(pubsub_url: str) -> AsyncIterator[PubSub]:
    async with connect(pubsub_url) as ps:
        yield ps


@pytest.fixture
async def kafka(kafka_broker: KafkaBroker) -> AsyncIterator[PubSub]:
    async with connect(kafka_broker.url) as ps:
        yield ps


def _host(tmp_path: Path, pubsub: PubSub, name: str = "host") -> IngestionHost:
    return IngestionHost(tmp_path / name, pubsub=pubsub, schema_refresh=_schemas)


def _storage(host: IngestionHost, a: Assignment) -> VersionStorage:
    return host.hosted[(a.store, a.version, a.incarnation)].storage


def _value(host: IngestionHost, a: Assignment, k: int) -> bytes | None:
    """The stored value of key ``k``, ready or not."""
    p = partition_for(key(k), a.partitions_total)
    raw = _storage(host, a).get(p, key(k))
    return None if raw is None else decode_stored(raw)[1]


def _reports(host: IngestionHost) -> dict[int, ReplicaReport]:
    return {r.partition: r for r in host.reports()}


async def _caught_up(host: IngestionHost, pubsub: PubSub, rt_topic: str) -> bool:
    ends = await pubsub.end_offsets(rt_topic)
    reports = _reports(host)
    return set(reports) == set(ends) and all(
        r.status is ReplicaStatus.READY and r.rt_offset == ends[p] for p, r in reports.items()
    )


class TestNewEpoch:
    @pytest.mark.parametrize("told_batch_only", [True, False], ids=["told-batch-only", "never-told-batch-only"])
    async def test_a_new_epoch_starts_over_at_its_start_offsets(self, tmp_path: Path, pubsub: PubSub, told_batch_only: bool) -> None:
        """The store made batch-only and hybrid again: its topic is deleted and made anew
        (offsets start at 0 again). The replica must not resume at its old checkpoint in
        the new topic (out of range, retried for ever, or — with enough new records —
        silently skipping the first ones); it starts at the new epoch's start offsets.
        The controller makes the new topic at once, so a server may never hear of the
        batch-only assignment in between: the epoch alone must tell it."""
        store, P = _store(), 2
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        await write_push(pubsub, f"{store}_v1", P, {key(i): value("pushed", i) for i in range(10)})
        host = _host(tmp_path, pubsub)
        first = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0, 1: 0}, rt_epoch=1)
        await host.reconcile([first])
        async with await pubsub.producer() as producer:
            for i in range(6):
                await send_rt(producer, rt_topic, P, key(i), value("first", i))
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "the first topic applied")
        old_offsets = {p: r.rt_offset for p, r in _reports(host).items()}
        assert sum(o or 0 for o in old_offsets.values()) == 6

        # Batch-only, then hybrid again under a new epoch whose topic does not exist yet.
        if told_batch_only:
            await host.reconcile([assignment(store, 1, P)])
        await pubsub.delete_topic(rt_topic)
        waiting = assignment(store, 1, P, hybrid=True, rt_epoch=2)
        await host.reconcile([waiting])
        await pubsub.create_topic(rt_topic, P)
        async with await pubsub.producer() as producer:
            await send_rt(producer, rt_topic, P, key(0), value("second", 0))
            await send_rt(producer, rt_topic, P, key(1), None)
        # No start offsets for epoch 2 yet: nothing is read, no offset of the old topic reported.
        for report in host.reports():
            assert (report.status, report.rt_offset, report.rt_lag) == (ReplicaStatus.READY, None, None)
        assert _value(host, waiting, 0) == value("first", 0)

        second = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0, 1: 0}, rt_epoch=2)
        await host.reconcile([second])
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "the new topic applied")
        assert _value(host, second, 0) == value("second", 0)
        assert _value(host, second, 1) is None
        assert [_value(host, second, i) for i in range(2, 6)] == [value("first", i) for i in range(2, 6)]
        assert [_value(host, second, i) for i in range(6, 10)] == [value("pushed", i) for i in range(6, 10)]
        storage = _storage(host, second)
        ends = await pubsub.end_offsets(rt_topic)
        for p in range(P):
            checkpoint = storage.checkpoint(p)
            assert (checkpoint.rt_epoch, checkpoint.rt_offset, checkpoint.rt_lost) == (2, ends[p], 0)
            # The change log holds the new topic's offsets only, each once.
            assert [c.offset for c in storage.changes(p)] == list(range(ends[p]))
        await host.close()

        # A restart resumes in epoch 2 where it stopped (nothing applied again).
        again = _host(tmp_path, pubsub)
        await again.reconcile([second])
        await wait_until(lambda: _caught_up(again, pubsub, rt_topic), "resumed after a restart")
        assert [c.offset for p in range(P) for c in _storage(again, second).changes(p)] == [
            o for p in range(P) for o in range(ends[p])
        ]
        await again.close()

    async def test_an_offset_beyond_the_end_starts_over_at_the_beginning(self, tmp_path: Path, pubsub: PubSub) -> None:
        """The topic was deleted and made again behind the controller's back (the epoch did
        not change) and holds fewer records than the replica read: every record it holds
        is applied, rather than waiting for ever for an offset it may never reach."""
        store, P = _store(), 1
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        await write_push(pubsub, f"{store}_v1", P, {})
        host = _host(tmp_path, pubsub)
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0}, rt_epoch=1)
        await host.reconcile([a])
        async with await pubsub.producer() as producer:
            for i in range(3):
                await send_rt(producer, rt_topic, P, key(i), value("old", i))
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "the old topic applied")
        await pubsub.delete_topic(rt_topic)
        await pubsub.create_topic(rt_topic, P)
        async with await pubsub.producer() as producer:
            await send_rt(producer, rt_topic, P, key(7), value("new", 7))
        await wait_until(lambda: _value(host, a, 7) == value("new", 7), "the new topic's record")
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "caught up with the new topic")
        (report,) = host.reports()
        assert (report.rt_offset, report.rt_lost) == (1, 0)
        await host.close()


@pytest.mark.kafka
class TestRetention:
    async def test_records_deleted_before_a_replica_read_them_are_counted_lost_alike_on_every_replica(
        self, tmp_path: Path, kafka: PubSub, kafka_broker: KafkaBroker
    ) -> None:
        """A start offset retention already deleted, then a backup paused while retention
        deleted its checkpoint: both replicas go on at the oldest record kept, count the
        records in between as lost, and end byte-identical."""
        store, P = _store(), 2
        rt_topic = f"{store}_rt"
        await kafka.create_topic(rt_topic, P)
        ks = keys_of_partition(0, P, 20)
        (other,) = keys_of_partition(1, P, 1)
        async with await kafka.producer() as producer:
            for n in range(10):
                await send_rt(producer, rt_topic, P, key(ks[n]), value("early", n))
            await send_rt(producer, rt_topic, P, key(other), value("kept"))
        # The controller chose offset 2 of partition 0; retention deleted up to 6 before
        # the version reached end-of-push.
        assert await delete_records(kafka_broker.bootstrap, rt_topic, {0: 6}) == {0: 6}
        await write_push(kafka, f"{store}_v1", P, {})
        consuming = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 2, 1: 0}, rt_epoch=1)
        hosts = [_host(tmp_path, kafka, "a"), _host(tmp_path, kafka, "b")]
        for host in hosts:
            await host.reconcile([consuming])
        for host in hosts:
            await wait_until(lambda host=host: _caught_up(host, kafka, rt_topic), "caught up past the gap")
            reports = _reports(host)
            assert (reports[0].rt_offset, reports[0].rt_lost) == (10, 4)
            assert (reports[1].rt_offset, reports[1].rt_lost) == (1, 0)
            assert [_value(host, consuming, ks[n]) for n in range(10)] == [None] * 6 + [value("early", n) for n in range(6, 10)]
            assert _value(host, consuming, other) == value("kept")

        # A backup does not read; retention deletes past its checkpoint meanwhile.
        backup = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 2, 1: 0}, rt_epoch=1, consume_rt=False)
        for host in hosts:
            await host.reconcile([backup])
        async with await kafka.producer() as producer:
            for n in range(10, 20):
                await send_rt(producer, rt_topic, P, key(ks[n]), value("late", n))
        assert await delete_records(kafka_broker.bootstrap, rt_topic, {0: 17}) == {0: 17}
        for host in hosts:  # rolled back to: it reads again
            await host.reconcile([consuming])
        for host in hosts:
            await wait_until(lambda host=host: _caught_up(host, kafka, rt_topic), "caught up after the rollback")
            reports = _reports(host)
            assert (reports[0].rt_offset, reports[0].rt_lost) == (20, 4 + 7)
            assert [_value(host, consuming, ks[n]) for n in range(10, 20)] == [None] * 7 + [value("late", n) for n in range(17, 20)]
            assert _storage(host, consuming).checkpoint(0).rt_lost == 11
            assert [c.offset for c in _storage(host, consuming).changes(0)] == [6, 7, 8, 9, 17, 18, 19]
        first, second = (_storage(host, consuming).dump() for host in hosts)
        assert first == second
        for host in hosts:
            await host.close()

    async def test_a_version_topic_that_lost_records_fails_the_partition_for_good(
        self, tmp_path: Path, kafka: PubSub, kafka_broker: KafkaBroker
    ) -> None:
        """Its data can never be complete: ERROR with the reason, kept across a restart,
        instead of retrying the read for ever."""
        store, P = _store(), 2
        topic = f"{store}_v1"
        await write_push(kafka, topic, P, {key(i): value("pushed", i) for i in range(20)})
        assert await delete_records(kafka_broker.bootstrap, topic, {1: 3}) == {1: 3}
        a = assignment(store, 1, P)
        for attempt in ("first", "restarted"):
            host = _host(tmp_path, kafka)
            await host.reconcile([a])
            await wait_until(lambda host=host: _reports(host)[1].status is ReplicaStatus.ERROR, f"partition 1 failed ({attempt})")
            await wait_until(lambda host=host: _reports(host)[0].status is ReplicaStatus.READY, f"partition 0 ready ({attempt})")
            reason = _reports(host)[1].reason or ""
            assert "version-topic records 0..2 were deleted" in reason, reason
            await host.close()
