"""Keeping one hosted store-version fed: its version topic, then its real-time topic.

One :class:`VersionIngestion` per hosted store-version runs one task with one consumer.
Each assigned partition first applies the version topic from its checkpoint up to
end-of-push; a hybrid version then applies the real-time topic from the offset the
controller chose for it (push start minus rewind) while the assignment says
``consume_rt``. Record decisions are :mod:`venice.ingestion.records`; each batch and its
checkpoint are written in one transaction on the host's writer thread.

A partition is READY once end-of-push is applied and, for a hybrid version that
consumes the real-time topic, its real-time lag (end offset - next offset, polled about
once a second) is at most the store's ``offset_lag``. Ready stays ready until the
partition is unassigned or fails.

A real-time record naming a value schema this replica does not know pauses its
partition (the others keep flowing) until the host's schema source answers: the
schema is then applied, or, when confirmed not to exist, the record is skipped.

Real-time offsets are offsets of one incarnation of the real-time topic, the
assignment's ``rt_epoch``; a checkpoint of another epoch is not read from, and is
replaced by the new epoch's start offset once the assignment names one. When the log
does not hold the offset a partition reads next (retention deleted it), the consumer
says so (:class:`~venice.errors.OffsetOutOfRangeError`) and the partition goes on
where :func:`~venice.ingestion.records.rt_resume` says, counting what it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from venice.errors import OffsetOutOfRangeError, PubSubError, TopicNotFoundError, VeniceError
from venice.ingestion.heap import release_free_heap
from venice.ingestion.records import Checkpoint, Outcome, SkipKind, apply_rt_batch, apply_version_batch, rt_adopt, rt_resume
from venice.ingestion.schemas import StoreCodecs
from venice.ingestion.storage import Reader, VersionStorage
from venice.ingestion.writer import Writer
from venice.protocol import Assignment, ReplicaReport, ReplicaStatus
from venice.pubsub import Consumer, PubSub
from venice.structs import Message, TopicPartition

__all__ = ["PartitionState", "StoreSchemas", "VersionIngestion"]

log = logging.getLogger("venice.ingestion")

MAX_BATCH_RECORDS = 2000
POLL_MS = 500
TOPIC_WAIT_S = 30.0
"""How long an assigned version's topic may be missing before its partitions go ERROR."""
LAG_POLL_S = 1.0
"""How often a hybrid version asks the real-time topic's end offsets (its lag)."""
CLOSE_TIMEOUT_S = 10.0


async def _close(consumer: Consumer, topic: str) -> None:
    """Close a consumer we are done with; one that does not close in time is abandoned
    (logged) rather than holding up a version's teardown."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await consumer.close()
    except TimeoutError:
        log.warning("%s: a consumer did not close within %.0f s; abandoned", topic, CLOSE_TIMEOUT_S)


@dataclass
class StoreSchemas:
    """A store's value schemas on one host, shared by its hosted versions."""

    schemas: StoreCodecs
    missing: set[int] = field(default_factory=set)
    """Ids the schema source confirmed do not exist (records naming them are skipped)."""

    def learn(self, schemas: dict[int, object] | None) -> bool:
        new = self.schemas.add(schemas or {})
        self.missing -= self.schemas.ids()
        return new


@dataclass
class PartitionState:
    """One assigned partition, as the ingestion loop and the reports see it."""

    partition: int
    checkpoint: Checkpoint
    status: ReplicaStatus = ReplicaStatus.STARTED
    reason: str | None = None
    ingested: int = 0
    """Data records this process applied (version and real-time topics)."""
    ingested_bytes: int = 0
    """Key and value bytes of the records this process read and processed (applied or skipped)."""
    vt_end: int | None = None
    """The version topic's end offset, as last polled (only before end-of-push)."""
    rt_end: int | None = None
    """The real-time topic's end offset, as last polled."""
    need_schema: int | None = None
    """Paused: the next real-time record names this unknown value schema id."""
    logged: set[SkipKind] = field(default_factory=set)

    def rt_lag(self, epoch: int) -> int | None:
        """Real-time records of the topic of ``epoch`` not applied yet (``None``: unknown,
        or this partition does not read that topic yet)."""
        rt_offset = self.checkpoint.rt_next(epoch)
        if rt_offset is None or self.rt_end is None:
            return None
        return max(0, self.rt_end - rt_offset)

    def version_lag(self) -> int | None:
        """Version-topic records not applied yet: 0 after end-of-push (``None``: not polled yet)."""
        if self.checkpoint.end_of_push:
            return 0
        if self.vt_end is None:
            return None
        return max(0, self.vt_end - self.checkpoint.offset)


class VersionIngestion:
    """Consumes one store-version's assigned partitions into its :class:`VersionStorage`."""

    def __init__(
        self,
        assignment: Assignment,
        storage: VersionStorage,
        pubsub: PubSub,
        writer: Writer,
        schemas: StoreSchemas,
        *,
        need_schema: Callable[[int], None],
        on_change: Callable[[VersionIngestion], None],
    ) -> None:
        self.assignment = assignment
        self.storage = storage
        self.pubsub = pubsub
        self.writer = writer
        self.schemas = schemas
        self._need_schema = need_schema
        self._on_change = on_change
        self.partitions: dict[int, PartitionState] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_lag_poll = -LAG_POLL_S
        self._last_vt_poll = -LAG_POLL_S
        self._rt_verified = False
        self._rt_checked_at = -LAG_POLL_S
        self._rt_missing_logged = False
        self._reseek = False
        self._stopping = False
        """A batch stopped short of what the consumer returned: seek to the checkpoints."""

    # -- identity ---------------------------------------------------------------------------
    @property
    def store(self) -> str:
        return self.assignment.store

    @property
    def version(self) -> int:
        return self.assignment.version

    @property
    def topic(self) -> str:
        return self.assignment.topic

    @property
    def rt_topic(self) -> str | None:
        hybrid = self.assignment.hybrid
        return None if hybrid is None else hybrid.real_time_topic

    @property
    def consumes_rt(self) -> bool:
        return self.assignment.hybrid is not None and self.assignment.consume_rt

    @property
    def rt_epoch(self) -> int:
        """Which incarnation of the real-time topic the assignment means."""
        return self.assignment.rt_epoch

    def _rt_next(self, state: PartitionState) -> int | None:
        """Where ``state`` reads the current real-time topic next (``None``: it does not)."""
        return state.checkpoint.rt_next(self.rt_epoch) if self.assignment.hybrid is not None else None

    # -- control (event loop) -----------------------------------------------------------------
    async def start(self) -> None:
        """Read the checkpoints and start consuming."""
        await self._add_partitions(self.assignment.partitions)
        self._task = asyncio.create_task(self._run(), name=f"ingest-{self.topic}")

    def update(self, assignment: Assignment) -> None:
        """A newer assignment of the same store-version (``consume_rt``, start offsets, schemas).
        Partition changes go through :meth:`set_partitions`."""
        self.assignment = assignment
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def set_partitions(self, partitions: tuple[int, ...]) -> None:
        """The controller moved partitions of this version to or from this host."""
        for partition in [p for p in self.partitions if p not in partitions]:
            self.partitions.pop(partition)
            await self.writer.run(self.storage.drop_partition, partition)
        await self._add_partitions([p for p in partitions if p not in self.partitions])
        self._on_change(self)
        self.wake()

    async def _add_partitions(self, partitions: tuple[int, ...] | list[int]) -> None:
        if not partitions:
            return

        def open_and_read() -> list[Checkpoint]:
            self.storage.open_partitions(partitions)
            return [self.storage.checkpoint(p) for p in partitions]

        for partition, checkpoint in zip(partitions, await self.writer.run(open_and_read), strict=True):
            state = PartitionState(partition, checkpoint)
            if checkpoint.failed:
                state.status, state.reason = ReplicaStatus.ERROR, checkpoint.failed
            self.partitions[partition] = state
            self._check_ready(state)

    async def stop(self) -> None:
        """Stop consuming; returns once no write of this version is queued or running."""
        if self._task is not None:
            # The flag ends the loop even if a library swallows the cancellation (asyncio's
            # own wait_for does when the awaited thing finishes at the same moment).
            self._stopping = True
            self.wake()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.writer.barrier()

    # -- reads of the state ------------------------------------------------------------------
    def is_ready(self, partition: int) -> bool:
        state = self.partitions.get(partition)
        return state is not None and state.status is ReplicaStatus.READY

    def ready_partitions(self) -> list[int]:
        return sorted(p for p, s in self.partitions.items() if s.status is ReplicaStatus.READY)

    def reports(self) -> list[ReplicaReport]:
        return [
            ReplicaReport(
                store=self.store,
                version=self.version,
                partition=p,
                status=s.status,
                offset=s.checkpoint.offset,
                records=s.checkpoint.records,
                reason=s.reason,
                rt_offset=self._rt_next(s),
                rt_lag=s.rt_lag(self.rt_epoch) if self.assignment.hybrid is not None else None,
                skipped=s.checkpoint.skipped,
                incarnation=self.assignment.incarnation or None,
                rt_lost=s.checkpoint.rt_lost,
            )
            for p, s in sorted(self.partitions.items())
        ]

    # -- the loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        topic_missing_since: float | None = None
        while not self._stopping:
            try:
                await self._consume()
            except OffsetOutOfRangeError as exc:
                try:
                    await self._out_of_range(exc)
                except PubSubError as again:
                    log.warning("%s: %s; cannot ask the log's bounds yet, retrying: %s", self.topic, exc, again)
                    await asyncio.sleep(1.0)
            except TopicNotFoundError as exc:
                # The controller assigns a new version while it is still creating the
                # topic, and a broker's metadata can lag its creation: wait a while.
                try:
                    version_topic_exists = await self._topic_exists(self.topic)
                except PubSubError:
                    version_topic_exists = False
                if version_topic_exists:
                    self._rt_verified = False  # the real-time topic went away: look again
                    await asyncio.sleep(LAG_POLL_S)
                    continue
                now = time.monotonic()
                topic_missing_since = topic_missing_since if topic_missing_since is not None else now
                if now - topic_missing_since >= TOPIC_WAIT_S:
                    self._fail(f"{exc} (waited {TOPIC_WAIT_S:.0f}s for it)", only_before_eop=True)
                else:
                    await asyncio.sleep(0.2)
            except PubSubError as exc:
                log.warning("%s: pub-sub unavailable, retrying: %s", self.topic, exc)
                await asyncio.sleep(1.0)
            except VeniceError as exc:
                self._fail(str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must show up as ERROR, not a silent dead task
                log.exception("%s: ingestion failed", self.topic)
                self._fail(f"{type(exc).__name__}: {exc}")

    async def _topic_exists(self, topic: str) -> bool:
        try:
            await self.pubsub.partition_count(topic)
        except TopicNotFoundError:
            return False
        return True

    async def _consume(self) -> None:
        consumer: Consumer | None = None
        assigned: dict[TopicPartition, int] = {}
        try:
            while not self._stopping:
                self._wake.clear()
                await self._maintain()
                positions = await self._positions()
                if not positions:
                    if consumer is not None:
                        await _close(consumer, self.topic)
                        consumer, assigned = None, {}
                        release_free_heap()  # the burst is over: its buffers' pages go back to the OS
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LAG_POLL_S if self._polls_lag() else None):
                            await self._wake.wait()
                    continue
                if consumer is None:
                    consumer = await self.pubsub.consumer()
                # A partition that only dropped out (its end-of-push applied) stays assigned:
                # assigning again drops what the consumer prefetched for the others and waits
                # out its fetch in flight (up to the broker's fetch wait, 500 ms), once per
                # partition that finishes. Records still read for it are not applied (below).
                if not positions.keys() <= assigned.keys() or self._reseek:
                    await consumer.assign(positions)
                    assigned, self._reseek = positions, False
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_BATCH_RECORDS)
                for tp, messages in batches.items():
                    if not messages:
                        continue
                    if tp in positions:
                        await self._apply(tp, messages)
                    else:
                        self._reseek = True  # read past a partition not wanted now: seek every one to its checkpoint

        finally:
            if consumer is not None:
                await _close(consumer, self.topic)

    async def _positions(self) -> dict[TopicPartition, int]:
        """Where each partition reads next: its version topic until end-of-push, then the
        real-time topic while consuming it (not while paused for a schema)."""
        positions: dict[TopicPartition, int] = {}
        rt_wanted: dict[int, int] = {}
        for partition, state in self.partitions.items():
            if state.status is ReplicaStatus.ERROR:
                continue
            checkpoint = state.checkpoint
            rt_next = self._rt_next(state)
            if not checkpoint.end_of_push:
                positions[TopicPartition(self.topic, partition)] = checkpoint.offset
            elif self.consumes_rt and rt_next is not None and state.need_schema is None:
                rt_wanted[partition] = rt_next
        rt_topic = self.rt_topic
        if rt_wanted and rt_topic is not None and await self._rt_usable(rt_topic):
            for partition, rt_next in rt_wanted.items():
                wanted = self.partitions.get(partition)  # still assigned, and still there, after the await
                if wanted is not None and self._rt_next(wanted) == rt_next and wanted.status is not ReplicaStatus.ERROR:
                    positions[TopicPartition(rt_topic, partition)] = rt_next
        return positions

    async def _rt_usable(self, rt_topic: str) -> bool:
        """The real-time topic exists with the store's partition count (checked once)."""
        if self._rt_verified:
            return True
        now = time.monotonic()
        if now - self._rt_checked_at < LAG_POLL_S:
            return False
        self._rt_checked_at = now
        try:
            count = await self.pubsub.partition_count(rt_topic)
        except TopicNotFoundError:
            if not self._rt_missing_logged:
                log.warning("%s: real-time topic %s does not exist (yet); waiting for it", self.topic, rt_topic)
                self._rt_missing_logged = True
            return False
        if count != self.assignment.partitions_total:
            self._fail(
                f"real-time topic {rt_topic} has {count} partitions, the store {self.assignment.partitions_total}",
                only_after_eop=True,
            )
            return False
        self._rt_verified = True
        return True

    def _polls_lag(self) -> bool:
        """Hybrid versions past end-of-push poll their lag, consuming or not (a backup's
        lag says how far behind it would start if rolled back to)."""
        return any(self._rt_next(s) is not None and s.status is not ReplicaStatus.ERROR for s in self.partitions.values())

    async def _maintain(self) -> None:
        """Between batches: adopt real-time start offsets, resume partitions whose schema
        arrived, poll the lag, and promote partitions that became ready."""
        for state in self.partitions.values():
            if state.need_schema is not None and (state.need_schema in self.schemas.schemas or state.need_schema in self.schemas.missing):
                state.need_schema = None
        await self._adopt_rt_starts()
        now = time.monotonic()
        rt_topic = self.rt_topic
        if rt_topic is not None and self._polls_lag() and now - self._last_lag_poll >= LAG_POLL_S:
            self._last_lag_poll = now
            try:
                ends = await self.pubsub.end_offsets(rt_topic)
            except TopicNotFoundError:
                ends = {}
            for partition, state in self.partitions.items():
                if partition in ends:
                    state.rt_end = ends[partition]
        if now - self._last_vt_poll >= LAG_POLL_S and any(not s.checkpoint.end_of_push for s in self.partitions.values()):
            # Only for the metrics (push progress, a replica catching up): a failed poll waits for the next.
            self._last_vt_poll = now
            with contextlib.suppress(VeniceError):
                vt_ends = await self.pubsub.end_offsets(self.topic)
                for partition, state in self.partitions.items():
                    state.vt_end = vt_ends.get(partition, state.vt_end)
        for state in self.partitions.values():
            self._check_ready(state)

    async def _adopt_rt_starts(self) -> None:
        """A partition past end-of-push that does not read the current real-time topic —
        it has no offset yet (its end-of-push came before the assignment named a start
        offset, or the store became hybrid later) or one of an earlier epoch's topic (the
        store was made batch-only and hybrid again, or its topic was replaced) — starts at
        the offset the controller chose, once it names one. The checkpoint of an earlier
        epoch is replaced, and its change log emptied, in one transaction."""
        if not self.consumes_rt:
            return
        starts, epoch = self.assignment.rt_start_offsets, self.rt_epoch
        for partition, state in list(self.partitions.items()):
            checkpoint = state.checkpoint
            if (
                not checkpoint.end_of_push
                or checkpoint.rt_next(epoch) is not None
                or partition not in starts
                or state.status is ReplicaStatus.ERROR
            ):
                continue
            outcome = rt_adopt(checkpoint, epoch, starts[partition])
            await self.writer.run(self.storage.write_batch, partition, lambda _read, outcome=outcome: outcome)
            if self.partitions.get(partition) is not state:
                continue  # unassigned meanwhile
            state.checkpoint, state.rt_end = outcome.checkpoint, None  # the end is polled again, of this topic
            # Same topic name, another topic: seek again, check it again, poll its lag at once.
            self._reseek, self._rt_verified, self._last_lag_poll = True, False, -LAG_POLL_S
            if outcome.clear_changes:
                log.info(
                    "%s partition %d: real-time topic epoch %d (was %d at offset %s): starting over at offset %d",
                    self.topic, partition, epoch, checkpoint.rt_epoch, checkpoint.rt_offset, starts[partition],
                )
            else:
                log.info("%s partition %d: real-time topic from offset %d", self.topic, partition, starts[partition])

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        """The log does not hold an offset a partition reads next. A real-time partition
        goes on where :func:`rt_resume` says (records retention deleted before it read them
        are counted in its checkpoint and logged); a version-topic partition whose records
        were deleted before it applied them fails for good (its data cannot be complete).
        Nothing changed (the log holds the offset after all): wait a moment and retry."""
        asked = set(exc.positions) or set(await self._positions())
        changed = False
        for tp in sorted(asked):
            state = self.partitions.get(tp.partition)
            if state is None or state.status is ReplicaStatus.ERROR:
                continue
            if tp.topic == self.topic:
                changed |= await self._version_out_of_range(state)
            elif tp.topic == self.rt_topic:
                changed |= await self._rt_out_of_range(state, tp.topic)
        self._reseek = True
        if not changed:
            log.warning("%s: %s; the log holds the offsets read from now, retrying", self.topic, exc)
            await asyncio.sleep(LAG_POLL_S)

    async def _rt_out_of_range(self, state: PartitionState, rt_topic: str) -> bool:
        partition = state.partition
        if self._rt_next(state) is None:
            return False
        beginning = (await self.pubsub.beginning_offsets(rt_topic)).get(partition)
        end = (await self.pubsub.end_offsets(rt_topic)).get(partition)
        checkpoint = state.checkpoint
        if beginning is None or end is None or self.partitions.get(partition) is not state or self._rt_next(state) is None:
            return False
        new = rt_resume(checkpoint, beginning, end)
        if new is None:
            return False
        await self.writer.run(self.storage.write_batch, partition, lambda _read: Outcome(new))
        if self.partitions.get(partition) is state:
            state.checkpoint = new
        lost = new.rt_lost - checkpoint.rt_lost
        if lost:
            log.warning(
                "%s partition %d: real-time offset %s was deleted by retention before this replica read it (%s starts at %d): "
                "going on there; %d record(s) never applied (%d in all)",
                self.topic, partition, checkpoint.rt_offset, rt_topic, beginning, lost, new.rt_lost,
            )
        else:
            log.error(
                "%s partition %d: real-time offset %s is beyond the end (%d) of %s: it is not the topic that offset was read "
                "from, or the broker lost records; starting over at its beginning (%d)",
                self.topic, partition, checkpoint.rt_offset, end, rt_topic, beginning,
            )
        return True

    async def _version_out_of_range(self, state: PartitionState) -> bool:
        checkpoint = state.checkpoint
        if checkpoint.end_of_push:
            return False
        beginning = (await self.pubsub.beginning_offsets(self.topic)).get(state.partition)
        if beginning is None or checkpoint.offset >= beginning or self.partitions.get(state.partition) is not state:
            return False
        reason = f"version-topic records {checkpoint.offset}..{beginning - 1} were deleted (retention) before this replica applied them"
        failed = replace(state.checkpoint, failed=reason)
        await self.writer.run(self.storage.write_batch, state.partition, lambda _read: Outcome(failed))
        if self.partitions.get(state.partition) is state:
            state.checkpoint = failed
            self._set_status(state, ReplicaStatus.ERROR, reason)
        return True

    async def _apply(self, tp: TopicPartition, messages: list[Message]) -> None:
        state = self.partitions.get(tp.partition)
        if state is None or state.status is ReplicaStatus.ERROR:
            return
        checkpoint = state.checkpoint
        if tp.topic == self.topic and not checkpoint.end_of_push:
            start = self.assignment.rt_start_offsets.get(tp.partition) if self.assignment.hybrid is not None else None
            epoch = self.rt_epoch

            def decide(read: Reader) -> Outcome:
                return apply_version_batch(checkpoint, messages, rt_start=start, rt_epoch=epoch)

        elif tp.topic == self.rt_topic and self.consumes_rt and self._rt_next(state) is not None and state.need_schema is None:
            partitions_total = self.assignment.partitions_total
            schemas, missing = self.schemas.schemas, frozenset(self.schemas.missing)

            def decide(read: Reader) -> Outcome:
                return apply_rt_batch(
                    checkpoint, messages, partition=tp.partition, partitions_total=partitions_total,
                    schemas=schemas, read=read, missing=missing,
                )

        else:  # fetched before the assignment changed: not applied, read again from the checkpoint if wanted
            self._reseek = True
            return
        outcome = await self.writer.run(self.storage.write_batch, tp.partition, decide)
        if self.partitions.get(tp.partition) is not state:
            return  # unassigned while the batch was written
        state.checkpoint = outcome.checkpoint
        applied_to = outcome.checkpoint.offset if tp.topic == self.topic else outcome.checkpoint.rt_offset
        if applied_to != messages[-1].offset + 1:
            self._reseek = True
        state.ingested += outcome.applied
        state.ingested_bytes += sum(len(m.key) + len(m.value or b"") for m in messages)
        for skipped in outcome.skipped:
            if skipped.kind not in state.logged:
                state.logged.add(skipped.kind)
                log.warning(
                    "%s partition %d: skipping real-time record at offset %d (%s: %s); further ones of this kind are counted, not logged",
                    self.topic, tp.partition, skipped.offset, skipped.kind.value, skipped.detail,
                    extra=self._fields(tp.partition, "poison_pill", offset=skipped.offset, kind=skipped.kind.value),
                )
        if outcome.need_schema is not None:
            state.need_schema = outcome.need_schema
            log.info(
                "%s partition %d: paused for unknown value schema %d", self.topic, tp.partition, outcome.need_schema,
                extra=self._fields(tp.partition, "paused_for_schema", schema_id=outcome.need_schema),
            )
            self._need_schema(outcome.need_schema)
        if outcome.end_of_push:
            log.info(
                "%s partition %d: end-of-push, %d records", self.topic, tp.partition, outcome.checkpoint.records,
                extra=self._fields(tp.partition, "end_of_push", records=outcome.checkpoint.records),
            )
            await self.writer.run(self.storage.sync)  # the pushed data reaches the disk before it is served
            if outcome.checkpoint.failed:
                self._set_status(state, ReplicaStatus.ERROR, outcome.checkpoint.failed)
            self._last_lag_poll = -LAG_POLL_S  # poll the lag at once
        if outcome.end_of_push:
            self._on_change(self)
        self._check_ready(state)

    def _check_ready(self, state: PartitionState) -> None:
        if state.status is not ReplicaStatus.STARTED or not state.checkpoint.end_of_push:
            return
        if state.checkpoint.failed:
            self._set_status(state, ReplicaStatus.ERROR, state.checkpoint.failed)
            return
        hybrid = self.assignment.hybrid
        lag = state.rt_lag(self.rt_epoch)
        if hybrid is not None and self.consumes_rt and (lag is None or lag > hybrid.offset_lag):
            return
        self._set_status(state, ReplicaStatus.READY, None)
        log.info(
            "%s partition %d ready: %d records%s", self.topic, state.partition, state.checkpoint.records,
            "" if lag is None else f", real-time lag {lag}",
            extra=self._fields(state.partition, "replica_ready", records=state.checkpoint.records),
        )

    def _set_status(self, state: PartitionState, status: ReplicaStatus, reason: str | None) -> None:
        if (state.status, state.reason) == (status, reason):
            return
        state.status, state.reason = status, reason
        if status is ReplicaStatus.ERROR:
            log.error("%s partition %d: %s", self.topic, state.partition, reason, extra=self._fields(state.partition, "replica_error"))
        self._on_change(self)

    def _fields(self, partition: int, event: str, **more: object) -> dict[str, object]:
        """Fields of a log line about one of this version's partitions (:mod:`venice.logs`)."""
        return {"event": event, "store": self.store, "version": self.version, "partition": partition, **more}

    def _fail(self, reason: str, *, only_before_eop: bool = False, only_after_eop: bool = False) -> None:
        for state in self.partitions.values():
            if state.status is ReplicaStatus.ERROR:
                continue
            if only_before_eop and state.checkpoint.end_of_push:
                continue
            if only_after_eop and not state.checkpoint.end_of_push:
                continue
            self._set_status(state, ReplicaStatus.ERROR, reason)
