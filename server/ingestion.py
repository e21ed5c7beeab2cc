"""Ingestion of a version topic's partitions into LMDB.

Free of any HTTP code so an embedded client can reuse it. One :class:`VersionIngestion`
per hosted store-version consumes the assigned partitions from their checkpoints, writes
each batch and its checkpoint in one LMDB transaction, and keeps per-partition state
that the server reports to the controller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.storage import Checkpoint, VersionStorage, encode_stored
from venice.errors import PubSubError, TopicNotFoundError, VeniceError
from venice.pubsub import PubSub
from venice.structs import Message, TopicPartition
from venice.wire import ControlKind, control_kind, control_payload, schema_id_of

__all__ = ["PartitionState", "VersionIngestion"]

log = logging.getLogger("venice.server.ingestion")

MAX_BATCH_RECORDS = 2000
TOPIC_WAIT_S = 30.0
"""How long an assigned version's topic may be missing before its partitions go ERROR."""


@dataclass
class PartitionState:
    status: str = "STARTED"
    """STARTED (ingesting), READY (end-of-push applied) or ERROR."""
    offset: int = 0
    records: int = 0
    reason: str | None = None
    ingested: int = 0
    """Records this process applied (0 for a partition resumed at end-of-push)."""


class VersionIngestion:
    """Consumes one store-version's assigned partitions into its :class:`VersionStorage`."""

    def __init__(
        self,
        store: str,
        version: int,
        topic: str,
        partitions: list[int],
        storage: VersionStorage,
        pubsub: PubSub,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.version, self.topic = store, version, topic
        self.storage = storage
        self.pubsub = pubsub
        self.on_change = on_change
        self.partitions: dict[int, PartitionState] = {}
        self._checkpoints: dict[int, Checkpoint] = {}
        for partition in partitions:
            checkpoint = storage.checkpoint(partition)
            self._checkpoints[partition] = checkpoint
            self.partitions[partition] = PartitionState(
                "READY" if checkpoint.end_of_push else "STARTED", checkpoint.offset, checkpoint.records
            )

    def is_ready(self, partition: int) -> bool:
        state = self.partitions.get(partition)
        return state is not None and state.status == "READY"

    def pending(self) -> dict[TopicPartition, int]:
        return {
            TopicPartition(self.topic, p): self._checkpoints[p].offset
            for p, state in self.partitions.items()
            if state.status == "STARTED"
        }

    async def run(self) -> None:
        """Ingest until every partition is READY or ERROR. Pub-sub outages are retried."""
        topic_missing_since: float | None = None
        while self.pending():
            try:
                await self._consume()
            except TopicNotFoundError as exc:
                # The controller assigns a new version while it is still creating the
                # topic, and a broker's metadata can lag its creation: wait a while.
                now = time.monotonic()
                topic_missing_since = topic_missing_since if topic_missing_since is not None else now
                if now - topic_missing_since >= TOPIC_WAIT_S:
                    self._fail_all(f"{exc} (waited {TOPIC_WAIT_S:.0f}s for it)")
                else:
                    await asyncio.sleep(0.2)
            except PubSubError as exc:
                log.warning("%s: pub-sub unavailable, retrying: %s", self.topic, exc)
                await asyncio.sleep(1.0)
            except VeniceError as exc:
                self._fail_all(str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must show up as ERROR, not a silent dead task
                log.exception("%s: ingestion failed", self.topic)
                self._fail_all(f"{type(exc).__name__}: {exc}")

    async def _consume(self) -> None:
        consumer = await self.pubsub.consumer()
        try:
            await consumer.assign(self.pending())
            while self.pending():
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH_RECORDS)
                changed = False
                for tp, messages in batches.items():
                    if self.partitions[tp.partition].status == "STARTED":
                        changed |= self._apply(tp.partition, messages)
                if changed:
                    await consumer.assign(self.pending())
                    self.on_change()
        finally:
            await consumer.close()

    def _apply(self, partition: int, messages: list[Message]) -> bool:
        """Write one batch; True when the partition's status changed."""
        checkpoint = self._checkpoints[partition]
        sop, eop, records = checkpoint.start_of_push, checkpoint.end_of_push, checkpoint.records
        writes: list[tuple[bytes, bytes | None]] = []
        expected: int | None = None
        offset = checkpoint.offset
        for message in messages:
            if message.offset < offset:
                continue  # already applied (a redelivery after reconnect)
            offset = message.offset + 1
            kind = control_kind(message)
            if kind is None:
                value = message.value
                writes.append((message.key, None if value is None else encode_stored(schema_id_of(message), value)))
                records += 1
            elif kind is ControlKind.START_OF_PUSH:
                sop = True
            elif kind is ControlKind.END_OF_PUSH:
                eop = True
                expected = int(control_payload(message).get("records", records))
                break
        new = Checkpoint(offset, eop, sop, records)
        self.storage.apply(partition, writes, new)
        self._checkpoints[partition] = new
        state = self.partitions[partition]
        state.ingested += records - checkpoint.records
        state.offset, state.records = offset, records
        if not eop:
            return False
        if expected is not None and expected != records:
            state.status, state.reason = "ERROR", f"end-of-push says {expected} records, applied {records}"
        else:
            self.storage.sync()
            state.status = "READY"
            log.info("%s partition %d ready: %d records", self.topic, partition, records)
        return True

    def _fail_all(self, reason: str) -> None:
        log.error("%s: %s", self.topic, reason)
        for state in self.partitions.values():
            if state.status == "STARTED":
                state.status, state.reason = "ERROR", reason
        self.on_change()
