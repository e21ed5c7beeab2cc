"""A storage server never resumes or serves a deleted store's data (issue 8, item 1), even
when the controller hands out the same store and version number again (as it would after
losing its metadata): what it hosts is keyed and named by the store's incarnation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.service import ServerConfig, StorageService
from venice.ingestion import decode_stored
from venice.protocol import HeartbeatAnswer, ReplicaStatus
from venice.pubsub.embedded import EmbeddedPubSub
from venice.wire import ControlKind, control_headers, data_headers, encode_control


async def _push(pubsub: EmbeddedPubSub, topic: str, records: dict[bytes, bytes]) -> None:
    async with await pubsub.producer() as producer:
        await producer.send(topic, 0, b"", encode_control({}), control_headers(ControlKind.START_OF_PUSH))
        for key, value in records.items():
            await producer.send(topic, 0, key, value, data_headers(1))
        await producer.send(topic, 0, b"", encode_control({"records": len(records)}), control_headers(ControlKind.END_OF_PUSH))


def _answer(log: Path, incarnation: str) -> HeartbeatAnswer:
    entry = {"store": "s", "incarnation": incarnation, "version": 1, "topic": "s_v1", "partitions_total": 1,
             "partitions": [0], "key_schema": "bytes", "value_schemas": {"1": "bytes"}}
    return HeartbeatAnswer.from_json({"assignment": [entry], "pubsub_url": f"embedded://{log}"})


async def _wait_ready(service: StorageService) -> None:
    for _ in range(400):
        if all(r.status is ReplicaStatus.READY for r in service.host.reports()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not READY")


async def test_a_new_incarnation_of_the_same_store_version_starts_from_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pubsub = EmbeddedPubSub(log)
    await pubsub.create_topic("s_v1", 1)
    await _push(pubsub, "s_v1", {b"old": b"deleted data"})
    service = StorageService(ServerConfig(tmp_path / "server", "http://127.0.0.1:9", server_id="s0"))
    try:
        await service.reconcile(_answer(log, "aaaaaaaaaaaa"))
        await _wait_ready(service)
        assert decode_stored(service.host.ready("s", 1, 0).get(0, b"old") or b"") == (1, b"deleted data")
        assert [p.name for p in (tmp_path / "server" / "versions").iterdir()] == ["s_v1-aaaaaaaaaaaa"]

        # The store is deleted and made again; its topic is new and still empty.
        await pubsub.delete_topic("s_v1")
        await pubsub.create_topic("s_v1", 1)
        await service.reconcile(_answer(log, "bbbbbbbbbbbb"))
        assert list(service.host.hosted) == [("s", 1, "bbbbbbbbbbbb")]
        assert [p.name for p in (tmp_path / "server" / "versions").iterdir()] == ["s_v1-bbbbbbbbbbbb"]
        [report] = service.host.reports()
        assert (report.incarnation, report.status, report.records) == ("bbbbbbbbbbbb", ReplicaStatus.STARTED, 0)
        await _push(pubsub, "s_v1", {b"new": b"fresh"})
        await _wait_ready(service)
        storage = service.host.ready("s", 1, 0)
        assert storage.get(0, b"old") is None
        assert decode_stored(storage.get(0, b"new") or b"") == (1, b"fresh")
    finally:
        await service.close()
        await pubsub.close()


async def test_files_of_another_incarnation_left_from_before_a_restart_are_removed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pubsub = EmbeddedPubSub(log)
    await pubsub.create_topic("s_v1", 1)
    versions = tmp_path / "server" / "versions"
    (versions / "s_v1-aaaaaaaaaaaa").mkdir(parents=True)  # a deleted incarnation's copy
    (versions / "s_v1").mkdir()  # a copy from before incarnations
    service = StorageService(ServerConfig(tmp_path / "server", "http://127.0.0.1:9", server_id="s0"))
    try:
        await service.reconcile(_answer(log, "bbbbbbbbbbbb"))
        assert sorted(p.name for p in versions.iterdir()) == ["s_v1-bbbbbbbbbbbb"]
    finally:
        await service.close()
        await pubsub.close()
