"""Change capture: every change applied to a store's current version, in order per
partition, resumable from a position (docs/clients.md).

    with venice.ChangeConsumer("http://controller:5050", "members", since=None) as changes:
        for event in changes:
            if isinstance(event, venice.Change):
                print(event.key, event.value)      # value None: the key was deleted
            else:                                   # venice.VersionSwap(old, new)
                ...
            last = event.position                  # a token: ChangeConsumer(..., since=last) resumes

Where the changes come from: storage servers keep, per hosted partition of a hybrid
version, a change log of every real-time record applied (the value *after* it; updates
come as after-images), keyed by its real-time offset (docs/hybrid.md). Offsets of the
real-time topic are the same for every version of a store, so a position is one
``{partition: next offset}`` map, valid across versions; a token encodes it with a tag
of the store and its incarnation (:class:`Position`).

Reading: one task per partition long-polls ``GET /v1/changes/...`` on a replica of the
version being read (failing over like any read). When a push swaps in a new version,
each partition first reads what the old version's log still holds beyond its position
(the old version stops applying writes once it is a backup), then the consumer emits
:class:`VersionSwap` and every partition continues on the new version from the same
offsets: the new version replayed the real-time topic from before its push, so nothing
is missed, and offsets only grow, so nothing repeats. A rollback is followed the same
way. A position the logs no longer reach is :class:`~venice.errors.PositionExpiredError`
(410), never a silent skip. Batch-only stores have no change log: only swaps come.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import queue
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from venice.auth import TOKEN_ENV
from venice.controller_client import AsyncControllerClient
from venice.errors import (
    DeadlineExceededError,
    NoCurrentVersionError,
    PositionExpiredError,
    RequestError,
    StoreNotFoundError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)
from venice.evolution import ValueDecoder
from venice.protocol import (
    DELETED_SCHEMA_ID,
    MAX_PARTITIONS,
    ChangeLogPage,
    b64url_decode,
    decode_changes_response,
    replica_changes_path,
)
from venice.replica_health import ReplicaHealth
from venice.routing import StoreRoute
from venice.routing_cache import RoutingCache
from venice.tls import client_context

__all__ = ["AsyncChangeConsumer", "Change", "ChangeConsumer", "Position", "VersionSwap"]

log = logging.getLogger("venice.changes")

LONG_POLL_S = 10.0
PAGE = 1000
RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)
IDLE_WAIT_S = 1.0
"""How long a partition with nothing to wait on at its replica (no long poll) rests."""
QUEUE_EVENTS = 10_000
_TOKEN_FORMAT = 1


# -- positions ------------------------------------------------------------------------------


def store_tag(store: str, incarnation: str) -> int:
    """32 bits naming a store incarnation: a token of another store (or of a deleted one
    of the same name) is refused rather than misread."""
    return zlib.crc32(f"{store}\0{incarnation}".encode())


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong number")
        b = data[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return n, pos
        shift += 7


@dataclass(frozen=True, slots=True)
class Position:
    """Where a consumer stands: per partition, the next real-time offset to read."""

    tag: int
    offsets: Mapping[int, int]

    def token(self) -> str:
        """Compact and URL-safe: ``1, tag, count, (partition, offset)...`` as varints, base64url."""
        parts = [bytes([_TOKEN_FORMAT]), self.tag.to_bytes(4, "big"), _varint(len(self.offsets))]
        for partition, offset in sorted(self.offsets.items()):
            parts.append(_varint(partition))
            parts.append(_varint(offset))
        return base64.urlsafe_b64encode(b"".join(parts)).rstrip(b"=").decode("ascii")

    @classmethod
    def parse(cls, token: str, *, store: str, incarnation: str, partitions: int) -> Position:
        """The position of a token of this store; RequestError saying what is wrong."""
        if not isinstance(token, str) or len(token) > 64_000 or not token.isascii():
            raise RequestError("a position token is a short ASCII string (as a Change's position)")
        try:
            raw = b64url_decode(token.encode("ascii"))
        except (binascii.Error, ValueError):
            raise RequestError(f"position token {token[:40]!r} is not base64url") from None
        if len(raw) < 6 or raw[0] != _TOKEN_FORMAT:
            raise RequestError(f"position token {token[:40]!r} is not a position")
        tag = int.from_bytes(raw[1:5], "big")
        if tag != store_tag(store, incarnation):
            raise RequestError(f"position token {token[:40]!r} is a position of another store (or of a deleted store of this name)")
        try:
            count, pos = _read_varint(raw, 5)
            if count > MAX_PARTITIONS:
                raise ValueError("too many partitions")
            offsets: dict[int, int] = {}
            for _ in range(count):
                partition, pos = _read_varint(raw, pos)
                offset, pos = _read_varint(raw, pos)
                if partition >= partitions or partition in offsets or offset >= 1 << 63:
                    raise ValueError(f"partition {partition} / offset {offset} out of range or repeated")
                offsets[partition] = offset
            if pos != len(raw):
                raise ValueError("trailing bytes")
        except ValueError as exc:
            raise RequestError(f"position token {token[:40]!r} is malformed: {exc}") from None
        return cls(tag, offsets)


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A put, delete or update applied to the store: ``value`` is the value after it
    (``None``: deleted), in the store's newest value schema."""

    key: Any
    value: Any
    position: str
    """Resume after this change: ``ChangeConsumer(..., since=position)``."""
    version: int
    """The store-version whose change log it was read from."""
    partition: int
    offset: int
    """Its real-time topic offset."""


@dataclass(frozen=True, slots=True)
class VersionSwap:
    """The store's current version changed (a push swapped in, or a rollback); the changes
    that follow are of ``new``."""

    old: int | None
    new: int
    position: str


Event = Change | VersionSwap


# -- the async consumer ------------------------------------------------------------------------


class AsyncChangeConsumer:
    """The changes of one store, as an async iterator (see the module docstring).

    ``since``: a position token, or ``None`` for the tail (only changes from now on).
    ``routing``: a :class:`RoutingCache` to share (a router passes its own); by default
    the consumer long-polls the controller's routing table itself.
    """

    def __init__(
        self,
        controller_url: str,
        store: str,
        *,
        since: str | None = None,
        routing: RoutingCache | None = None,
        long_poll_s: float = LONG_POLL_S,
        page: int = PAGE,
        token: str | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.controller_url = controller_url
        self.store = store
        self.since = since
        self.long_poll_s = long_poll_s
        self.page = page
        self._own_routing = routing is None
        self.routing = routing if routing is not None else RoutingCache(controller_url, token=token)
        self._controller = AsyncControllerClient(controller_url, timeout_s=10.0, token=token)
        # ``token``: a reader token of a private store (default ``VENICE_TOKEN``); the
        # change logs are read from the storage servers, which check it too.
        self._http = httpx.AsyncClient(
            trust_env=False, timeout=long_poll_s + 10.0, verify=client_context(),
            headers={"authorization": f"Bearer {token}"} if token else None,
        )
        self._health = ReplicaHealth()
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(QUEUE_EVENTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False
        self.tag = 0
        self.version: int | None = None
        """The version whose changes are being delivered."""
        self.offsets: dict[int, int] = {}
        """Per partition, the next offset after the last change delivered (the position)."""
        self._fetched: dict[int, int] = {}
        """Per partition, the next offset to fetch (ahead of :attr:`offsets` by what is queued)."""
        self._reading: int | None = None
        """The version the partitions read now."""
        self._target: int | None = None
        """The store's current version: partitions drain :attr:`_reading` while they differ."""
        self._moved = asyncio.Event()
        self._drained: set[int] = set()
        self._progress = asyncio.Event()
        self._switched = asyncio.Event()
        self._decoders: dict[bytes, tuple[StoreRoute, ValueDecoder]] = {}

    @property
    def position(self) -> str:
        """The token of the position after the last event delivered."""
        return Position(self.tag, dict(self.offsets)).token()

    # -- start -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Find the store, its current version and the starting offsets; raises what
        cannot be retried (StoreNotFoundError, a bad token: RequestError, PositionExpiredError)."""
        if self._started:
            return
        self._started = True
        if self._own_routing:
            await self.routing.start()
        description = await self._controller.get_store(self.store)
        incarnation = str(description.get("incarnation") or "")
        route = self._route()
        self.tag = store_tag(self.store, incarnation)
        partitions = route.partition_count
        current = route.current_version
        if current is None:
            raise NoCurrentVersionError(f"store {self.store!r} has no current version: push data first")
        self.version = self._target = self._reading = current
        if self.since is not None:
            self.offsets = dict(Position.parse(self.since, store=self.store, incarnation=incarnation, partitions=partitions).offsets)
        pages = await asyncio.gather(*(self._fetch(current, p, self.offsets.get(p), 0.0) for p in range(partitions)))
        for partition, page in enumerate(pages):
            if not page.hybrid:
                continue
            if partition not in self.offsets:
                # The tail (since=None), or a partition the token does not name: from the
                # log's start, so nothing after the token is skipped.
                tail = page.next if self.since is None else page.start
                if tail is None:
                    tail = page.next if page.next is not None else 0
                self.offsets[partition] = tail
        self._fetched = dict(self.offsets)
        self._tasks = [asyncio.create_task(self._follow_swaps(), name=f"changes-swaps-{self.store}")]
        self._tasks += [
            asyncio.create_task(self._partition(p), name=f"changes-{self.store}-{p}") for p in range(partitions)
        ]

    def _route(self) -> StoreRoute:
        return self.routing.table.store(self.store)

    # -- iteration --------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; ``None`` after ``timeout`` seconds without one (or once closed)."""
        await self.start()
        if self._closed:
            return None
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Change):
            self.offsets[item.partition] = item.offset + 1
            item = Change(item.key, item.value, self.position, item.version, item.partition, item.offset)
        else:
            self.version = item.new
            item = VersionSwap(item.old, item.new, self.position)
        return item

    # -- background ---------------------------------------------------------------------------------
    async def _follow_swaps(self) -> None:
        """Notice a new current version; once every partition has drained the version it
        reads, announce the swap and let the partitions go on with the new one."""
        try:
            while True:
                try:
                    route = self._route()
                except StoreNotFoundError as exc:
                    await self._queue.put(exc)
                    return
                current = route.current_version
                if current is not None and current != self._reading:
                    self._target = current
                    self._moved.set()  # partitions stop waiting on the old version and drain it
                    while len(self._drained) < route.partition_count:
                        await self._progress.wait()
                        self._progress.clear()
                    old, new = self._reading, self._target  # the newest current, should it have moved again
                    await self._queue.put(VersionSwap(old, new, ""))
                    self._reading = new
                    self._drained.clear()
                    self._moved.clear()
                    released, self._switched = self._switched, asyncio.Event()
                    released.set()
                    continue
                await self._wait_routing_change()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug must reach the reader, not end the stream quietly
            log.exception("change capture of %s stopped", self.store)
            await self._queue.put(exc)

    async def _wait_routing_change(self) -> None:
        table = self.routing.table if self.routing.loaded else None
        await self.routing.wait_change(table.generation if table is not None else -1, 1.0)

    async def _partition(self, partition: int) -> None:
        failures = 0
        try:
            while True:
                reading = self._reading
                assert reading is not None  # set by start(), before the partitions run
                if self._target != reading:
                    await self._drain(reading, partition)
                    self._drained.add(partition)
                    self._progress.set()
                    await self._switched.wait()
                    continue
                try:
                    page = await self._fetch_until_moved(reading, partition)
                    failures = 0
                except VeniceError as exc:
                    if not await self._retry(exc, partition, failures):
                        return
                    failures += 1
                    continue
                if page is None:
                    continue  # the current version moved: drain
                await self._deliver(reading, partition, page)
                if not page.entries and (not page.hybrid or page.next is None or not page.consuming):
                    # Nothing to read on this version for now (batch-only, not past end-of-push
                    # yet, or a replica not consuming real-time writes, which answers at once
                    # rather than long-polling): look again in a while, or once the version moves.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_WAIT_S):
                            await self._moved.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("change capture of %s partition %d stopped", self.store, partition)
            await self._queue.put(exc)

    async def _fetch_until_moved(self, version: int, partition: int) -> ChangeLogPage | None:
        """A long-polled page, or ``None`` when the current version moved meanwhile (the
        poll is abandoned: the old version is drained without waiting)."""
        fetch = asyncio.ensure_future(self._fetch(version, partition, self._fetched.get(partition), self.long_poll_s))
        moved = asyncio.ensure_future(self._moved.wait())
        try:
            await asyncio.wait({fetch, moved}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            fetch.cancel()
            raise
        finally:
            moved.cancel()
        if fetch.done():
            return fetch.result()
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError, VeniceError):
            await fetch
        return None

    async def _drain(self, version: int, partition: int) -> None:
        """Read what the old version's log holds beyond the position, to its current end."""
        failures = 0
        while True:
            try:
                page = await self._fetch(version, partition, self._fetched.get(partition), 0.0)
            except VeniceError as exc:
                if isinstance(exc, PositionExpiredError) or not exc.retriable or failures >= 5:
                    # The old version's copy is gone (dropped, its server down): nothing more
                    # can come from it; the new version's log decides (and says if it is too short).
                    return
                failures += 1
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                continue
            await self._deliver(version, partition, page)
            if not page.entries:
                return

    async def _deliver(self, version: int, partition: int, page: ChangeLogPage) -> None:
        if partition not in self._fetched:
            if not page.hybrid:
                return
            # A store that became hybrid after the consumer started: from its log's start.
            self._fetched[partition] = page.start if page.start is not None else (page.next or 0)
            if not page.entries:
                return
        for entry in page.entries:
            if entry.offset < self._fetched[partition]:
                continue  # at or below the position: already delivered from another version
            await self._queue.put(self._change(version, partition, entry))
            self._fetched[partition] = entry.offset + 1

    async def _retry(self, exc: VeniceError, partition: int, failures: int) -> bool:
        """Wait before retrying a failed page; False (the error reported) when retrying cannot help."""
        if isinstance(exc, PositionExpiredError) or (not exc.retriable and not isinstance(exc, StoreNotFoundError)):
            await self._queue.put(exc)
            return False
        if failures and failures % 20 == 0:
            log.warning("%s partition %d: change log unavailable (%s); retrying", self.store, partition, exc.message)
        await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
        return True

    def _change(self, version: int, partition: int, entry: Any) -> Change:
        route = self._route()
        codec_route, decoder = self._decoder(route)
        key = codec_route.key_codec.decode(entry.key)
        value = None if entry.schema_id == DELETED_SCHEMA_ID else decoder.decode(entry.schema_id, entry.value)
        return Change(key, value, "", version, partition, entry.offset)

    def _decoder(self, route: StoreRoute) -> tuple[StoreRoute, ValueDecoder]:
        found = self._decoders.get(route.schemas_fingerprint)
        if found is None:
            found = self._decoders[route.schemas_fingerprint] = (
                route, ValueDecoder({sid: codec.schema for sid, codec in route.value_codecs.items()}))
        return found

    async def _fetch(self, version: int, partition: int, start: int | None, wait_s: float) -> ChangeLogPage:
        """One page from the first replica of the partition that answers."""
        route = self._route()
        replicas = self._health.order(route.versions.get(version, {}).get(partition, ()), partition)
        if not replicas:
            self.routing.request_refresh()
            raise UnavailableError(f"no ready replica of {self.store} v{version} partition {partition}")
        path = replica_changes_path(self.store, version, partition, start, limit=self.page, wait_s=wait_s)
        failures: list[VeniceError] = []
        for url in replicas:
            started = self._health.started(url)
            try:
                response = await self._http.get(url + path, timeout=wait_s + 10.0)
            except httpx.TimeoutException as exc:
                self._health.failed(url)
                failures.append(DeadlineExceededError(f"replica {url} did not answer: {exc!r}"))
                continue
            except httpx.HTTPError as exc:
                self._health.failed(url)
                failures.append(TransportError(f"replica {url}: {exc!r}"))
                continue
            if response.status_code == 200:
                self._health.succeeded(url, started)
                return decode_changes_response(response.content)
            error = error_from_response(response.status_code, response.content)
            if not error.retriable:
                self._health.succeeded(url, started)
                raise error
            self._health.failed(url)
            if error.refresh_routing:
                self.routing.request_refresh()
            failures.append(error)
        raise UnavailableError(
            f"no replica of {self.store} v{version} partition {partition} answered",
            replica_errors=[f"{f.code}: {f.message}" for f in failures],
        )

    async def aclose(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._own_routing:
            await self.routing.aclose()
        await self._controller.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncChangeConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


# -- the blocking consumer -----------------------------------------------------------------------


class ChangeConsumer:
    """Blocking twin of :class:`AsyncChangeConsumer`: the async one runs on a background
    thread; events come through a queue. Iterate it, or :meth:`poll` with a timeout."""

    def __init__(self, controller_url: str, store: str, *, since: str | None = None, **options: Any) -> None:
        self._events: queue.Queue[Event | BaseException | None] = queue.Queue(QUEUE_EVENTS)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._consumer: AsyncChangeConsumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._position = ""
        self._args = (controller_url, store, since, options)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name=f"changes-{store}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    async def _run(self) -> None:
        controller_url, store, since, options = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        consumer = self._consumer = AsyncChangeConsumer(controller_url, store, since=since, **options)
        try:
            try:
                await consumer.start()
            except Exception as exc:  # noqa: BLE001 - raised in the caller's thread
                self._error = exc
                return
            finally:
                self._position = consumer.position if consumer.tag else ""
                self._ready.set()
            while not self._stop.is_set():
                try:
                    event = await consumer.next_event(timeout=0.2)
                except VeniceError as exc:
                    await asyncio.to_thread(self._events.put, exc)
                    return
                if event is not None:
                    await asyncio.to_thread(self._events.put, event)
        finally:
            await consumer.aclose()
            self._events.put(None)

    @property
    def position(self) -> str:
        """The token after the last event this consumer handed out."""
        return self._position

    def poll(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` after ``timeout`` seconds without one."""
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._events.put(None)  # closed: stays closed for every later call
            return None
        if isinstance(item, BaseException):
            raise item
        self._position = item.position
        return item

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.poll()
            if event is None:
                return
            yield event

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        # Unblock the thread if it waits to hand over an event nobody will take.
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._events.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> ChangeConsumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
