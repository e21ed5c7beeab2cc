"""The nearline-write SDK: put, delete and update keys of hybrid stores.

    with venice.Producer("http://127.0.0.1:5050") as producer:
        producer.put("members", 42, {"name": "Ann", "visits": 1})
        producer.update("members", 42, {"increment": {"visits": 1}})
        producer.delete("members", 7)
    # leaving the block flushed: every write is durably in the store's real-time topic

:class:`AsyncProducer` is the asyncio one; :class:`Producer` runs an AsyncProducer on an
event loop in one background thread, so it works from plain scripts and from any
number of threads. Both:

* fetch a store's description from the controller once (:class:`StoreWriters`), and
  again when a write names a value schema it does not know or the store is not hybrid
  or has no write compute (it may have changed since);
* check every write before anything is sent (:class:`venice.writer.StoreWriter`: key,
  value against its schema, the store's ``max_value_bytes``, update ops): a bad write
  raises at once and nothing of it is sent;
* produce to ``<store>_rt`` through :mod:`venice.pubsub` (Kafka with ``acks=all``, or the
  embedded log; the URL comes from the controller's ``GET /cluster``), sharing flushes
  between writers (:class:`venice.group_commit.GroupCommit`).

``put`` / ``delete`` / ``update`` return once the record is queued (waiting while too
much is queued: back-pressure). :meth:`AsyncProducer.flush` returns once everything
queued before it is durable, and raises the first failure since the last flush (a
failed record may or may not have been written: delivery is at least once). Leaving the
``with`` block (or :meth:`close`) flushes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from venice.controller_client import DEFAULT_TIMEOUT_S, AsyncControllerClient
from venice.errors import (
    InternalError,
    NotHybridError,
    RequestError,
    SchemaError,
    StoreNotFoundError,
    UnknownSchemaError,
    VeniceError,
    WriteComputeDisabledError,
)
from venice.group_commit import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_RECORDS, GroupCommit
from venice.pubsub import PubSub, connect
from venice.pubsub.base import Producer as PubSubProducer
from venice.writer import OutgoingRecord, StoreWriter

__all__ = ["AsyncProducer", "Producer", "StoreWriters"]

RECHECK_AFTER_S = 1.0
"""A write that the cached description refuses (not hybrid, no write compute, unknown
schema id) fetches the description again if the cached one is at least this old."""
MAX_STORES = 10_000
"""Descriptions kept at most (the oldest fetched is dropped first)."""

logger = logging.getLogger("venice.producer")

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    writer: StoreWriter | None
    error: VeniceError | None
    fetched_at: float
    expires_at: float


class StoreWriters:
    """Store descriptions from the controller as :class:`StoreWriter` objects, per store.

    ``max_age_s=None`` keeps a description until a write needs a newer one (the SDK);
    a router passes a few seconds, so settings changed on the controller reach it on
    their own. A missing store is remembered for ``recheck_after_s``. When the controller
    cannot be reached, the last description keeps serving. Concurrent fetches of one
    store are one request.
    """

    def __init__(
        self,
        controller: AsyncControllerClient,
        *,
        max_age_s: float | None = None,
        recheck_after_s: float = RECHECK_AFTER_S,
        max_stores: int = MAX_STORES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = controller
        self._max_age_s = math.inf if max_age_s is None else max_age_s
        self._recheck_after_s = recheck_after_s
        self._max_stores = max_stores
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._fetching: dict[str, asyncio.Task[_Entry]] = {}
        self.fetches = 0
        """Descriptions asked of the controller so far."""

    async def get(self, store: str) -> StoreWriter:
        entry = self._entries.get(store)
        if entry is None or self._clock() >= entry.expires_at:
            entry = await self._fetch(store)
        return _writer_of(entry)

    async def recheck(self, store: str) -> StoreWriter | None:
        """A newly fetched writer if the cached description is at least ``recheck_after_s``
        old, else ``None`` (the cached one is as fresh as it gets)."""
        entry = self._entries.get(store)
        if entry is not None and self._clock() - entry.fetched_at < self._recheck_after_s:
            return None
        return _writer_of(await self._fetch(store))

    async def build(self, store: str, make: Callable[[StoreWriter], OutgoingRecord]) -> OutgoingRecord:
        """``make(writer)`` for a hybrid store, with one fresh description when the cached
        one refuses the write for a reason a newer description may lift."""
        writer = await self.get(store)
        try:
            writer.check_hybrid()
            return make(writer)
        except (NotHybridError, WriteComputeDisabledError, UnknownSchemaError) as exc:
            newer = await self.recheck(store)
            if newer is None:
                raise _final(exc) from None
        try:
            newer.check_hybrid()
            return make(newer)
        except UnknownSchemaError as exc:
            raise _final(exc) from None

    async def _fetch(self, store: str) -> _Entry:
        task = self._fetching.get(store)
        if task is None:
            task = self._fetching[store] = asyncio.create_task(self._fetch_now(store))
            task.add_done_callback(lambda done: self._fetched(store, done))
        return await asyncio.shield(task)

    def _fetched(self, store: str, task: asyncio.Task[_Entry]) -> None:
        self._fetching.pop(store, None)
        if not task.cancelled():
            task.exception()  # retrieved: its askers may all have gone (cancelled) meanwhile

    async def _fetch_now(self, store: str) -> _Entry:
        self.fetches += 1
        previous = self._entries.get(store)
        try:
            description = await self._controller.get_store(store)
            now = self._clock()
            entry = _Entry(StoreWriter(store, description), None, now, now + self._max_age_s)
        except StoreNotFoundError as exc:
            now = self._clock()
            entry = _Entry(None, exc, now, now + self._recheck_after_s)
        except VeniceError:
            if previous is None or previous.writer is None:
                raise
            # The controller is down or confused: keep writing with what we knew, try again soon.
            logger.warning("cannot refresh the description of store %r; using the one from before", store, exc_info=True)
            now = self._clock()
            entry = _Entry(previous.writer, None, previous.fetched_at, now + self._recheck_after_s)
        self._entries.pop(store, None)
        self._entries[store] = entry
        while len(self._entries) > self._max_stores:
            del self._entries[next(iter(self._entries))]
        return entry


def _writer_of(entry: _Entry) -> StoreWriter:
    if entry.writer is None:
        assert entry.error is not None
        raise type(entry.error)(entry.error.message, **entry.error.details)
    return entry.writer


def _final(exc: VeniceError) -> VeniceError:
    """The error for a refusal a fresh description confirmed."""
    if isinstance(exc, UnknownSchemaError):
        return SchemaError(exc.message, **exc.details)  # a schema the controller does not have: the writer's mistake
    return exc


class AsyncProducer:
    """Writes to hybrid stores (see the module doc). Use one per process; it is cheap to keep."""

    def __init__(
        self,
        controller_url: str,
        *,
        pubsub_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        token: str | None = None,
    ) -> None:
        """``pubsub_url`` overrides the controller's (``kafka://HOST:PORT`` or
        ``embedded:///DIR``), e.g. when the broker is reached under another address here.
        ``token``: shown to the controller (a private store's description needs a reader or
        writer token of it; default ``VENICE_TOKEN``). The writes themselves go to Kafka,
        which the platform does not guard (docs/security.md)."""
        self._controller = AsyncControllerClient(controller_url, timeout_s=timeout_s, token=token)
        # An application writes with schemas it knows exist: when the cached description
        # refuses a write, always ask the controller again (a router limits this instead).
        self.writers = StoreWriters(self._controller, recheck_after_s=0.0)
        self._pubsub_url = pubsub_url
        self._pubsub: PubSub | None = None
        self._commit = GroupCommit(
            self._open_producer, max_pending_records=max_pending_records, max_pending_bytes=max_pending_bytes
        )
        self._failures = 0
        self._first_failure: VeniceError | None = None
        self._closed = False

    async def store_writer(self, store: str) -> StoreWriter:
        """How this producer encodes writes to ``store`` (its schemas, partitions, topic)."""
        return await self.writers.get(store)

    async def put(self, store: str, key: Any, value: Any, *, schema_id: int | None = None) -> None:
        """Write ``value`` (a datum of value schema ``schema_id``, the newest by default) under ``key``."""
        await self._send(await self.writers.build(store, lambda w: w.put(key, value, schema_id)))

    async def delete(self, store: str, key: Any) -> None:
        await self._send(await self.writers.build(store, lambda w: w.delete(key)))

    async def update(self, store: str, key: Any, ops: Any, *, schema_id: int | None = None) -> None:
        """Apply update ``ops`` (the JSON form of :mod:`venice.writecompute`, e.g.
        ``{"increment": {"visits": 1}}``) to the value of ``key``; the store needs write compute."""
        await self._send(await self.writers.build(store, lambda w: w.update(key, ops, schema_id)))

    async def flush(self) -> None:
        """Return once every write made so far is durable; raise the first failure since
        the last flush."""
        await self._commit.flush()
        self._raise_failures()

    async def close(self) -> None:
        """Flush, then release the connections; raises what :meth:`flush` would."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._commit.close()
        finally:
            if self._pubsub is not None:
                with contextlib.suppress(VeniceError):
                    await self._pubsub.close()
            await self._controller.aclose()
        self._raise_failures()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _send(self, record: OutgoingRecord) -> None:
        if self._closed:
            raise RequestError("the producer is closed")
        future = await self._commit.submit(record)
        future.add_done_callback(self._note)

    def _note(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, VeniceError):
            self._failures += 1
            if self._first_failure is None:
                self._first_failure = exc

    def _raise_failures(self) -> None:
        failures, first = self._failures, self._first_failure
        self._failures, self._first_failure = 0, None
        if first is None:
            return
        if failures == 1:
            raise first
        raise type(first)(f"{failures} writes failed; the first: {first.message}", **first.details) from first

    async def _open_producer(self) -> PubSubProducer:
        if self._pubsub is None:
            url = self._pubsub_url
            if url is None:
                url = (await self._controller.cluster()).get("pubsub_url")
                if not isinstance(url, str):
                    raise InternalError("the controller's GET /cluster does not say which pub-sub it uses (pubsub_url)")
            self._pubsub = connect(url)
        return await self._pubsub.producer()


class Producer:
    """Blocking twin of :class:`AsyncProducer`: its event loop runs in one background
    thread. Thread-safe; use one per process."""

    def __init__(
        self,
        controller_url: str,
        *,
        pubsub_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self._async = AsyncProducer(
            controller_url,
            pubsub_url=pubsub_url,
            timeout_s=timeout_s,
            max_pending_records=max_pending_records,
            max_pending_bytes=max_pending_bytes,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="venice-producer", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    def store_writer(self, store: str) -> StoreWriter:
        """How this producer encodes writes to ``store`` (its schemas, partitions, topic)."""
        return self._call(self._async.store_writer(store))

    def put(self, store: str, key: Any, value: Any, *, schema_id: int | None = None) -> None:
        self._call(self._async.put(store, key, value, schema_id=schema_id))

    def delete(self, store: str, key: Any) -> None:
        self._call(self._async.delete(store, key))

    def update(self, store: str, key: Any, ops: Any, *, schema_id: int | None = None) -> None:
        self._call(self._async.update(store, key, ops, schema_id=schema_id))

    def flush(self) -> None:
        self._call(self._async.flush())

    def close(self) -> None:
        """Flush and stop the background thread; raises what :meth:`flush` would."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
        finally:
            with self._lock:
                orphans = list(self._calls)
            for call in orphans:  # calls from other threads racing the close
                call.cancel()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise RequestError("the producer is closed")
            call = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            self._calls.add(call)
        try:
            return call.result()
        except concurrent.futures.CancelledError:
            raise RequestError("the producer was closed during the call") from None
        finally:
            with self._lock:
                self._calls.discard(call)
