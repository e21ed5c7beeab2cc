"""Ingestion of a version topic into LMDB, on the embedded log (no HTTP involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.ingestion import VersionIngestion
from server.storage import VersionStorage, decode_stored
from venice.pubsub.embedded import EmbeddedPubSub
from venice.wire import ControlKind, control_headers, data_headers, encode_control


async def _write_push(pubsub: EmbeddedPubSub, topic: str, records: dict[bytes, bytes], *, eop_count: int | None = None) -> None:
    await pubsub.create_topic(topic, 1)
    async with await pubsub.producer() as producer:
        await producer.send(topic, 0, b"", encode_control({}), control_headers(ControlKind.START_OF_PUSH))
        for key, value in records.items():
            await producer.send(topic, 0, key, value, data_headers(1))
        count = len(records) if eop_count is None else eop_count
        await producer.send(topic, 0, b"", encode_control({"records": count}), control_headers(ControlKind.END_OF_PUSH))


async def _ingest(pubsub: EmbeddedPubSub, storage: VersionStorage, topic: str) -> VersionIngestion:
    ingestion = VersionIngestion("s", 1, topic, [0], storage, pubsub)
    await asyncio.wait_for(ingestion.run(), 20)
    return ingestion


class TestVersionIngestion:
    async def test_applies_everything_then_ready(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        records = {b"k%d" % i: b"v%d" % i for i in range(5000)}
        await _write_push(pubsub, "s_v1", records)
        storage = VersionStorage(tmp_path / "db", 1, [0])
        ingestion = await _ingest(pubsub, storage, "s_v1")
        assert ingestion.partitions[0].status == "READY"
        assert storage.count(0) == 5000
        assert decode_stored(storage.get(0, b"k42") or b"") == (1, b"v42")
        assert storage.checkpoint(0).offset == 5002

    async def test_count_mismatch_with_end_of_push_is_an_error(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        await _write_push(pubsub, "s_v1", {b"a": b"1", b"b": b"2"}, eop_count=3)
        ingestion = await _ingest(pubsub, VersionStorage(tmp_path / "db", 1, [0]), "s_v1")
        assert ingestion.partitions[0].status == "ERROR"
        assert "3 records" in (ingestion.partitions[0].reason or "")

    async def test_resumes_from_checkpoint_without_reapplying(self, tmp_path: Path) -> None:
        pubsub = EmbeddedPubSub(tmp_path / "log")
        records = {b"k%d" % i: b"v" for i in range(3000)}
        await _write_push(pubsub, "s_v1", records)
        storage = VersionStorage(tmp_path / "db", 1, [0])
        first = VersionIngestion("s", 1, "s_v1", [0], storage, pubsub)
        consumer = await pubsub.consumer()
        await consumer.assign(first.pending())
        batch = await consumer.getmany(max_records=1000)
        await consumer.close()
        for tp, messages in batch.items():
            first._apply(tp.partition, messages)  # a partial ingestion, then a "crash"
        assert 0 < storage.checkpoint(0).offset < 3002
        storage.close()

        reopened = VersionStorage(tmp_path / "db", 1, [0])
        second = await _ingest(pubsub, reopened, "s_v1")
        assert second.partitions[0].status == "READY"
        assert reopened.count(0) == 3000
        assert reopened.checkpoint(0).records == 3000  # nothing applied twice

    async def test_waits_for_a_topic_created_after_the_assignment(self, tmp_path: Path) -> None:
        """The controller may assign a version while it is still creating its topic."""
        pubsub = EmbeddedPubSub(tmp_path / "log")
        storage = VersionStorage(tmp_path / "db", 1, [0])
        ingestion = VersionIngestion("s", 1, "s_v1", [0], storage, pubsub)
        task = asyncio.create_task(ingestion.run())
        await asyncio.sleep(0.5)
        assert ingestion.partitions[0].status == "STARTED"
        await _write_push(pubsub, "s_v1", {b"a": b"1"})
        await asyncio.wait_for(task, 20)
        assert ingestion.partitions[0].status == "READY"
        assert storage.count(0) == 1

    async def test_a_topic_that_never_appears_is_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("server.ingestion.TOPIC_WAIT_S", 0.5)
        pubsub = EmbeddedPubSub(tmp_path / "log")
        ingestion = await _ingest(pubsub, VersionStorage(tmp_path / "db", 1, [0]), "s_v1")
        assert ingestion.partitions[0].status == "ERROR"
        assert "does not exist" in (ingestion.partitions[0].reason or "")
