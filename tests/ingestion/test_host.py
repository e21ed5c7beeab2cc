"""The ingestion library on real topics (the embedded log and the real Kafka broker, through
``pubsub_url``) and real LMDB: batch and hybrid versions, readiness with lag, poison
pills, ``consume_rt`` flips, replicas that end byte-identical, and the host's set of
store-versions (open, repartition, drop, orphans, manifest)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.ingestion.helpers import (
    VALUE_SCHEMA,
    VALUE_SCHEMA_V2,
    VALUES_V2,
    assignment,
    key,
    keys_of_partition,
    send_rt,
    value,
    wait_until,
    write_push,
)
from venice.errors import ReplicaNotReadyError, StoreNotFoundError
from venice.ingestion import IngestionHost, VersionStorage, decode_stored, encode_stored
from venice.ingestion.records import Checkpoint, apply_version_batch
from venice.partitioner import partition_for
from venice.protocol import Assignment, ReplicaStatus
from venice.pubsub import PubSub, connect
from venice.structs import TopicPartition
from venice.wire import ControlKind, control_headers, data_headers, encode_control


def _store() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


class Schemas:
    """The schema source a host asks (a controller's role): answers from ``known``, or
    waits while ``hold`` is clear, or fails while ``down``."""

    def __init__(self, known: Mapping[int, Any] | None = None) -> None:
        self.known: dict[int, Any] = dict(known or {1: VALUE_SCHEMA})
        self.asked = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.down = False

    async def __call__(self, store: str, incarnation: str) -> Mapping[int, Any]:
        self.asked += 1
        await self.hold.wait()
        if self.down:
            raise StoreNotFoundError("schema source unavailable")
        return dict(self.known)


@pytest.fixture
async def pubsub(pubsub_url: str) -> AsyncIterator[PubSub]:
    async with connect(pubsub_url) as ps:
        yield ps


def _host(tmp_path: Path, pubsub: PubSub, schemas: Schemas | None = None, name: str = "host") -> IngestionHost:
    return IngestionHost(tmp_path / name, pubsub=pubsub, schema_refresh=schemas or Schemas())


def _statuses(host: IngestionHost) -> dict[int, ReplicaStatus]:
    return {r.partition: r.status for r in host.reports()}


def _all_ready(host: IngestionHost, partitions: int) -> bool:
    return _statuses(host) == dict.fromkeys(range(partitions), ReplicaStatus.READY)


def _read(host: IngestionHost, a: Assignment, k: int) -> bytes | None:
    p = partition_for(key(k), a.partitions_total)
    raw = host.ready(a.store, a.version, p).get(p, key(k))
    return None if raw is None else decode_stored(raw)[1]


async def _caught_up(host: IngestionHost, pubsub: PubSub, rt_topic: str) -> bool:
    ends = await pubsub.end_offsets(rt_topic)
    return all(r.rt_offset == ends[r.partition] and r.status is ReplicaStatus.READY for r in host.reports())


class TestBatchVersions:
    async def test_applies_everything_then_ready(self, tmp_path: Path, pubsub: PubSub) -> None:
        store = _store()
        records = {key(i): value(f"n{i}", i) for i in range(3000)}
        records[key(3000)] = None  # a delete of a key never written
        await write_push(pubsub, f"{store}_v1", 3, records)
        host = _host(tmp_path, pubsub)
        a = assignment(store, 1, 3)
        await host.reconcile([a])
        await wait_until(lambda: _all_ready(host, 3), "ready")
        assert _read(host, a, 42) == value("n42", 42)
        assert _read(host, a, 3000) is None
        storages = {host.ready(store, 1, p) for p in range(3)}
        assert len(storages) == 1
        (storage,) = storages
        assert sum(storage.count(p) for p in range(3)) == 3000
        for report in host.reports():
            counted = sum(1 for k in records if partition_for(k, 3) == report.partition)
            assert (report.records, report.rt_offset, report.skipped) == (counted, None, 0)
            assert report.offset == counted + 2  # start- and end-of-push
        await host.close()

    async def test_a_partition_that_finishes_first_does_not_reassign_the_consumer(
        self, tmp_path: Path, pubsub: PubSub
    ) -> None:
        """Partitions reaching end-of-push one by one keep the consumer's assignment (assigning
        again drops what it prefetched for the others); every record is still applied once."""
        store = _store()
        small = keys_of_partition(0, 3, 5)
        large = keys_of_partition(1, 3, 5000, start=10_000) + keys_of_partition(2, 3, 3000, start=100_000)
        records = {key(i): value(f"n{i}", i) for i in small + large}
        await write_push(pubsub, f"{store}_v1", 3, records)
        assigns: list[set[TopicPartition]] = []
        make_consumer = pubsub.consumer

        async def counting_consumer() -> Any:
            consumer = await make_consumer()
            assign = consumer.assign

            async def counted(positions: Mapping[TopicPartition, int]) -> None:
                assigns.append(set(positions))
                await assign(positions)

            consumer.assign = counted  # type: ignore[method-assign]
            return consumer

        pubsub.consumer = counting_consumer  # type: ignore[method-assign]
        host = _host(tmp_path, pubsub)
        a = assignment(store, 1, 3)
        await host.reconcile([a])
        await wait_until(lambda: _all_ready(host, 3), "ready")
        assert assigns == [{TopicPartition(f"{store}_v1", p) for p in range(3)}]
        assert {r.partition: r.records for r in host.reports()} == {0: 5, 1: 5000, 2: 3000}
        for k in (small[0], large[0], large[-1]):
            assert _read(host, a, k) == value(f"n{k}", k)
        await host.close()

    async def test_count_mismatch_is_an_error_that_survives_a_restart(self, tmp_path: Path, pubsub: PubSub) -> None:
        store = _store()
        topic = f"{store}_v1"
        await pubsub.create_topic(topic, 1)
        async with await pubsub.producer() as producer:
            await producer.send(topic, 0, b"", encode_control({}), control_headers(ControlKind.START_OF_PUSH))
            await producer.send(topic, 0, key(1), value("a"), data_headers(1))
            await producer.send(topic, 0, b"", encode_control({"records": 3}), control_headers(ControlKind.END_OF_PUSH))
        for _ in range(2):  # the second host opens the same files: still ERROR, never READY
            host = _host(tmp_path, pubsub)
            await host.reconcile([assignment(store, 1, 1)])
            await wait_until(lambda h=host: _statuses(h) == {0: ReplicaStatus.ERROR}, "error")
            (report,) = host.reports()
            assert report.reason == "end-of-push says 3 records, applied 1"
            with pytest.raises(ReplicaNotReadyError):
                host.ready(store, 1, 0)
            await host.close()

    async def test_resumes_from_its_checkpoint_without_reapplying(self, tmp_path: Path, pubsub: PubSub) -> None:
        store = _store()
        records = {key(i): value("v") for i in range(3000)}
        await write_push(pubsub, f"{store}_v1", 1, records)
        # A previous run applied the first 1,001 records and crashed (same files, same layout).
        async with await pubsub.consumer() as consumer:
            await consumer.assign({TopicPartition(f"{store}_v1", 0): 0})
            first: list[Any] = []
            while len(first) < 1002:
                for messages in (await consumer.getmany(max_records=1002 - len(first))).values():
                    first += messages
        storage = VersionStorage(tmp_path / "host" / "versions" / f"{store}_v1", 1, [0])
        storage.write_batch(0, lambda _read: apply_version_batch(Checkpoint(), first))
        assert storage.checkpoint(0).records == 1001
        storage.close()

        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, 1)])
        await wait_until(lambda: _all_ready(host, 1), "ready")
        (report,) = host.reports()
        assert (report.records, report.offset) == (3000, 3002)  # nothing applied twice
        assert host.hosted[(store, 1, "")].ingestion.partitions[0].ingested == 1999
        assert host.ready(store, 1, 0).count(0) == 3000
        await host.close()

    async def test_waits_for_a_topic_created_after_the_assignment(self, tmp_path: Path, pubsub: PubSub) -> None:
        """The controller may assign a version while it is still creating its topic."""
        store = _store()
        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, 1)])
        await asyncio.sleep(0.5)
        assert _statuses(host) == {0: ReplicaStatus.STARTED}
        await write_push(pubsub, f"{store}_v1", 1, {key(1): value("a")})
        await wait_until(lambda: _all_ready(host, 1), "ready")
        await host.close()

    async def test_a_topic_that_never_appears_is_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("venice.ingestion.version.TOPIC_WAIT_S", 0.5)
        async with connect(f"embedded://{tmp_path / 'log'}") as pubsub:
            host = _host(tmp_path, pubsub)
            await host.reconcile([assignment("s", 1, 1)])
            await wait_until(lambda: _statuses(host) == {0: ReplicaStatus.ERROR}, "error")
            assert "does not exist" in (host.reports()[0].reason or "")
            await host.close()


class TestHybridVersions:
    async def test_version_topic_then_real_time_from_the_rewind_offset(self, tmp_path: Path, pubsub: PubSub) -> None:
        """Real-time writes older than (push start - rewind) are not applied; newer ones,
        before and during the push and while the version ingests, all are, in log order."""
        store, P = _store(), 3
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        now_ms = int(time.time() * 1000)
        rewind_ms = 60_000
        expected: dict[int, bytes | None] = {}
        async with await pubsub.producer() as producer:
            for i in range(0, 40):  # an hour old: before the rewind window
                await send_rt(producer, rt_topic, P, key(i), value("too-old", i), timestamp_ms=now_ms - 3_600_000)
            for i in range(20, 60):  # inside the window
                await send_rt(producer, rt_topic, P, key(i), value("recent", i), timestamp_ms=now_ms - 10_000)
                expected[i] = value("recent", i)
            await send_rt(producer, rt_topic, P, key(25), None, timestamp_ms=now_ms - 5_000)
            expected[25] = None
        starts = await pubsub.offsets_for_time(rt_topic, now_ms - rewind_ms)
        assert sum(starts.values()) == 40  # the test's own premise: the old records come first
        pushed = {key(i): value("pushed", i) for i in range(0, 100)}
        await write_push(pubsub, f"{store}_v1", P, pushed)
        for i in range(100):
            expected.setdefault(i, value("pushed", i))

        host = _host(tmp_path, pubsub)
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets=starts, offset_lag=0)
        await host.reconcile([a])

        async def during() -> None:  # writes arriving while the version ingests
            async with await pubsub.producer() as producer:
                for i in range(50, 150):
                    await send_rt(producer, rt_topic, P, key(i), value("during", i))
                    expected[i] = value("during", i)
                    if i % 10 == 0:
                        await asyncio.sleep(0.01)

        await during()
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "caught up")
        for i in range(150):
            assert _read(host, a, i) == expected[i], i
        ends = await pubsub.end_offsets(rt_topic)
        for report in host.reports():
            assert report.rt_lag == 0
            applied = host.ready(store, 1, report.partition).changes(report.partition, limit=1000)
            assert [c.offset for c in applied] == list(range(starts[report.partition], ends[report.partition]))
        await host.close()

    async def test_ready_only_once_the_lag_is_under_the_threshold(self, tmp_path: Path, pubsub: PubSub) -> None:
        """A record with a schema the replica does not know yet holds its partition (the
        schema source is slow to answer): the partition stays STARTED with its lag shown,
        and becomes READY once the schema arrives and the backlog is applied."""
        store, P = _store(), 1
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        async with await pubsub.producer() as producer:
            v2 = VALUES_V2.encode({"name": "new", "count": 1, "tags": [], "note": "v2"})
            await send_rt(producer, rt_topic, P, key(1), v2, data_headers(2))
            for i in range(2, 12):
                await send_rt(producer, rt_topic, P, key(i), value("rt", i))
        await write_push(pubsub, f"{store}_v1", P, {key(1): value("pushed")})
        schemas = Schemas({1: VALUE_SCHEMA, 2: VALUE_SCHEMA_V2})
        schemas.hold.clear()
        host = _host(tmp_path, pubsub, schemas)
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0}, offset_lag=3)
        await host.reconcile([a])
        await wait_until(lambda: schemas.asked >= 1 and host.reports()[0].rt_lag == 11, "paused with its lag")
        (report,) = host.reports()
        assert (report.status, report.rt_offset) == (ReplicaStatus.STARTED, 0)
        with pytest.raises(ReplicaNotReadyError):
            host.ready(store, 1, 0)
        schemas.hold.set()
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "ready")
        raw = host.ready(store, 1, 0).get(0, key(1))
        assert raw == encode_stored(2, v2)
        assert host.reports()[0].skipped == 0
        await host.close()

    async def test_unknown_schema_confirmed_missing_is_skipped_and_reported(self, tmp_path: Path, pubsub: PubSub) -> None:
        store, P = _store(), 2
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        k_p0 = keys_of_partition(0, P, 4)
        async with await pubsub.producer() as producer:
            await send_rt(producer, rt_topic, P, key(k_p0[0]), value("x"), [("schema-id", b"9")])
            await send_rt(producer, rt_topic, P, key(k_p0[1]), b"\xff\xff", data_headers(1))  # undecodable
            await send_rt(producer, rt_topic, P, key(k_p0[2]), value("wrong partition"), partition=1)
            await send_rt(producer, rt_topic, P, key(k_p0[3]), value("fine"))
        await write_push(pubsub, f"{store}_v1", P, {})
        schemas = Schemas()
        host = _host(tmp_path, pubsub, schemas)
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0, 1: 0})
        await host.reconcile([a])
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "caught up")
        skipped = {r.partition: r.skipped for r in host.reports()}
        assert skipped == {0: 2, 1: 1}
        assert _read(host, a, k_p0[3]) == value("fine")
        assert [_read(host, a, k) for k in k_p0[:3]] == [None, None, None]
        assert schemas.asked == 1
        storage = host.ready(store, 1, 0)
        assert storage.checkpoint(0).skipped == 2
        await host.close()

    async def test_consume_rt_flips_stop_and_resume_from_the_checkpoint(self, tmp_path: Path, pubsub: PubSub) -> None:
        store, P = _store(), 1
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        await write_push(pubsub, f"{store}_v1", P, {key(1): value("pushed")})
        host = _host(tmp_path, pubsub)
        consuming = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0})
        await host.reconcile([consuming])
        await wait_until(lambda: _all_ready(host, P), "ready")
        async with await pubsub.producer() as producer:
            await send_rt(producer, rt_topic, P, key(1), value("first"))
        await wait_until(lambda: _read(host, consuming, 1) == value("first"), "first write")

        backup = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0}, consume_rt=False)
        await host.reconcile([backup])
        async with await pubsub.producer() as producer:
            for i in range(3):
                await send_rt(producer, rt_topic, P, key(1), value("while a backup", i))
        # The backup keeps reporting its lag and does not move.
        await wait_until(lambda: host.reports()[0].rt_lag == 3, "lag of the backup")
        assert host.reports()[0].rt_offset == 1
        assert _read(host, backup, 1) == value("first")
        assert host.reports()[0].status is ReplicaStatus.READY  # ready stays ready

        await host.reconcile([consuming])  # rolled back to: resume from the checkpoint
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "caught up")
        assert _read(host, consuming, 1) == value("while a backup", 2)
        assert [c.offset for c in host.ready(store, 1, 0).changes(0)] == [0, 1, 2, 3]
        await host.close()

    async def test_start_offset_given_after_end_of_push(self, tmp_path: Path, pubsub: PubSub) -> None:
        """A hybrid version whose assignment names no start offset yet waits at end-of-push
        (not ready: it cannot know its lag) and starts once the controller names one."""
        store, P = _store(), 1
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        async with await pubsub.producer() as producer:
            await send_rt(producer, rt_topic, P, key(7), value("ignored"))
            await send_rt(producer, rt_topic, P, key(7), value("applied"))
        await write_push(pubsub, f"{store}_v1", P, {key(7): value("pushed")})
        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, P, hybrid=True)])
        await wait_until(lambda: host.hosted[(store, 1, "")].ingestion.partitions[0].checkpoint.end_of_push, "end-of-push")
        await asyncio.sleep(0.3)
        assert host.reports()[0].status is ReplicaStatus.STARTED
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 1})
        await host.reconcile([a])
        await wait_until(lambda: _caught_up(host, pubsub, rt_topic), "caught up")
        assert _read(host, a, 7) == value("applied")
        await host.close()

    async def test_real_time_topic_with_another_partition_count_is_an_error(self, tmp_path: Path, pubsub: PubSub) -> None:
        store = _store()
        await pubsub.create_topic(f"{store}_rt", 3)
        await write_push(pubsub, f"{store}_v1", 2, {})
        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, 2, hybrid=True, rt_start_offsets={0: 0, 1: 0})])
        await wait_until(lambda: set(_statuses(host).values()) == {ReplicaStatus.ERROR}, "error")
        assert "has 3 partitions" in (host.reports()[0].reason or "")
        await host.close()

    async def test_two_replicas_end_byte_identical(self, tmp_path: Path, pubsub: PubSub) -> None:
        """Two independent hosts consume the same topics, with writes flowing while they
        ingest, and end with identical LMDB contents: data, checkpoints and change logs."""
        store, P = _store(), 2
        rt_topic = f"{store}_rt"
        await pubsub.create_topic(rt_topic, P)
        async with await pubsub.producer() as producer:
            for i in range(200):
                await send_rt(producer, rt_topic, P, key(i % 50), value("early", i))
            await send_rt(producer, rt_topic, P, key(1), b"junk", data_headers(1))
        await write_push(pubsub, f"{store}_v1", P, {key(i): value("pushed", i) for i in range(500)})
        starts = {p: 0 for p in range(P)}
        a = assignment(store, 1, P, hybrid=True, rt_start_offsets=starts)
        hosts = [_host(tmp_path, pubsub, name=f"replica-{n}") for n in range(2)]
        for host in hosts:
            await host.reconcile([a])
        async with await pubsub.producer() as producer:
            for i in range(300):
                await send_rt(producer, rt_topic, P, key(i % 70), None if i % 9 == 0 else value("late", i))
        for host in hosts:
            await wait_until(lambda h=host: _caught_up(h, pubsub, rt_topic), "caught up")
        for host in hosts:
            await host.close()
        dumps = [VersionStorage(tmp_path / f"replica-{n}" / "versions" / f"{store}_v1", P, range(P)).dump() for n in range(2)]
        assert dumps[0] == dumps[1]
        names = set(dumps[0])
        assert names == {b"__checkpoints__", b"p0", b"p1", b"c0", b"c1"}
        assert sum(len(dumps[0][b"c%d" % p]) for p in range(P)) == 500  # every real-time record but the junk one


class TestHostedSet:
    async def test_repartition_drop_orphans_and_manifest(self, tmp_path: Path, pubsub: PubSub) -> None:
        store = _store()
        await write_push(pubsub, f"{store}_v1", 4, {key(i): value("a", i) for i in range(200)})
        await write_push(pubsub, f"{store}_v2", 4, {key(i): value("b", i) for i in range(200)})
        orphan = tmp_path / "host" / "versions" / "gone_v9"
        orphan.mkdir(parents=True)
        (orphan / "data.mdb").write_bytes(b"old")
        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, 4, [0, 1], incarnation="inc1")])
        assert not orphan.exists()  # removed at the first reconcile
        await wait_until(lambda: _statuses(host) == {0: ReplicaStatus.READY, 1: ReplicaStatus.READY}, "ready")
        v1_dir = tmp_path / "host" / "versions" / f"{store}_v1-inc1"
        assert v1_dir.is_dir()

        await host.reconcile([assignment(store, 1, 4, [1, 3], incarnation="inc1"), assignment(store, 2, 4, [2], incarnation="inc1")])
        await wait_until(lambda: sum(1 for r in host.reports() if r.status is ReplicaStatus.READY) == 3, "moved")
        storage = host.ready(store, 1, 1)
        assert storage.count(0) == 0 and storage.checkpoint(0) == Checkpoint()  # partition 0 moved away: dropped
        with pytest.raises(ReplicaNotReadyError):
            host.ready(store, 1, 0)
        assert storage.count(3) == sum(1 for i in range(200) if partition_for(key(i), 4) == 3)

        async def manifest() -> dict[str, Any]:
            return dict(orjson.loads((tmp_path / "host" / "hosting.json").read_bytes()))

        await wait_until(lambda: (tmp_path / "host" / "hosting.json").exists(), "manifest")
        await asyncio.sleep(0.2)  # the manifest is written on the writer thread after the change
        body = await manifest()
        listed = {(v["store"], v["version"]): (v["dir"], v["ready"], v["incarnation"]) for v in body["versions"]}
        assert listed == {(store, 1): (f"{store}_v1-inc1", [1, 3], "inc1"), (store, 2): (f"{store}_v2-inc1", [2], "inc1")}

        await host.reconcile([assignment(store, 2, 4, [2], incarnation="inc1")])
        assert not v1_dir.exists()  # dropped: files removed
        await wait_until(lambda: [v["version"] for v in orjson.loads((tmp_path / "host" / "hosting.json").read_bytes())["versions"]] == [2], "manifest without v1")
        await host.close()

    async def test_another_incarnation_is_another_directory(self, tmp_path: Path, pubsub: PubSub) -> None:
        """A store deleted and created again never reuses the old data."""
        store = _store()
        await write_push(pubsub, f"{store}_v1", 1, {key(1): value("old")})
        host = _host(tmp_path, pubsub)
        await host.reconcile([assignment(store, 1, 1, incarnation="aaa")])
        await wait_until(lambda: _all_ready(host, 1), "ready")
        await host.reconcile([assignment(store, 1, 1, incarnation="bbb")])
        assert sorted(p.name for p in (tmp_path / "host" / "versions").iterdir()) == [f"{store}_v1-bbb"]
        await host.close()

    async def test_unusable_names_are_refused(self, tmp_path: Path, pubsub: PubSub) -> None:
        host = _host(tmp_path, pubsub)
        bad = [
            Assignment("s", 1, "../escape", 1, (0,), "long", {1: VALUE_SCHEMA}),
            Assignment("s", 2, "s_v2", 1, (0,), "long", {1: VALUE_SCHEMA}, incarnation="../x"),
            Assignment("s", 3, ".hidden", 1, (0,), "long", {1: VALUE_SCHEMA}),
            Assignment("s", 4, "a/b", 1, (0,), "long", {1: VALUE_SCHEMA}),
        ]
        await host.reconcile(bad)
        assert host.hosted == {}
        assert list((tmp_path / "host" / "versions").iterdir()) == []
        assert not (tmp_path / "escape").exists()
        await host.close()
