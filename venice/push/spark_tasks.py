"""What the executors of a Spark push run (:mod:`venice.push.spark` drives them).

Two functions of Arrow batches, run by ``mapInArrow``; neither imports pyspark, so they
are tested with plain pyarrow batches and no Spark:

* :class:`EncodeTask` (after the input scan): each row is parsed (JSON lines and CSV
  arrive as lines of Spark's text reader), validated, Avro-encoded (columns at once
  where the schema allows, :mod:`venice.push.columnar`) and given its partition,
  ``partition_for(key_bytes, P)``, and its position in the input.
* :class:`WriteTask` (after a shuffle by partition and a sort by key bytes within
  each): every record of one partition, in key order, to the version topic, with
  identical repeats of a key dropped and a key repeated with another value refused
  (they are neighbours after the sort, so no executor holds more than one key).

**Positions.** A row's position is ``(file, block, row)``: the index of its file in the
sorted input files, the byte offset where Spark's split of that file starts, and its
number within that split. Executors cannot know how many rows earlier splits hold;
the driver works out ``line N``/``record N`` when it reports an error (see
:mod:`venice.push.spark`). A DataFrame's rows are ``(-1, spark partition, row)``.

**Failures** leave the executor as a :class:`TaskFailure` whose message carries a
marker (``<<venice:BASE64-JSON>>``) that survives Spark's wrapping of the exception
into text; the driver turns it back into our error with the position resolved.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import itertools
import logging
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import mmh3
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from venice.errors import InvalidInputError, PubSubError, TopicNotFoundError, VeniceError
from venice.partitioner import partition_for
from venice.pubsub import connect
from venice.push.columnar import ColumnarEncoder, EncodedBatch
from venice.push.formats import csv_columns, decode_line, json_record, strip_bom
from venice.push.records import describe_key
from venice.schema import AvroCodec
from venice.wire import data_headers

__all__ = [
    "BLOCK_COLUMN",
    "ENCODED_SCHEMA",
    "FILE_COLUMN",
    "FIRST_PLACEHOLDER",
    "WRITTEN_SCHEMA",
    "CountBefore",
    "EncodeTask",
    "InputSpec",
    "TaskFailure",
    "WriteTask",
    "csv_cells",
    "display_path",
    "failure_in",
    "normalize_uri",
    "shuffle_keys",
]

FILE_COLUMN = "__venice_file"
"""Input column with the row's file (``_metadata.file_path``)."""
BLOCK_COLUMN = "__venice_block"
"""Input column with the start of the row's split (or the DataFrame partition)."""
ENCODED_SCHEMA = "vp int, sk int, k binary, v binary, f int, b long, r long"
"""Stage 1 output: partition, shuffle key, key, value, position (file, block, row)."""
WRITTEN_SCHEMA = "partition int, spark_partition int, records long, bytes long, duplicates long"
"""Stage 2 output: one row per partition written."""
FIRST_PLACEHOLDER = "\x00FIRST\x00"
"""Stands for the first occurrence's position in a duplicate-key reason (the driver fills it in)."""

TEXT_KINDS = ("jsonl", "csv")
_OUTPUT_BYTES = 64 << 20  # keys + values per output batch: far below Arrow's 2 GiB per binary column
_MARKER = re.compile(r"<<venice:([A-Za-z0-9+/=]+)>>")
_SPARK_HASH_SEED = 42
_ABANDON_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class InputSpec:
    """Everything the executors need to know about the push, sent with the task."""

    kind: str
    """``jsonl``, ``csv`` (lines of text), ``columns`` (Parquet, Avro) or ``dataframe``."""
    key_schema: Any
    value_schema: Any
    partitions: int
    key_field: str | None = None
    files: tuple[str, ...] = ()
    """Input files, sorted, as Spark names them (``file:/...``)."""
    header: tuple[str, ...] = ()
    """CSV: the column names of the first file's header."""
    max_key_bytes: int = 511
    max_value_bytes: int = 1 << 20


def normalize_uri(uri: str) -> str:
    """``file:///x`` and ``file:/x`` (both are seen from Spark) as one spelling."""
    if uri.startswith("file:///"):
        return "file:/" + uri[len("file:///") :]
    return uri


def display_path(uri: str) -> str:
    """A file as a person would write it: a local file without ``file:``, un-escaped."""
    uri = normalize_uri(uri)
    if uri.startswith("file:/"):
        return unquote(uri[len("file:") :])
    return unquote(uri)


def shuffle_keys(partitions: int) -> list[int]:
    """For each partition ``p``, an int ``s`` that Spark's hash partitioning into
    ``partitions`` sends to Spark partition ``p`` (``pmod(murmur3(s, seed 42), n)``).

    Repartitioning by these instead of by ``p`` makes Spark partition ``p`` hold exactly
    Venice partition ``p``: by ``p`` itself two partitions can share a task while
    another task idles. Were Spark to hash differently, records would still be right,
    only less evenly spread.
    """
    found = [-1] * partitions
    missing, candidate = partitions, 0
    while missing:
        spark_partition = mmh3.hash(struct.pack("<i", candidate), _SPARK_HASH_SEED) % partitions
        if found[spark_partition] < 0:
            found[spark_partition] = candidate
            missing -= 1
        candidate += 1
    return found


# --- failures -----------------------------------------------------------------------------


class TaskFailure(Exception):
    """A failure inside a task, in a form that survives Spark's exception wrapping."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        encoded = base64.b64encode(orjson.dumps(payload)).decode()
        super().__init__(f"{payload.get('reason', '')} <<venice:{encoded}>>")

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskFailure, (self.payload,))


def failure_in(text: str) -> dict[str, Any] | None:
    """The payload of the first :class:`TaskFailure` named in ``text`` (an exception's message)."""
    found = _MARKER.search(text)
    if found is None:
        return None
    try:
        payload: dict[str, Any] = orjson.loads(base64.b64decode(found.group(1)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return payload


def _at(f: int, b: int, r: int) -> list[int]:
    return [int(f), int(b), int(r)]


def _input_failure(reason: str, at: list[int], first: list[int] | None = None) -> TaskFailure:
    payload: dict[str, Any] = {"kind": "input", "reason": reason, "at": at}
    if first is not None:
        payload["first"] = first
    return TaskFailure(payload)


def _reason_of(exc: InvalidInputError) -> str:
    """The reason of an input error, without the ``file: position:`` in front of it."""
    prefix = ": ".join(str(p) for p in (exc.details.get("file"), exc.details.get("position")) if p)
    return exc.message.removeprefix(prefix + ": ") if prefix else exc.message


# --- stage 1: validate, encode, partition ----------------------------------------------------


@dataclass
class _Rows:
    """Positions of the rows of one input batch."""

    f: np.ndarray
    b: np.ndarray
    r: np.ndarray

    def at(self, index: int) -> list[int]:
        return _at(self.f[index], self.b[index], self.r[index])


class EncodeTask:
    """Stage 1: input batches -> ``ENCODED_SCHEMA`` batches. Raises :class:`TaskFailure`
    for the first row that cannot be pushed."""

    def __init__(self, spec: InputSpec) -> None:
        self._reset(spec)

    def _reset(self, spec: InputSpec) -> None:
        self.spec = spec
        self._encoder: ColumnarEncoder | None = None
        self._file_index: dict[str, int] = {}
        self._counts: dict[tuple[int, int], int] = {}
        self._shuffle: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}  # codecs and counters are built afresh in each task

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reset(state["spec"])

    @property
    def encoder(self) -> ColumnarEncoder:
        if self._encoder is None:
            spec = self.spec
            self._encoder = ColumnarEncoder(
                AvroCodec(spec.key_schema, kind="key"), AvroCodec(spec.value_schema),
                key_field=spec.key_field, text_cells=spec.kind == "csv", file="<input>",
            )
            self._file_index = {normalize_uri(path): i for i, path in enumerate(spec.files)}
            self._shuffle = np.asarray(shuffle_keys(spec.partitions), np.int32)
        return self._encoder

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield from self.encode(batch)

    def encode(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        encoder = self.encoder
        rows = self._positions(batch)
        if self.spec.kind in TEXT_KINDS:
            kept, encoded = self._encode_lines(batch.column("value"), rows)
        else:
            keep = [i for i, name in enumerate(batch.schema.names) if name not in (FILE_COLUMN, BLOCK_COLUMN)]
            data = pa.RecordBatch.from_arrays([batch.column(i) for i in keep], names=[batch.schema.names[i] for i in keep])
            try:
                encoded = encoder.encode(data, position=lambda i: f"#{i}")
            except InvalidInputError as exc:
                raise self._failure(exc, rows, None) from None
            kept = np.arange(batch.num_rows)
        if not len(encoded):
            return
        self._check_limits(encoded, rows, kept)
        yield from self._output(encoded, rows, kept)

    # -- positions ------------------------------------------------------------------------

    def _positions(self, batch: pa.RecordBatch) -> _Rows:
        count = batch.num_rows
        names = batch.schema.names
        if FILE_COLUMN in names:
            files = pc.dictionary_encode(batch.column(FILE_COLUMN))
            lookup = np.asarray([self._file_index.get(normalize_uri(str(p)), -1) for p in files.dictionary.to_pylist()] or [-1],
                                np.int32)
            f = lookup[np.asarray(files.indices.to_numpy(zero_copy_only=False), np.int64)]
        else:
            f = np.full(count, -1, np.int32)
        b = (np.asarray(batch.column(BLOCK_COLUMN).to_numpy(zero_copy_only=False), np.int64)
             if BLOCK_COLUMN in names else np.zeros(count, np.int64))
        r = np.empty(count, np.int64)
        change = np.ones(count, bool)
        change[1:] = (f[1:] != f[:-1]) | (b[1:] != b[:-1])
        starts = np.flatnonzero(change)
        for start, end in zip(starts, [*starts[1:], count], strict=True):
            key = (int(f[start]), int(b[start]))
            base = self._counts.get(key, 0)
            r[start:end] = np.arange(base, base + end - start)
            self._counts[key] = base + end - start
        return _Rows(f, b, r)

    def _failure(self, exc: InvalidInputError, rows: _Rows, kept: Sequence[int] | None) -> TaskFailure:
        position = str(exc.details.get("position") or "#0")
        index = int(position[1:]) if position.startswith("#") and position[1:].isdigit() else 0
        if kept is not None:
            index = int(kept[index])
        return _input_failure(_reason_of(exc), rows.at(index))

    # -- JSON lines and CSV ---------------------------------------------------------------------

    def _encode_lines(self, column: pa.Array, rows: _Rows) -> tuple[np.ndarray, EncodedBatch]:
        lines = column.to_pylist()
        records: list[tuple[str, dict[str, Any]]] = []
        kept: list[int] = []
        parse = self._csv_row if self.spec.kind == "csv" else self._json_row
        for index, line in enumerate(lines):
            raw = line if isinstance(line, bytes) else (line or "").encode()
            if rows.b[index] == 0 and rows.r[index] == 0:
                raw = strip_bom(raw)
                if self.spec.kind == "csv":
                    self._check_header(raw, rows.at(index))
                    continue
            try:
                record = parse(raw)
            except ValueError as exc:
                raise _input_failure(str(exc), rows.at(index)) from None
            if record is not None:
                records.append((f"#{len(kept)}", record))
                kept.append(index)
        try:
            encoded = self.encoder.encode_records(records)
        except InvalidInputError as exc:
            raise self._failure(exc, rows, kept) from None
        return np.asarray(kept, np.int64), encoded

    @staticmethod
    def _json_row(raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None  # blank lines are skipped, as venice push does
        return json_record(raw)

    def _csv_row(self, raw: bytes) -> dict[str, Any] | None:
        text = decode_line(raw)
        cells = csv_cells(text)
        if not cells:
            return None  # a blank line
        header = self.spec.header
        if len(cells) != len(header):
            raise ValueError(f"expected {len(header)} cells as in the header, got {len(cells)}")
        return dict(zip(header, cells, strict=True))

    def _check_header(self, raw: bytes, at: list[int]) -> None:
        try:
            columns = csv_columns(csv_cells(decode_line(raw)))
        except ValueError as exc:
            raise _input_failure(str(exc), at) from None
        if tuple(columns) != self.spec.header:
            raise _input_failure(
                f"the header ({', '.join(columns)}) differs from the first file's ({', '.join(self.spec.header)})", at)

    # -- limits, partitions, output --------------------------------------------------------------

    def _check_limits(self, encoded: EncodedBatch, rows: _Rows, kept: np.ndarray) -> None:
        spec = self.spec
        for array, limit, what in ((encoded.keys, spec.max_key_bytes, "key"), (encoded.values, spec.max_value_bytes, "value")):
            lengths = np.asarray(pc.binary_length(array).to_numpy(zero_copy_only=False), np.int64)
            over = np.flatnonzero(lengths > limit)
            if over.size:
                index = int(over[0])
                reason = (f"key of {lengths[index]} bytes is longer than the {limit} bytes a key may have" if what == "key"
                          else f"value of {lengths[index]} bytes is larger than the store's max_value_bytes ({limit})")
                raise _input_failure(reason, rows.at(int(kept[index])))

    def _output(self, encoded: EncodedBatch, rows: _Rows, kept: np.ndarray) -> Iterator[pa.RecordBatch]:
        partitions = self.spec.partitions
        vp = np.fromiter((partition_for(k, partitions) for k in encoded.keys.to_pylist()), np.int32, len(encoded))
        assert self._shuffle is not None
        columns = [pa.array(vp), pa.array(self._shuffle[vp]), encoded.keys, encoded.values,
                   pa.array(rows.f[kept]), pa.array(rows.b[kept]), pa.array(rows.r[kept])]
        batch = pa.RecordBatch.from_arrays(columns, names=["vp", "sk", "k", "v", "f", "b", "r"])
        sizes = (np.asarray(pc.binary_length(encoded.keys).to_numpy(zero_copy_only=False), np.int64)
                 + np.asarray(pc.binary_length(encoded.values).to_numpy(zero_copy_only=False), np.int64))
        start, cumulative = 0, np.cumsum(sizes)
        while start < len(sizes):
            base = cumulative[start - 1] if start else 0
            end = max(start + 1, int(np.searchsorted(cumulative, base + _OUTPUT_BYTES, side="right")))
            yield batch.slice(start, end - start)
            start = end


def csv_cells(text: str) -> list[str]:
    """The cells of one CSV line. Spark splits files at line ends, so a quoted cell cannot
    span lines here (``venice push`` allows it)."""
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        hint = " (a quoted cell cannot span lines in a Spark push)" if "unexpected end of data" in str(exc) else ""
        raise ValueError(f"malformed CSV: {exc}{hint}") from None


# --- stage 2: drop identical repeats, refuse conflicting ones, write ---------------------------


@dataclass
class _PartitionStats:
    records: int = 0
    bytes: int = 0
    duplicates: int = 0


@dataclass
class _Run:
    """The key whose run of repeats may continue in the next batch."""

    key: bytes | None = None
    first_value: bytes = b""
    first_at: list[int] = field(default_factory=list)


class WriteTask:
    """Stage 2: sorted ``ENCODED_SCHEMA`` batches -> records on the version topic, and one
    ``WRITTEN_SCHEMA`` row per partition written.

    Before the first record of a partition the task checks that the partition holds only
    its start-of-push: records from an earlier, failed attempt of the same task cannot be
    taken back, and writing them again would double them. Such a retry fails the push.
    """

    def __init__(self, spec: InputSpec, pubsub_url: str, topic: str, schema_id: int) -> None:
        self.spec = spec
        self.pubsub_url = pubsub_url
        self.topic = topic
        self.schema_id = schema_id

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        stats = asyncio.run(self.write(batches))
        if stats:
            spark_partition = _spark_partition_id()
            ordered = sorted(stats)
            yield pa.RecordBatch.from_pydict({
                "partition": pa.array(ordered, pa.int32()),
                "spark_partition": pa.array([spark_partition] * len(ordered), pa.int32()),
                "records": pa.array([stats[p].records for p in ordered], pa.int64()),
                "bytes": pa.array([stats[p].bytes for p in ordered], pa.int64()),
                "duplicates": pa.array([stats[p].duplicates for p in ordered], pa.int64()),
            })

    async def write(self, batches: Iterator[pa.RecordBatch]) -> dict[int, _PartitionStats]:
        key_codec = AvroCodec(self.spec.key_schema, kind="key")
        headers = data_headers(self.schema_id)
        stats: dict[int, _PartitionStats] = {}
        run = _Run()
        try:
            pubsub = connect(self.pubsub_url)
        except VeniceError as exc:
            raise TaskFailure({"kind": "pubsub", "reason": exc.message}) from None
        try:
            producer = await pubsub.producer()
            try:
                offsets = await pubsub.end_offsets(self.topic)
                for batch in batches:
                    keep = _deduplicate(batch, run, stats, key_codec)
                    kept = batch.filter(pa.array(keep)) if not keep.all() else batch
                    for p, keys, values in _runs_by_partition(kept):
                        partition = stats.get(p)
                        if partition is None or partition.records == 0:
                            partition = self._first_of(p, offsets, stats)
                        send, topic = producer.send, self.topic
                        for k, v in zip(keys.to_pylist(), values.to_pylist(), strict=True):
                            await send(topic, p, k, v, headers)
                        partition.records += len(keys)
                        partition.bytes += _total_length(keys) + _total_length(values)
                await producer.flush()
            except BaseException:
                # Failing anyway: do not wait out the producer's delivery retries.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.close(), _ABANDON_TIMEOUT_S)
                raise
            await producer.close()
        except (PubSubError, TopicNotFoundError) as exc:  # a topic deleted under us: the version was killed
            raise TaskFailure({"kind": "pubsub", "reason": exc.message}) from None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.close()
        return stats

    def _first_of(self, partition: int, offsets: dict[int, int], stats: dict[int, _PartitionStats]) -> _PartitionStats:
        already = offsets.get(partition, 0) - 1  # the start-of-push is the one record expected
        if already != 0:
            raise TaskFailure({
                "kind": "retry",
                "reason": f"partition {partition} of {self.topic} already holds {max(already, 0)} records from an earlier "
                          "attempt of this Spark task (or lacks its start-of-push); writing them again would double them",
            })
        return stats.setdefault(partition, _PartitionStats())


def _runs_by_partition(batch: pa.RecordBatch) -> Iterator[tuple[int, pa.Array, pa.Array]]:
    """``(partition, keys, values)`` of each run of one partition (the batch is sorted by it)."""
    partitions = np.asarray(batch.column("vp").to_numpy(zero_copy_only=False))
    if not len(partitions):
        return
    edges = [0, *(np.flatnonzero(partitions[1:] != partitions[:-1]) + 1).tolist(), len(partitions)]
    for start, end in itertools.pairwise(edges):
        yield int(partitions[start]), batch.column("k").slice(start, end - start), batch.column("v").slice(start, end - start)


def _total_length(array: pa.Array) -> int:
    return int(pc.sum(pc.binary_length(array)).as_py() or 0)


def _deduplicate(batch: pa.RecordBatch, run: _Run, stats: dict[int, _PartitionStats], key_codec: AvroCodec) -> np.ndarray:
    """Which rows to write: the first of each key. A repeat with the same value is counted
    and dropped; with another value it fails the push, naming both positions."""
    count = batch.num_rows
    keys, values = batch.column("k"), batch.column("v")
    same = np.zeros(count, bool)
    if count > 1:
        same[1:] = np.asarray(pc.equal(keys.slice(1), keys.slice(0, count - 1)).to_numpy(zero_copy_only=False), bool)
    if count and run.key is not None:
        same[0] = keys[0].as_py() == run.key
    starts = np.maximum.accumulate(np.where(same, -1, np.arange(count))) if count else np.zeros(0, np.int64)
    f, b, r = (batch.column(c).to_numpy(zero_copy_only=False) for c in ("f", "b", "r"))
    for index in np.flatnonzero(same):
        start = int(starts[index])
        first_value = values[start].as_py() if start >= 0 else run.first_value
        first_at = _at(f[start], b[start], r[start]) if start >= 0 else run.first_at
        if values[index].as_py() == first_value:
            partition = int(batch.column("vp")[index].as_py())
            stats.setdefault(partition, _PartitionStats()).duplicates += 1
            continue
        key = key_codec.decode(keys[index].as_py())
        raise _input_failure(
            f"key {describe_key(key)} appears twice with different values (first at {FIRST_PLACEHOLDER})",
            _at(f[index], b[index], r[index]), first_at,
        )
    if count:
        last_start = int(starts[-1])
        if last_start >= 0:
            run.key = keys[count - 1].as_py()
            run.first_value = values[last_start].as_py()
            run.first_at = _at(f[last_start], b[last_start], r[last_start])
    return ~same


class CountBefore:
    """Rows of file ``uri`` in splits that start before byte ``block``: with a row's number
    in its own split, its line or record number in the file (an error path only)."""

    def __init__(self, uri: str, block: int) -> None:
        self.uri = normalize_uri(uri)
        self.block = block

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = 0
        for batch in batches:
            files = batch.column(FILE_COLUMN).to_pylist()
            blocks = batch.column(BLOCK_COLUMN).to_pylist()
            total += sum(1 for f, b in zip(files, blocks, strict=True) if b < self.block and normalize_uri(f) == self.uri)
        yield pa.RecordBatch.from_pydict({"n": pa.array([total], pa.int64())})


def _spark_partition_id() -> int:
    """The Spark partition this task works on (-1 outside Spark, as in tests)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return -1
    context = TaskContext.get()
    return -1 if context is None else int(context.partitionId())


