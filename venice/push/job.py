"""The push job: load a whole input file into a store as a new version.

Steps (docs/api.md names the controller calls):

1. ``GET /stores/{store}``: schemas and the latest value schema id.
2. Open the input and convert its first record, so a wrong path, format or schema
   fails *before* a version (and its topic) exists.
3. ``POST /stores/{store}/versions``: version N, its topic, partition count, pub-sub.
4. ``START_OF_PUSH`` to every partition; every record, validated, serialized and sent
   to ``partition_for(key_bytes, P)``; repeats of a key with the same value skipped,
   with a different value an error; a key longer than LMDB's limit or a value larger
   than the store's ``max_value_bytes`` an error naming the record's position;
   ``END_OF_PUSH {"records": n_p}`` to every partition.
5. ``POST .../versions/{n}/end`` (retried with backoff through controller outages until
   the push deadline: it is idempotent, and without it the version never goes ONLINE),
   then poll the version until ONLINE or ERROR, again riding out outages.

The push deadline is the earlier of the store's push timeout (counted from the version's
opening: the controller fails the version then) and ``timeout_s`` after all data was
written. The exit status follows what the controller decided: a version that went ONLINE
is a success even if the job's own clock ran out just then.

Any failure after step 3 (bad record, Ctrl-C, timeout, pub-sub error, a bug) reports
``POST .../versions/{n}/error`` before re-raising, so the half-written version is
cleaned up and never becomes current; what is already served is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow.compute as pc
from tqdm import tqdm

from venice.controller_client import AsyncControllerClient
from venice.errors import (
    ConflictError,
    InvalidInputError,
    PushError,
    SchemaError,
    StoreNotFoundError,
    UnavailableError,
    VeniceError,
)
from venice.partitioner import partitions_for
from venice.pubsub import PubSub, connect
from venice.pubsub.base import Producer
from venice.push.columnar import ColumnarEncoder, EncodedBatch
from venice.push.formats import RecordSource, SourceBatch, input_error, open_records
from venice.push.records import DuplicateTracker, RecordConverter
from venice.schema import MAX_KEY_BYTES, AvroCodec, key_too_long
from venice.wire import ControlKind, control_headers, data_headers, encode_control

__all__ = ["PushSummary", "push", "run_push"]

_HTTP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
"""How often a push asks the controller whether its version is ONLINE once the data is
written: half of it, on average, is added to every push (a cheap GET; 0.5 s added ~0.25 s
to a 3 s push)."""
_REPORT_TIMEOUT_S = 5.0
_END_RETRY_FIRST_S = 0.2
_END_RETRY_MAX_S = 5.0
_ABANDON_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class PushSummary:
    """What a finished push did."""

    store: str
    version: int
    records: int
    """Records written (identical repeats of a key not counted)."""
    bytes: int
    """Serialized key + value bytes written."""
    seconds: float
    records_per_s: float
    duplicates: int = 0
    """Identical repeats of a key that were skipped."""

    def describe(self) -> str:
        """One line for humans: ``pushed members v3: 10000 records, 1.2 MB in 2.3 s (4300 records/s)``."""
        line = (
            f"pushed {self.store} v{self.version}: {self.records} records, {_megabytes(self.bytes)} "
            f"in {self.seconds:.1f} s ({self.records_per_s:.0f} records/s)"
        )
        if self.duplicates:
            line += f"; {self.duplicates} identical duplicate record(s) skipped"
        return line


def _megabytes(count: int) -> str:
    """MB with one decimal; kB below 0.1 MB, where "0.0 MB" would say nothing."""
    return f"{count / 1_000_000:.1f} MB" if count >= 100_000 else f"{count / 1000:.1f} kB"


@dataclass
class _Plan:
    """Everything about the store the record loop needs."""

    key_codec: AvroCodec
    value_codec: AvroCodec
    schema_id: int
    max_value_bytes: float
    """The store's value size limit (unlimited for a controller that does not say)."""
    push_timeout_s: float
    """The store's push timeout: the controller fails a version still STARTED after it."""

    def size_problem(self, key_bytes: bytes, value_bytes: bytes) -> str | None:
        """Why a serialized record cannot be stored, or ``None``."""
        if len(key_bytes) > MAX_KEY_BYTES:
            return key_too_long(len(key_bytes))
        if len(value_bytes) > self.max_value_bytes:
            return (
                f"value is {len(value_bytes)} bytes serialized; the store takes values of at most "
                f"{self.max_value_bytes:.0f} bytes (max_value_bytes; venice store update --max-value-size)"
            )
        return None


def _plan(store: str, description: dict[str, Any], schema_id: int | None = None) -> _Plan:
    """The store's codecs; values are written with value schema ``schema_id`` (default: the newest)."""
    schemas = description.get("value_schemas") or {}
    if not schemas:
        raise PushError(f"store {store!r} has no value schema")
    by_id = {int(k): v for k, v in schemas.items()}
    if schema_id is None:
        schema_id = max(by_id)
    elif schema_id not in by_id:
        known = ", ".join(str(i) for i in sorted(by_id))
        raise SchemaError(f"store {store!r} has no value schema {schema_id} (it has {known})")
    return _Plan(
        key_codec=AvroCodec(description["key_schema"], kind="key"),
        value_codec=AvroCodec(by_id[schema_id]),
        schema_id=schema_id,
        max_value_bytes=float(description.get("max_value_bytes") or "inf"),
        push_timeout_s=float(description.get("push_timeout_s") or "inf"),
    )


@dataclass
class _Written:
    records: int
    bytes: int
    per_partition: list[int]


class _Progress:
    """A tqdm bar over file bytes (so MB/s and percent) with the record count beside it.

    Drawn only when asked for and stderr is a terminal: in CI logs a redrawn bar is noise.
    """

    def __init__(self, source: RecordSource | None, label: str, enabled: bool) -> None:
        self.source = source
        self.bar = tqdm(
            total=source.size if source else 0,
            unit="B",
            unit_scale=True,
            desc=label,
            file=sys.stderr,
            disable=None if enabled else True,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, records: int) -> None:
        if self.source is not None:
            self.bar.update(self.source.bytes_read - self.bar.n)
        self.bar.set_postfix_str(f"{records} records", refresh=False)

    def close(self) -> None:
        self.bar.close()


async def push(
    controller_url: str,
    store: str,
    input_path: str | os.PathLike[str] | None,
    *,
    defer_swap: bool = False,
    key_field: str | None = None,
    fmt: str | None = None,
    progress: bool = True,
    timeout_s: float = 600.0,
    poll_interval_s: float = POLL_INTERVAL_S,
    http: httpx.AsyncClient | None = None,
    pubsub_factory: Callable[[str], PubSub] = connect,
    value_schema_id: int | None = None,
    token: str | None = None,
) -> PushSummary:
    """Push the file at ``input_path`` into ``store`` as a new version; return once it is ONLINE.

    Values are written with the store's value schema ``value_schema_id`` (default: the
    newest). A record with fields that schema lacks fails the push with the schema to
    register (see :func:`_unknown_fields_error`).

    ``key_field`` names the input field holding the key (default ``"key"``; ignored for
    record keys, whose fields are taken by name). ``input_path=None`` pushes an empty
    version (clears the store). ``defer_swap`` leaves the new version ONLINE but not
    current until ``venice version swap``. ``timeout_s`` bounds the wait for the
    servers to finish ingesting after everything was written. ``http`` and
    ``pubsub_factory`` let an embedding program (or a test) supply its own client and
    pub-sub backend. ``token``: a writer token of the store (default ``VENICE_TOKEN``).
    """
    started = time.monotonic()
    async with AsyncControllerClient(controller_url, http=http, timeout_s=_HTTP_TIMEOUT_S, token=token) as controller:
        description = await _describe_store(controller, store)
        plan = _plan(store, description, value_schema_id)
        options = {"defer_swap": defer_swap}
        settings = {"progress": progress, "timeout_s": timeout_s, "poll_interval_s": poll_interval_s,
                    "pubsub_factory": pubsub_factory}
        if input_path is None:
            version, written = await _open_and_write(controller, store, options, plan, None, None, iter(()), **settings)
        else:
            key_fields: list[str] = []
            try:
                with open_records(input_path, fmt) as source:
                    encoder = ColumnarEncoder(
                        plan.key_codec, plan.value_codec, key_field=key_field, text_cells=source.fmt == "csv", file=str(input_path)
                    )
                    converter = encoder.converter
                    key_fields = converter.key_field_names
                    batches = source.batches(_BATCH_ROWS)
                    first = next(batches, None)
                    if first is None:
                        raise input_error(
                            input_path, None, "no records to push (the file is empty; use --empty to clear a store)"
                        )
                    _encode_checked(plan, converter, first.position(0), first.record(0))  # fail before a version exists
                    version, written = await _open_and_write(
                        controller, store, options, plan, encoder, source, itertools.chain([first], batches), **settings
                    )
            except InvalidInputError as exc:
                if "unknown_fields" not in exc.details:
                    raise
                raise _unknown_fields_error(exc, controller_url, store, description, input_path, fmt, key_fields) from exc
    seconds = max(time.monotonic() - started, 1e-9)
    return PushSummary(
        store=store,
        version=version,
        records=written.records,
        bytes=written.bytes,
        seconds=seconds,
        records_per_s=written.records / seconds,
        duplicates=written.duplicates,
    )


async def _open_and_write(
    controller: AsyncControllerClient,
    store: str,
    options: dict[str, Any],
    plan: _Plan,
    encoder: ColumnarEncoder | None,
    source: RecordSource | None,
    records: Iterator[SourceBatch],
    **settings: Any,
) -> tuple[int, _Result]:
    """Open a version, write SOP, the records and EOP, and wait until ONLINE. Any failure
    after the version is opened is reported to the controller (the version goes ERROR)."""
    opened = await controller.open_version(store, defer_swap=bool(options.get("defer_swap")))
    opened_at = time.monotonic()
    version = int(opened["version"])
    work = _write_and_wait(controller, store, opened, opened_at, plan, encoder, source, records, **settings)
    return version, await _guarded(controller, store, version, work)


def run_push(
    controller_url: str,
    store: str,
    input_path: str | os.PathLike[str] | None,
    *,
    defer_swap: bool = False,
    key_field: str | None = None,
    fmt: str | None = None,
    progress: bool = True,
    timeout_s: float = 600.0,
    value_schema_id: int | None = None,
    token: str | None = None,
) -> PushSummary:
    """Synchronous :func:`push` (runs its own event loop; not for use inside one).

    Ctrl-C cancels the push, marks the version ERROR and raises KeyboardInterrupt.
    """
    return asyncio.run(
        push(
            controller_url, store, input_path, defer_swap=defer_swap, key_field=key_field, fmt=fmt,
            progress=progress, timeout_s=timeout_s, value_schema_id=value_schema_id, token=token,
        )
    )


def _unknown_fields_error(
    exc: InvalidInputError,
    controller_url: str,
    store: str,
    description: dict[str, Any],
    input_path: str | os.PathLike[str],
    fmt: str | None,
    key_fields: list[str],
) -> InvalidInputError:
    """``exc`` (a record with fields the push's value schema lacks) with what to do about it:
    the value schema to register (:func:`venice.evolution.propose_schema` over the whole
    file: the newest schema plus each new field, optional) and the command that does, or
    the registered schema that already has every field. ``exc`` itself when no schema can
    help (a value that is not a record, fields whose values contradict each other)."""
    from venice.evolution import propose_schema

    by_id = {int(k): v for k, v in (description.get("value_schemas") or {}).items()}
    newest = max(by_id)
    try:
        with open_records(input_path, fmt) as source:
            proposal = propose_schema(by_id[newest], source, exclude=key_fields, text_cells=source.fmt == "csv")
    except VeniceError:
        return exc
    if proposal is None:
        return InvalidInputError(
            f"{exc.message}\nvalue schema {newest} of store {store!r} has every field of this file: "
            f"push with --value-schema-id {newest} (the default)",
            **exc.details,
        )
    shown = orjson.dumps(proposal, option=orjson.OPT_INDENT_2).decode()
    return InvalidInputError(
        f"{exc.message}\n"
        f"The store's newest value schema ({newest}) lacks field(s) of this file. Register this schema as value "
        f"schema {newest + 1} (it adds them as optional fields, so data of every earlier schema stays readable), "
        f"save it as {store}-v{newest + 1}.avsc, and push again:\n\n{shown}\n\n"
        f"  venice store add-value-schema --controller {controller_url} {store} --value-schema @{store}-v{newest + 1}.avsc",
        **{**exc.details, "proposed_schema": proposal},
    )


async def _describe_store(controller: AsyncControllerClient, store: str) -> dict[str, Any]:
    try:
        return await controller.get_store(store)
    except StoreNotFoundError:
        raise
    except VeniceError as exc:
        if exc.code == "NOT_FOUND":
            raise StoreNotFoundError(f"store {store!r} does not exist") from exc
        raise


class _VersionFailed(PushError):
    """The controller already marked the version ERROR: nothing to report back."""


async def _guarded(controller: AsyncControllerClient, store: str, version: int, work: Any) -> Any:
    """Await ``work`` while watching the version on the controller.

    A version killed by an operator, failed by a server or timed out stops the push at
    once with the controller's reason. Any other failure marks the version ERROR (best
    effort) and is re-raised.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_watch_version(controller, store, version))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            watcher.result()  # raises _VersionFailed
        return task.result()
    except _VersionFailed:
        raise
    except BaseException as exc:
        ended = await _ended_on_controller(controller, store, version)
        if ended is not None:
            raise ended from exc
        await _report_failure(controller, store, version, _reason(exc))
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        if not task.done():
            task.cancel()


async def _ended_on_controller(controller: AsyncControllerClient, store: str, version: int) -> _VersionFailed | None:
    """The failure recorded on the controller, when the version already ended there."""
    try:
        info = await controller.get_version(store, version, timeout_s=_REPORT_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - best effort: the caller has an error to raise anyway
        return None
    status = info.get("status")
    if status in ("ERROR", "KILLED"):
        return _VersionFailed(f"version {version} of {store!r} failed ({status}): {info.get('reason') or 'no reason given'}")
    return None


async def _watch_version(controller: AsyncControllerClient, store: str, version: int) -> None:
    while True:
        await asyncio.sleep(_WATCH_INTERVAL_S)
        ended = await _ended_on_controller(controller, store, version)
        if ended is not None:
            raise ended


_WATCH_INTERVAL_S = 1.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return "push interrupted"
    if isinstance(exc, VeniceError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


async def _report_failure(controller: AsyncControllerClient, store: str, version: int, reason: str) -> None:
    """Tell the controller the version failed. Never raises: the original error matters more."""
    try:
        await controller.fail_version(store, version, reason, timeout_s=_REPORT_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - best effort; the caller re-raises the real failure
        pass


@dataclass
class _Result:
    records: int
    bytes: int
    duplicates: int


async def _write_and_wait(
    controller: AsyncControllerClient,
    store: str,
    opened: dict[str, Any],
    opened_at: float,
    plan: _Plan,
    encoder: ColumnarEncoder | None,
    source: RecordSource | None,
    records: Iterator[SourceBatch],
    *,
    progress: bool,
    timeout_s: float,
    poll_interval_s: float,
    pubsub_factory: Callable[[str], PubSub],
) -> _Result:
    version, topic, partitions = int(opened["version"]), str(opened["topic"]), int(opened["partitions"])
    tracker = DuplicateTracker(source.path if source else "<empty>")
    bar = _Progress(source, f"{store} v{version}", progress and source is not None)
    try:
        pubsub = pubsub_factory(str(opened["pubsub_url"]))
        try:
            producer = await pubsub.producer()
            try:
                start = {"store": store, "version": version, "partitions": partitions}
                await _control(producer, topic, partitions, ControlKind.START_OF_PUSH, lambda p: start)
                written = await _write_records(producer, topic, partitions, plan, encoder, tracker, records, bar)
                await producer.flush()
                counts = written.per_partition
                await _control(producer, topic, partitions, ControlKind.END_OF_PUSH, lambda p: {"records": counts[p]})
                await producer.flush()
            except BaseException:
                # The push is failing anyway: do not wait out the producer's delivery retries
                # (a killed version's topic is gone, so they can only time out).
                await _quietly(asyncio.wait_for(producer.close(), _ABANDON_TIMEOUT_S))
                raise
            await producer.close()
        finally:
            await _quietly(pubsub.close())
    finally:
        bar.close()
    written_at = time.monotonic()
    if opened_at + plan.push_timeout_s < written_at + timeout_s:
        deadline, limit = opened_at + plan.push_timeout_s, f"at the store's push timeout ({plan.push_timeout_s:g} s)"
    else:
        deadline, limit = written_at + timeout_s, f"after {timeout_s:g} s"
    await _report_end(controller, store, version, written.records, deadline)
    await _await_online(controller, store, version, deadline, limit, poll_interval_s)
    return _Result(records=written.records, bytes=written.bytes, duplicates=tracker.duplicates)


async def _report_end(controller: AsyncControllerClient, store: str, version: int, records: int, deadline: float) -> None:
    """``POST .../end``, retried with backoff while the controller is unreachable or answers
    503, until it answers or ``deadline`` passes. Safe to repeat: the call is idempotent."""
    delay = _END_RETRY_FIRST_S
    while True:
        try:
            await controller.end_of_push(
                store, version, records, timeout_s=max(1.0, min(_HTTP_TIMEOUT_S, deadline - time.monotonic()))
            )
            return
        except VeniceError as exc:
            if not exc.retriable:
                raise
            if time.monotonic() + delay > deadline:
                raise PushError(
                    f"could not tell the controller that {store} v{version} is complete before the push deadline "
                    f"({exc.message}); the version will not go live"
                ) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, _END_RETRY_MAX_S)


async def _quietly(closing: Any) -> None:
    """Await a close on an error path, where its own failure must not hide the first one."""
    try:
        await closing
    except Exception:  # noqa: BLE001
        pass


async def _control(
    producer: Producer, topic: str, partitions: int, kind: ControlKind, payload: Callable[[int], dict[str, Any]]
) -> None:
    headers = control_headers(kind)
    for partition in range(partitions):
        await producer.send(topic, partition, b"", encode_control(payload(partition)), headers)


async def _write_records(
    producer: Producer,
    topic: str,
    partitions: int,
    plan: _Plan,
    encoder: ColumnarEncoder | None,
    tracker: DuplicateTracker,
    batches: Iterator[SourceBatch],
    bar: _Progress,
) -> _Written:
    """Encode the input batch by batch (columns at once where the schema and the cells allow,
    record by record where not: :class:`~venice.push.columnar.ColumnarEncoder`), check
    sizes and duplicates, and ship every partition's records sorted by key.

    Sorted, a fresh version's partition arrives in key order and the servers append it
    (LMDB ``putmulti(append=True)``) instead of inserting at random places. The records
    wait in memory for that, up to :data:`SORT_BUFFER_BYTES`; a larger input is shipped in
    sorted runs, each a flush of the buffer (servers append the first run and insert the
    later ones in key order, while the push goes on reading).
    """
    with _cyclic_gc_paused():
        return await _write_all(producer, topic, partitions, plan, encoder, tracker, batches, bar)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the records are read, encoded and sent.

    The loop makes millions of short-lived objects, each allocation counting toward a
    collection, and the sort buffer holds a few hundred thousand more that every full
    collection walks again: with the collector on, a push of 100k records spent ~0.35 of
    its 2 CPU-seconds collecting (measured on the bench machine). Reference counting
    still frees everything at once; whatever cycle the loop might leave waits for the next
    collection. The collector is restored afterwards, also on errors, and left alone if
    it was off already.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def _write_all(
    producer: Producer,
    topic: str,
    partitions: int,
    plan: _Plan,
    encoder: ColumnarEncoder | None,
    tracker: DuplicateTracker,
    batches: Iterator[SourceBatch],
    bar: _Progress,
) -> _Written:
    headers = data_headers(plan.schema_id)
    buffer = _PartitionBuffer(producer, topic, partitions, headers)
    total = 0
    for batch in batches:
        assert encoder is not None  # only an empty push has no encoder, and no records
        encoded = _encode_batch(encoder, batch)
        size = _check_sizes(plan, encoder, batch, encoded)
        keys, values = encoded.keys.to_pylist(), encoded.values.to_pylist()
        outcomes = tracker.check_batch(keys, values, batch.numbers())
        if outcomes is not None:  # a key seen before: keep the new ones, stop at a contradiction
            for index, seen in enumerate(outcomes):
                if seen < 0:
                    key, _ = encoder.converter.convert(batch.position(index), batch.record(index))
                    tracker.check(key, keys[index], values[index], batch.position(index))  # raises, worded as ever
            keys = [k for k, seen in zip(keys, outcomes, strict=True) if seen > 0]
            values = [v for v, seen in zip(values, outcomes, strict=True) if seen > 0]
            size = sum(map(len, keys)) + sum(map(len, values))
        buffer.add_batch(keys, values, size)
        total = buffer.records
        bar.update(total)
        if buffer.held_bytes >= SORT_BUFFER_BYTES:
            await buffer.ship()
        await asyncio.sleep(0)  # a chance for Ctrl-C (task cancellation) even if sends never block
    await buffer.ship()
    bar.update(buffer.records)
    return _Written(records=buffer.records, bytes=buffer.bytes, per_partition=buffer.per_partition)


_BATCH_ROWS = 4096
"""Input rows encoded at once."""
SORT_BUFFER_BYTES = 8 << 20
"""Bytes of records (plus ~100 bytes each of Python overhead) a push holds to sort them by
key before shipping; beyond it the buffer is shipped as a sorted run and refilled.

Measured on the 2-core bench machine (1M string records, embedded log, R=2, wall time
to ONLINE): the whole push held and sorted (256 MiB) took 36 s, 8 MiB runs 21 s, runs
of one 4096-row batch 23 s: the servers ingesting while the push reads is worth more
than appending every key; 8 MiB still ships a small push as one sorted run."""
_RECORD_OVERHEAD = 100
_SHIP_CHUNK = 8192


class _PartitionBuffer:
    """Records per partition, shipped sorted by key (a run) when asked."""

    def __init__(self, producer: Producer, topic: str, partitions: int, headers: Any) -> None:
        self.producer, self.topic, self.headers = producer, topic, headers
        self.held: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
        self.held_bytes = 0
        self.per_partition = [0] * partitions
        self.records = 0
        self.bytes = 0
        self.runs = 0

    def add_batch(self, keys: list[bytes], values: list[bytes], size: int) -> None:
        """Hold ``keys[i]: values[i]`` on their partitions; ``size``: their bytes, all told."""
        appends = [held.append for held in self.held]
        for partition, pair in zip(partitions_for(keys, len(appends)), zip(keys, values, strict=True), strict=True):
            appends[partition](pair)
        self.held_bytes += size + _RECORD_OVERHEAD * len(keys)
        self.bytes += size
        self.records += len(keys)

    async def ship(self) -> None:
        for partition, pairs in enumerate(self.held):
            if not pairs:
                continue
            pairs.sort()  # keys are distinct (the duplicate check let one copy through): by key
            for start in range(0, len(pairs), _SHIP_CHUNK):
                chunk = pairs[start : start + _SHIP_CHUNK]
                await self.producer.send_many(
                    self.topic, partition, [k for k, _ in chunk], [v for _, v in chunk], self.headers
                )
                await asyncio.sleep(0)
            self.per_partition[partition] += len(pairs)
            self.held[partition] = []
        self.held_bytes = 0
        self.runs += 1


def _encode_batch(encoder: ColumnarEncoder, batch: SourceBatch) -> EncodedBatch:
    """Keys and values of a batch: columns at once where possible, else record by record; the
    first invalid record raises with its position."""
    if batch.csv is not None:
        rows = batch.csv
        return encoder.encode_csv(rows.columns, rows.rows, batch.position)
    if batch.arrow is not None:
        return encoder.encode(batch.arrow, batch.position)
    assert batch.records is not None
    return encoder.encode_records(batch.records)


def _check_sizes(plan: _Plan, encoder: ColumnarEncoder, batch: SourceBatch, encoded: EncodedBatch) -> int:
    """Refuse (naming the first) a record whose key or value is too large to store; the
    bytes of all keys and values otherwise."""
    key_lengths = np.asarray(pc.binary_length(encoded.keys).to_numpy(zero_copy_only=False))
    value_lengths = np.asarray(pc.binary_length(encoded.values).to_numpy(zero_copy_only=False))
    too_big = (key_lengths > MAX_KEY_BYTES) | (value_lengths > plan.max_value_bytes)
    if too_big.any():
        index = int(np.flatnonzero(too_big)[0])
        _encode_checked(plan, encoder.converter, batch.position(index), batch.record(index))  # raises with the reason
    return int(key_lengths.sum(dtype=np.int64)) + int(value_lengths.sum(dtype=np.int64))


def _encode_checked(plan: _Plan, converter: RecordConverter, position: str, record: dict[str, Any]) -> tuple[bytes, bytes]:
    """One record converted and serialized, refused (with its position) if it cannot be stored."""
    key, value = converter.convert(position, record)
    key_bytes, value_bytes = plan.key_codec.encode_unchecked(key), plan.value_codec.encode_unchecked(value)
    problem = plan.size_problem(key_bytes, value_bytes)
    if problem is not None:
        raise input_error(converter.file, position, problem)
    return key_bytes, value_bytes


async def _await_online(
    controller: AsyncControllerClient, store: str, version: int, deadline: float, limit: str, poll_s: float
) -> None:
    """Poll the version until ONLINE, riding out controller outages; ERROR/KILLED raise
    PushError. At the deadline the version is reported failed, unless the controller
    says it just went ONLINE: what the controller decided is what the job reports."""
    last: dict[str, Any] = {}
    while True:
        try:
            last = await controller.get_version(store, version)
        except UnavailableError:
            pass  # a controller restart or hiccup: keep polling until the deadline
        status = last.get("status")
        if status == "ONLINE":
            return
        if status in ("ERROR", "KILLED"):
            reason = last.get("reason") or "no reason given"
            raise _VersionFailed(f"version {version} of {store!r} failed ({status}): {reason}")
        if time.monotonic() >= deadline:
            message = (
                f"timed out {limit} waiting for version {version} of {store!r} to go ONLINE "
                f"(status {status or 'unknown'}; {_readiness(last)})"
            )
            try:
                await controller.fail_version(store, version, message, timeout_s=_REPORT_TIMEOUT_S)
            except ConflictError:
                # It went ONLINE (or failed) between the last poll and now: the controller's word goes.
                with contextlib.suppress(VeniceError):
                    last = await controller.get_version(store, version, timeout_s=_REPORT_TIMEOUT_S)
                if last.get("status") == "ONLINE":
                    return
                raise _VersionFailed(
                    f"version {version} of {store!r} failed ({last.get('status')}): {last.get('reason') or 'no reason given'}"
                ) from None
            except VeniceError:
                raise PushError(message) from None  # unreachable: the store's push timeout fails it there
            raise _VersionFailed(message)  # reported: nothing more to tell the controller
        await asyncio.sleep(poll_s)


def _readiness(description: dict[str, Any]) -> str:
    """``"3/4 partitions have a ready replica"``: where a stuck push is stuck."""
    replicas = description.get("replicas") or {}
    partitions = int(description.get("partitions") or len(replicas) or 0)
    ready = sum(1 for entries in replicas.values() if any(r.get("status") == "READY" for r in entries))
    return f"{ready}/{partitions} partitions have a ready replica"
