"""The controller's real-time topic work on both pub-sub backends (the embedded log and the
real Kafka broker): the janitor creates ``<store>_rt`` with the store's partitions, never
lets a new incarnation of a store read an older one's real-time records, and versions get
their start offsets from the log (beginning, or open time minus the rewind)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.app import Controller
from controller.persistence import MetadataFile
from controller.state import Hybrid
from venice.errors import PubSubError
from venice.protocol import ReplicaReport, ReplicaStatus
from venice.pubsub import PubSub, connect
from venice.pubsub.embedded import EmbeddedPubSub
from venice.structs import TopicPartition

MEMBER = {"type": "record", "name": "Member", "fields": [{"name": "visits", "type": "long"}]}
HOUR = Hybrid(rewind_seconds=3600, offset_lag=10)


def _name() -> str:
    return f"h{uuid.uuid4().hex[:10]}"  # the Kafka broker is shared by the session


@pytest.fixture
async def pubsub(pubsub_url: str) -> AsyncIterator[PubSub]:
    async with connect(pubsub_url) as backend:
        yield backend


def _controller(tmp_path: Path, pubsub: PubSub) -> Controller:
    controller = Controller(MetadataFile(tmp_path / "controller"), pubsub)
    controller.state.heartbeat("s0", "http://127.0.0.1:9", [], now=time.time())
    return controller


async def _write(pubsub: PubSub, topic: str, records: list[tuple[int, bytes, int | None]]) -> None:
    """``(partition, value, timestamp_ms)`` records to ``topic``."""
    async with await pubsub.producer() as producer:
        for partition, value, timestamp_ms in records:
            await producer.send(topic, partition, b"k", value, timestamp_ms=timestamp_ms)


async def _all_records(pubsub: PubSub, topic: str) -> list[bytes | None]:
    """Every record value of ``topic``, read from the beginning."""
    beginning, ends = await pubsub.beginning_offsets(topic), await pubsub.end_offsets(topic)
    wanted = sum(ends[p] - beginning[p] for p in ends)
    got: list[bytes | None] = []
    async with await pubsub.consumer() as consumer:
        await consumer.assign({TopicPartition(topic, p): o for p, o in beginning.items()})
        deadline = time.monotonic() + 20
        while len(got) < wanted and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(m.value for m in messages)
    return got


async def test_a_hybrid_store_gets_its_real_time_topic_and_versions_its_beginning(tmp_path: Path, pubsub: PubSub) -> None:
    controller = _controller(tmp_path, pubsub)
    name = _name()
    state = controller.state
    state.create_store(name, "long", MEMBER, 3, 1, hybrid=HOUR)
    early = state.open_version(name, now=time.time())  # before the topic exists: no offsets yet
    controller.commit()
    assert early.rt_start_offsets == {}
    await controller.topics_once()
    assert await pubsub.partition_count(f"{name}_rt") == 3
    assert controller.state.version(name, 1).rt_start_offsets == {0: 0, 1: 0, 2: 0}
    assert controller.state.topics_to_create == set()
    reloaded = MetadataFile(tmp_path / "controller").load(pubsub.url, 15.0)
    assert reloaded.topics_to_create == set() and reloaded.version(name, 1).rt_start_offsets == {0: 0, 1: 0, 2: 0}
    # Made batch-only: the topic goes; made hybrid again: a new, empty one.
    await _write(pubsub, f"{name}_rt", [(0, b"old", None), (2, b"old", None)])
    controller.state.update_store(name, hybrid=None)
    controller.state.update_store(name, hybrid=HOUR)
    controller.commit()
    await controller.topics_once()
    assert await pubsub.end_offsets(f"{name}_rt") == {0: 0, 1: 0, 2: 0}
    await controller.topics_once()  # nothing left to do: the topic stays
    assert f"{name}_rt" in await pubsub.list_topics()


async def test_a_store_deleted_and_created_again_never_sees_the_old_records(tmp_path: Path, pubsub: PubSub) -> None:
    controller = _controller(tmp_path, pubsub)
    name = _name()
    controller.state.create_store(name, "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    await _write(pubsub, f"{name}_rt", [(0, b"old-0", None), (1, b"old-1", None), (1, b"old-2", None)])
    # Deleted and created again before the janitor's next round.
    controller.state.delete_store(name)
    controller.state.create_store(name, "long", MEMBER, 2, 1, hybrid=HOUR)
    version = controller.state.open_version(name, now=time.time())
    controller.commit()
    await controller.topics_for(name)  # what POST /stores does at once
    assert await _all_records(pubsub, f"{name}_rt") == []
    assert controller.state.version(name, version.number).rt_start_offsets == {0: 0, 1: 0}
    await _write(pubsub, f"{name}_rt", [(1, b"new", None)])
    assert await _all_records(pubsub, f"{name}_rt") == [b"new"]


class _StuckDeletes(EmbeddedPubSub):
    """The embedded log, except that deleting topics fails while ``stuck`` (a broker that
    cannot delete yet)."""

    stuck = True

    async def delete_topic(self, topic: str) -> None:
        if self.stuck:
            raise PubSubError(f"cannot delete {topic} now")
        await super().delete_topic(topic)


async def test_creation_waits_while_the_old_topic_cannot_be_deleted(tmp_path: Path) -> None:
    pubsub = _StuckDeletes(tmp_path / "log")
    controller = _controller(tmp_path, pubsub)
    controller.state.create_store("m", "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    await _write(pubsub, "m_rt", [(0, b"old", None)])
    controller.state.delete_store("m")
    controller.state.create_store("m", "long", MEMBER, 2, 1, hybrid=HOUR)
    controller.state.open_version("m", now=time.time())
    controller.commit()
    for _ in range(2):
        await controller.topics_for("m")
        await controller.topics_once()
    # The old incarnation's topic is still there: the new store must not adopt it.
    assert await _all_records(pubsub, "m_rt") == [b"old"]
    assert controller.state.topics_to_create == {"m_rt"} and "m_rt" in controller.state.topics_to_delete
    assert controller.state.version("m", 1).rt_start_offsets == {}
    assert controller.state.rt_offsets_plan("m", time.time()) is None
    pubsub.stuck = False
    await controller.topics_once()
    assert await _all_records(pubsub, "m_rt") == []
    assert controller.state.topics_to_create == set() == controller.state.topics_to_delete
    assert controller.state.version("m", 1).rt_start_offsets == {0: 0, 1: 0}


async def test_versions_start_at_open_time_minus_the_rewind(tmp_path: Path, pubsub: PubSub) -> None:
    controller = _controller(tmp_path, pubsub)
    name = _name()
    controller.state.create_store(name, "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    now = time.time()
    ms = int(now * 1000)
    # Partition 0: two writes two hours ago, then two ten minutes ago. Partition 1: one, two hours ago.
    await _write(pubsub, f"{name}_rt", [
        (0, b"a", ms - 7_200_000), (0, b"b", ms - 7_100_000), (0, b"c", ms - 600_000), (0, b"d", ms - 500_000),
        (1, b"e", ms - 7_200_000),
    ])  # fmt: skip
    # The first version (no current one yet) starts at the beginning: writes before the first push count.
    assert await controller.rt_start_offsets(name, now) == ({0: 0, 1: 0}, 1)
    controller.state.open_version(name, now=now, rt_start_offsets={0: 0, 1: 0})
    controller.state.end_of_push(name, 1, 0)
    reports = [ReplicaReport(name, 1, p, ReplicaStatus.READY) for p in (0, 1)]
    controller.state.heartbeat("s0", "http://127.0.0.1:9", reports, now=time.time())
    assert controller.state.store(name).current_version == 1
    # Later versions replay from an hour before they were opened: partition 0 from "c",
    # partition 1 from its end (every record there is older).
    assert await controller.rt_start_offsets(name, now) == ({0: 2, 1: 1}, 1)


async def test_a_real_time_topic_deleted_behind_the_controllers_back_is_made_again(tmp_path: Path, pubsub: PubSub) -> None:
    controller = _controller(tmp_path, pubsub)
    name = _name()
    controller.state.create_store(name, "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    await pubsub.delete_topic(f"{name}_rt")
    assert await controller.rt_start_offsets(name, time.time()) is None
    assert controller.state.topics_to_create == {f"{name}_rt"}
    await controller.topics_once()
    assert await pubsub.partition_count(f"{name}_rt") == 2


async def test_a_topic_left_by_a_crash_is_adopted_and_a_wrong_one_replaced(tmp_path: Path, pubsub: PubSub) -> None:
    controller = _controller(tmp_path, pubsub)
    ours, wrong = _name(), _name()
    # Created before a crash kept the metadata from saying so: same partition count, adopted.
    await pubsub.create_topic(f"{ours}_rt", 2)
    await _write(pubsub, f"{ours}_rt", [(1, b"kept", None)])
    controller.state.create_store(ours, "long", MEMBER, 2, 1, hybrid=HOUR)
    # Another partition count cannot be the store's: deleted, then created right.
    await pubsub.create_topic(f"{wrong}_rt", 5)
    controller.state.create_store(wrong, "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    assert await _all_records(pubsub, f"{ours}_rt") == [b"kept"]
    assert controller.state.topics_to_create == {f"{wrong}_rt"}
    await controller.topics_once()
    assert await pubsub.partition_count(f"{wrong}_rt") == 2
    assert controller.state.topics_to_create == set()


class _ReplacedWhileAsked(EmbeddedPubSub):
    """The embedded log, except that the first time offsets are asked for, ``replace`` runs
    meanwhile (the store made batch-only and hybrid again, and the janitor's round)."""

    replace: Any = None

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        offsets = await super().offsets_for_time(topic, timestamp_ms)
        replace, self.replace = self.replace, None
        if replace is not None:
            await replace()
        return offsets


async def test_start_offsets_asked_while_the_topic_was_replaced_are_asked_again(tmp_path: Path) -> None:
    """Offsets read from the old topic must not open a version once the new one exists
    (they would point into it); they are asked of the new topic, under its epoch."""
    pubsub = _ReplacedWhileAsked(tmp_path / "log")
    controller = _controller(tmp_path, pubsub)
    name = _name()
    controller.state.create_store(name, "long", MEMBER, 2, 1, hybrid=HOUR)
    await controller.topics_once()
    two_hours_ago = int(time.time() * 1000) - 7_200_000
    await _write(pubsub, f"{name}_rt", [(0, b"a", two_hours_ago), (0, b"b", two_hours_ago), (1, b"c", two_hours_ago)])
    controller.state.open_version(name, now=time.time(), rt_start_offsets={0: 0, 1: 0}, rt_epoch=1)
    controller.state.end_of_push(name, 1, 0)
    reports = [ReplicaReport(name, 1, p, ReplicaStatus.READY) for p in (0, 1)]
    controller.state.heartbeat("s0", "http://127.0.0.1:9", reports, now=time.time())
    # The old topic's records are two hours old: its start offsets for a new version are its end.
    assert await controller.rt_start_offsets(name, time.time()) == ({0: 2, 1: 1}, 1)

    async def replace() -> None:
        controller.state.update_store(name, hybrid=None)
        controller.state.update_store(name, hybrid=HOUR)
        await controller.topics_once()  # deletes the old topic and makes the new one
        await _write(pubsub, f"{name}_rt", [(1, b"new", None)])

    pubsub.replace = replace
    # Asked again of the new topic (its one record is recent), under the new epoch.
    assert await controller.rt_start_offsets(name, time.time()) == ({0: 0, 1: 0}, 2)
    assert controller.state.store(name).rt_epoch == 2
