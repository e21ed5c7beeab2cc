"""Many writers, one pub-sub producer, shared flushes: each record confirmed once durable.

A pub-sub :class:`~venice.pubsub.base.Producer` is not made for concurrent use (two
tasks sending and flushing at once interleave its open batches), and flushing once per
record would cost a broker round trip (Kafka, ``acks=all``) or an fsync (embedded log)
per record. :class:`GroupCommit` owns one producer in one task. Each *round* takes the
records queued so far (up to a round limit), sends them in queue order, flushes once,
and then settles every record of the round; records that arrive meanwhile wait for the
next round. So concurrent writers share each flush, order is kept (per partition, the
order of submission), and a confirmed record is durably in the log.

Memory is bounded: at most ``max_pending_records`` records and ``max_pending_bytes``
bytes are queued or in flight. :meth:`GroupCommit.submit_nowait` refuses beyond that
with :class:`~venice.errors.OverloadedError` (a router under a flood of writes answers
503 instead of buffering without bound); :meth:`GroupCommit.submit` waits for room (a
client feeding a file slows down to the log's pace).

A record whose send fails gets that error. A failed flush fails every record of its
round (each may or may not be in the log: delivery is at least once) and the producer
is replaced by a new one for the next round. A missing topic (``TopicNotFoundError``)
is reported as :class:`~venice.errors.UnavailableError`: a hybrid store's real-time
topic is created by the controller in the background, so it may not exist *yet*.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from venice.errors import InternalError, OverloadedError, RequestError, TopicNotFoundError, UnavailableError, VeniceError
from venice.pubsub.base import Producer
from venice.writer import OutgoingRecord

__all__ = [
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MAX_PENDING_RECORDS",
    "GroupCommit",
]

DEFAULT_MAX_PENDING_RECORDS = 100_000
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
MAX_ROUND_RECORDS = 5_000
"""Records sent before one flush: bounds how long the first of them waits for the flush."""
MAX_ROUND_BYTES = 8 * 1024 * 1024

logger = logging.getLogger("venice.producer")

_Item = tuple[OutgoingRecord, "asyncio.Future[None]"]


class GroupCommit:
    """Sends records through one producer (opened on first use with ``open_producer``)
    and settles each record's future once the record is durable or has failed."""

    def __init__(
        self,
        open_producer: Callable[[], Awaitable[Producer]],
        *,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_round_records: int = MAX_ROUND_RECORDS,
        max_round_bytes: int = MAX_ROUND_BYTES,
    ) -> None:
        self._open_producer = open_producer
        self.max_pending_records = max_pending_records
        self.max_pending_bytes = max_pending_bytes
        self._max_round_records = max_round_records
        self._max_round_bytes = max_round_bytes
        self._producer: Producer | None = None
        self._queue: collections.deque[_Item] = collections.deque()
        self._records = 0
        self._bytes = 0
        """Queued or in the round being committed."""
        self._wakeup = asyncio.Event()
        self._room = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._submitted = 0
        self._settled = 0
        """Records settled so far: rounds run in order, so these are the first ``_settled`` submitted."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self.rounds = 0
        """Flushes made so far (each covering one round of records)."""
        self.committed = 0
        """Records confirmed durable so far."""

    @property
    def pending_records(self) -> int:
        return self._records

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _fits(self, size: int) -> bool:
        # A record larger than the byte budget still goes alone, or it could never go.
        return self._records == 0 or (
            self._records < self.max_pending_records and self._bytes + size <= self.max_pending_bytes
        )

    def submit_nowait(self, record: OutgoingRecord) -> asyncio.Future[None]:
        """Queue ``record``; OverloadedError when the buffer is full. The future settles
        once the record is durable (result ``None``) or has failed (its error)."""
        self._check_open()
        if not self._fits(record.size):
            raise OverloadedError(
                f"{self._records} writes ({self._bytes} bytes) are waiting to be made durable; retry later"
            )
        return self._enqueue(record)

    async def submit(self, record: OutgoingRecord) -> asyncio.Future[None]:
        """Queue ``record``, waiting while the buffer is full."""
        self._check_open()
        if not self._fits(record.size):
            async with self._room:
                await self._room.wait_for(lambda: self._closed or self._fits(record.size))
            self._check_open()
        return self._enqueue(record)

    def _check_open(self) -> None:
        if self._closed:
            raise RequestError("the producer is closed")

    def _enqueue(self, record: OutgoingRecord) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        self._records += 1
        self._bytes += record.size
        self._submitted += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="venice-group-commit")
        self._wakeup.set()
        return future

    async def flush(self) -> None:
        """Return once every record submitted so far is settled (errors go to their futures)."""
        target = self._submitted
        if self._settled < target:
            async with self._room:
                await self._room.wait_for(lambda: self._settled >= target)

    async def close(self, timeout_s: float | None = None) -> None:
        """Settle what was submitted (waiting at most ``timeout_s``: what is not settled
        by then fails), then stop and close the producer."""
        if self._closed:
            return
        self._closed = True
        async with self._room:
            self._room.notify_all()  # waiters in submit() see the close
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.flush()
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            left, self._queue = list(self._queue), collections.deque()
            _settle(left, UnavailableError("the producer was closed before these writes were sent"))
            producer, self._producer = self._producer, None
            if producer is not None:
                with contextlib.suppress(VeniceError):
                    await producer.close()
            for task in list(self._retiring):
                with contextlib.suppress(BaseException):
                    await task

    # --- the committing task ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take()
                try:
                    await self._commit(batch)
                except asyncio.CancelledError:
                    _settle(batch, UnavailableError("the producer was closed before these writes were confirmed"))
                    raise
                except Exception as exc:  # a bug must fail its round, not stop every later write
                    logger.exception("committing %d writes failed unexpectedly", len(batch))
                    _settle(batch, InternalError(f"writing failed unexpectedly: {exc!r}"))
                finally:
                    self._settled += len(batch)
                    self._records -= len(batch)
                    self._bytes -= sum(record.size for record, _ in batch)
                    async with self._room:
                        self._room.notify_all()

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        while self._queue and len(batch) < self._max_round_records and (not batch or size < self._max_round_bytes):
            item = self._queue.popleft()
            size += item[0].size
            batch.append(item)
        return batch

    async def _commit(self, batch: list[_Item]) -> None:
        failed: dict[int, VeniceError] = {}
        try:
            producer = await self._producer_now()
        except VeniceError as exc:
            _settle(batch, exc)
            return
        sent = 0
        for index, (record, _) in enumerate(batch):
            try:
                await producer.send(record.topic, record.partition, record.key, record.value, record.headers)
                sent += 1
            except VeniceError as exc:
                failed[index] = _for_writers(exc, record.topic)
        if sent:
            try:
                await producer.flush()
            except VeniceError as exc:
                self._retire(producer)
                for index, (record, _) in enumerate(batch):
                    failed.setdefault(index, _for_writers(exc, record.topic))
        self.rounds += 1
        for index, (_, future) in enumerate(batch):
            error = failed.get(index)
            if future.done():
                continue
            if error is None:
                self.committed += 1
                future.set_result(None)
            else:
                future.set_exception(_copy(error))

    async def _producer_now(self) -> Producer:
        if self._producer is None:
            self._producer = await self._open_producer()
        return self._producer

    def _retire(self, producer: Producer) -> None:
        """Drop a producer whose flush failed; close it in the background (a Kafka producer
        may take its request timeout to give up on what it still holds)."""
        if self._producer is producer:
            self._producer = None

        async def close() -> None:
            with contextlib.suppress(VeniceError):
                await producer.close()

        task = asyncio.create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _for_writers(exc: VeniceError, topic: str) -> VeniceError:
    if isinstance(exc, TopicNotFoundError):
        return UnavailableError(f"real-time topic {topic!r} does not exist (yet): {exc.message}")
    return exc


def _copy(exc: VeniceError) -> VeniceError:
    """One error instance per waiting writer: each raises it with its own traceback."""
    copy = type(exc)(exc.message, **exc.details)
    copy.__cause__ = exc.__cause__
    return copy


def _settle(batch: list[_Item], exc: VeniceError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(_copy(exc))
