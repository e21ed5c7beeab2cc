"""Reading push input files: JSON lines, CSV, Avro and Parquet, each optionally gzipped.

Every reader streams (a push input may be far larger than memory) and yields
``(position, record)`` pairs, where ``position`` is what a human needs to find the
record in the file: ``"line 17"`` for the text formats (the physical line, so an editor
jumps straight to it; the CSV header is line 1) and ``"record 17"`` (1-based) for the
binary ones. Anything malformed becomes :class:`~venice.errors.InvalidInputError`
naming the file, the position and the reason, because the person pushing has to fix
the file, not the code.

A :class:`RecordSource` also reports the file size and how many bytes of it were read
so far, which is what a progress bar in MB/s and percent needs.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from venice.errors import InvalidInputError

__all__ = [
    "FORMATS",
    "CsvRows",
    "RecordSource",
    "SourceBatch",
    "csv_columns",
    "decode_line",
    "detect_format",
    "input_error",
    "json_record",
    "open_records",
    "strip_bom",
]

FORMATS: tuple[str, ...] = ("jsonl", "csv", "avro", "parquet")
"""Format names accepted by ``fmt=`` / ``--format``."""

_ALIASES = {"json": "jsonl", "ndjson": "jsonl", "jsonl": "jsonl", "csv": "csv", "avro": "avro", "parquet": "parquet"}
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".avro": "avro", ".parquet": "parquet"}
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
# What reading a damaged (or damaged gzip) file raises, besides our own errors.
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError)
_PARQUET_BATCH_ROWS = 4096


def input_error(path: str | os.PathLike[str], position: str | None, reason: str) -> InvalidInputError:
    """The one shape of a bad-input error: ``"<file>: <position>: <reason>"``."""
    where = f"{path}: {position}" if position else str(path)
    return InvalidInputError(f"{where}: {reason}", file=str(path), position=position)


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` when given, else from the name (a ``.gz`` suffix is
    looked through). Compression is detected from the content, not the name."""
    if fmt is not None:
        normalized = _ALIASES.get(fmt.lower().removesuffix(".gz").lstrip("."))
        if normalized is None:
            raise InvalidInputError(f"unknown input format {fmt!r}: expected one of {', '.join(FORMATS)}")
        return normalized
    name = Path(path).name.lower().removesuffix(".gz")
    found = _SUFFIXES.get(Path(name).suffix)
    if found is None:
        raise input_error(path, None, f"cannot tell the format from the file name; give one of {', '.join(FORMATS)} explicitly")
    return found


class RecordSource:
    """An open input file: iterate it for ``(position, record)``; close it when done.

    Iterate only once. ``size`` is the size on disk and ``bytes_read`` how much of it
    has been consumed (compressed bytes for gzipped input), both for progress display.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str | None = None) -> None:
        self.path = Path(path)
        self.fmt = detect_format(path, fmt)
        self._stack = contextlib.ExitStack()
        try:
            self._raw: IO[bytes] = self._stack.enter_context(open(self.path, "rb"))  # noqa: SIM115
        except IsADirectoryError:
            raise input_error(path, None, "is a directory, not a file") from None
        except FileNotFoundError:
            raise input_error(path, None, "no such file") from None
        except OSError as exc:
            raise input_error(path, None, f"cannot open: {exc.strerror or exc}") from None
        self.size = os.fstat(self._raw.fileno()).st_size
        self.compressed = self._raw.read(2) == _GZIP_MAGIC
        self._raw.seek(0)
        self._rows_done = 0
        self._rows_total: int | None = None
        self._started = False

    @property
    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (an estimate for Parquet, read by row group)."""
        if self._rows_total is not None:
            return self.size * self._rows_done // max(self._rows_total, 1)
        if self._raw.closed:
            return self.size
        return min(self._raw.tell(), self.size)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._started:
            raise RuntimeError("a RecordSource can be iterated only once")
        self._started = True
        readers = {"jsonl": self._jsonl, "csv": self._csv, "avro": self._avro, "parquet": self._parquet}
        return readers[self.fmt]()

    def batches(self, size: int = 4096) -> Iterator[SourceBatch]:
        """The records in batches of up to ``size``, in the shape their format holds them:
        CSV as rows of text cells (:attr:`SourceBatch.csv`), Parquet as Arrow batches
        (:attr:`SourceBatch.arrow`), the others as ``(position, record)`` pairs. Positions
        and errors are those of iterating the source. Iterate only once (this or ``iter``).

        The first batch holds the first record alone (the push checks it before it opens
        a version; a bad record further on fails the version, as when iterating)."""
        if self._started:
            raise RuntimeError("a RecordSource can be iterated only once")
        self._started = True
        if self.fmt == "csv":
            yield from self._csv_batches(size)
        elif self.fmt == "parquet":
            yield from self._parquet_batches(size)
        elif self.fmt == "jsonl":
            yield from self._jsonl_batches(size)
        else:
            records = self._avro()
            take = 1
            while True:
                chunk = list(itertools.islice(records, take))
                take = size
                if not chunk:
                    return
                yield SourceBatch(records=chunk)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RecordSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, position: str | None, reason: str) -> InvalidInputError:
        return input_error(self.path, position, reason)

    def _stream(self) -> IO[bytes]:
        """The decompressed byte stream."""
        if not self.compressed:
            return self._raw
        return self._stack.enter_context(gzip.GzipFile(fileobj=self._raw, mode="rb"))  # type: ignore[arg-type]  # a GzipFile is an IO[bytes]

    # -- JSON lines ------------------------------------------------------------------

    def _jsonl(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for lineno, line in self._lines(self._stream()):
            if not line.strip():
                continue
            yield f"line {lineno}", self._json_object(line, f"line {lineno}")

    def _jsonl_batches(self, size: int) -> Iterator[SourceBatch]:
        """:meth:`_jsonl` in batches: a batch of lines that are all JSON objects is parsed in
        one comprehension (no generator step, no function call per line); a batch with a
        blank line or anything else goes line by line through :meth:`_jsonl`'s rules, which
        word the error of its first bad line."""
        readline = self._stream().readline
        loads = orjson.loads
        lineno = 0
        take = 1  # the first record alone (the push checks it before opening a version)
        while True:
            lines: list[bytes] = []
            for _ in range(take):
                try:
                    line = readline()
                except _READ_ERRORS as exc:
                    raise self._error(f"line {lineno + len(lines) + 1}", f"cannot read the file: {exc}") from None
                if not line:
                    break
                lines.append(line)
            if not lines:
                return
            if lineno == 0:
                lines[0] = strip_bom(lines[0])
            first, lineno = lineno + 1, lineno + len(lines)
            try:
                parsed: list[Any] | None = [loads(line) for line in lines]
            except orjson.JSONDecodeError:
                parsed = None
            numbers = list(range(first, lineno + 1))
            if parsed is not None and all(type(obj) is dict for obj in parsed):
                records = [(f"line {number}", obj) for number, obj in zip(numbers, parsed, strict=True)]
            else:
                kept = [(number, line) for number, line in zip(numbers, lines, strict=True) if line.strip()]
                numbers = [number for number, _ in kept]
                records = [(f"line {number}", self._json_object(line, f"line {number}")) for number, line in kept]
            if records:
                take = size
                yield SourceBatch(records=records, numbers_=numbers)

    def _lines(self, stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        """``(line number, bytes)`` of each line, the UTF-8 BOM removed from the first; a
        read error (e.g. a truncated gzip) names the line it happened at."""
        lineno = 0
        while True:
            lineno += 1
            try:
                line = stream.readline()
            except _READ_ERRORS as exc:
                raise self._error(f"line {lineno}", f"cannot read the file: {exc}") from None
            if not line:
                return
            if lineno == 1:
                line = strip_bom(line)
            yield lineno, line

    def _json_object(self, line: bytes, position: str) -> dict[str, Any]:
        try:
            return json_record(line)
        except ValueError as exc:
            raise self._error(position, str(exc)) from None

    # -- CSV -------------------------------------------------------------------------

    def _csv(self) -> Iterator[tuple[str, dict[str, Any]]]:
        rows = self._csv_rows()
        columns = next(rows, None)
        if columns is None:
            return
        for lineno, row in rows:
            yield f"line {lineno}", dict(zip(columns, row, strict=True))

    def _csv_batches(self, size: int) -> Iterator[SourceBatch]:
        rows = self._csv_rows()
        columns = next(rows, None)
        if columns is None:
            return
        take = 1
        while True:
            chunk = list(itertools.islice(rows, take))
            take = size
            if not chunk:
                return
            lines = [lineno for lineno, _ in chunk]
            yield SourceBatch(csv=CsvRows(columns, [row for _, row in chunk], lines))

    def _csv_rows(self) -> Iterator[Any]:
        """The header's column names first, then ``(line number, cells)`` of each row (blank
        lines skipped; a row with the wrong number of cells is an error)."""
        reader = csv.reader(self._text_lines(self._stream()), strict=True)
        header = self._csv_row(reader, 1)
        if header is None:
            return
        columns = self._csv_header(header)
        yield columns
        last_line = reader.line_num
        width = len(columns)
        while True:
            row = self._csv_row(reader, last_line + 1)
            if row is None:
                return
            lineno = last_line + 1
            last_line = reader.line_num
            if not row:  # a blank line
                continue
            if len(row) != width:
                raise self._error(f"line {lineno}", f"expected {width} cells as in the header, got {len(row)}")
            yield lineno, row

    def _text_lines(self, stream: IO[bytes]) -> Iterator[str]:
        """Lines decoded one by one, so a bad byte is reported on its own line number
        (a TextIOWrapper decodes ahead in 8 KB chunks and would blame an earlier line)."""
        for lineno, line in self._lines(stream):
            try:
                yield decode_line(line)
            except ValueError as exc:
                raise self._error(f"line {lineno}", str(exc)) from None

    def _csv_row(self, reader: Any, lineno: int) -> list[str] | None:
        try:
            row: list[str] = next(reader)
            return row
        except StopIteration:
            return None
        except csv.Error as exc:
            raise self._error(f"line {lineno}", f"malformed CSV: {exc}") from None
        except _READ_ERRORS as exc:
            raise self._error(f"line {lineno}", f"cannot read the file: {exc}") from None

    def _csv_header(self, header: list[str]) -> list[str]:
        try:
            return csv_columns(header)
        except ValueError as exc:
            raise self._error("line 1", str(exc)) from None

    # -- Avro object container files -------------------------------------------------

    def _avro(self) -> Iterator[tuple[str, dict[str, Any]]]:
        import fastavro

        try:
            records = iter(fastavro.reader(self._stream()))
        except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types for a bad header
            raise self._error("record 1", f"not a readable Avro object container file: {exc}") from None
        number = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types for bad data
                raise self._error(f"record {number + 1}", f"corrupt Avro data: {exc!r}") from None
            number += 1
            if not isinstance(record, dict):
                raise self._error(f"record {number}", "the file's schema is not a record; push needs records with named fields")
            yield f"record {number}", record

    # -- Parquet ---------------------------------------------------------------------

    def _parquet_source(self) -> IO[bytes]:
        """Parquet needs random access; a gzipped one is unpacked to a temporary file."""
        if not self.compressed:
            return self._raw
        tmp = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - closed by the stack
        try:
            shutil.copyfileobj(self._stream(), tmp, 1 << 20)
        except _READ_ERRORS as exc:
            raise self._error("record 1", f"cannot decompress the file: {exc}") from None
        tmp.seek(0)
        return tmp

    def _parquet_file_batches(self, size: int) -> Iterator[Any]:
        """pyarrow's record batches of the Parquet input (its row count noted for progress);
        a file pyarrow cannot open is our error on record 1."""
        import pyarrow.parquet as pq

        source = self._parquet_source()
        try:
            parquet = pq.ParquetFile(source)
            self._rows_total = parquet.metadata.num_rows
            return iter(parquet.iter_batches(batch_size=size))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            raise self._error("record 1", f"not a readable Parquet file: {exc}") from None

    def _parquet(self) -> Iterator[tuple[str, dict[str, Any]]]:
        batches = self._parquet_file_batches(_PARQUET_BATCH_ROWS)
        number = 0
        while True:
            try:
                batch = next(batches, None)
                rows = [] if batch is None else batch.to_pylist()
            except Exception as exc:  # noqa: BLE001 - pyarrow raises assorted types for bad data
                raise self._error(f"record {number + 1}", f"corrupt Parquet data: {exc}") from None
            if batch is None:
                return
            for row in rows:
                number += 1
                self._rows_done = number
                yield f"record {number}", row


    def _parquet_batches(self, size: int) -> Iterator[SourceBatch]:
        batches = self._parquet_file_batches(size)
        number = 0
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises assorted types for bad data
                raise self._error(f"record {number + 1}", f"corrupt Parquet data: {exc}") from None
            if batch is None:
                return
            if batch.num_rows and number == 0:
                yield SourceBatch(arrow=batch.slice(0, 1), first_record=1)
                batch, number = batch.slice(1), 1
                self._rows_done = number
            if batch.num_rows:
                yield SourceBatch(arrow=batch, first_record=number + 1)
            number += batch.num_rows
            self._rows_done = number


@dataclass(frozen=True)
class CsvRows:
    """Rows of a CSV file: text cells under ``columns``, with each row's line number."""

    columns: list[str]
    rows: list[list[str]]
    lines: list[int]


@dataclass(frozen=True)
class SourceBatch:
    """Up to a batch of a source's records, in one of three shapes (exactly one is set)."""

    records: list[tuple[str, dict[str, Any]]] | None = None
    """``(position, record)`` pairs (JSON lines, Avro)."""
    numbers_: list[int] | None = None
    """The line or record number of each of :attr:`records`, when the reader knows them
    (else :meth:`numbers` reads them back from the positions)."""
    csv: CsvRows | None = None
    arrow: Any = None
    """A pyarrow RecordBatch (Parquet); its row ``i`` is ``record {first_record + i}``."""
    first_record: int = 1

    def __len__(self) -> int:
        if self.records is not None:
            return len(self.records)
        if self.csv is not None:
            return len(self.csv.rows)
        return int(self.arrow.num_rows)

    def position(self, index: int) -> str:
        """Where row ``index`` of the batch is in the file (``"line 17"``, ``"record 17"``)."""
        if self.records is not None:
            return self.records[index][0]
        if self.csv is not None:
            return f"line {self.csv.lines[index]}"
        return f"record {self.first_record + index}"

    def numbers(self) -> list[int]:
        """The line or record number of each row (the number in :meth:`position`)."""
        if self.csv is not None:
            return self.csv.lines
        if self.numbers_ is not None:
            return self.numbers_
        if self.records is not None:
            digits = (position.rpartition(" ")[2] for position, _ in self.records)
            return [int(d) if d.isdigit() else 0 for d in digits]
        return list(range(self.first_record, self.first_record + int(self.arrow.num_rows)))

    def record(self, index: int) -> dict[str, Any]:
        """Row ``index`` as the record iterating the source gives."""
        if self.records is not None:
            return self.records[index][1]
        if self.csv is not None:
            return dict(zip(self.csv.columns, self.csv.rows[index], strict=True))
        row: dict[str, Any] = self.arrow.slice(index, 1).to_pylist()[0]
        return row


def open_records(path: str | os.PathLike[str], fmt: str | None = None) -> RecordSource:
    """Open ``path`` for streaming its records; ``fmt`` overrides the name-based guess.

    Use as a context manager (``with open_records(p) as src: for pos, rec in src: ...``)
    so the file is closed even when a record is rejected half-way.
    """
    return RecordSource(path, fmt)


# -- the rules for one line, shared with readers that split files elsewhere (the Spark push) --


def strip_bom(first_line: bytes) -> bytes:
    """The first line of a text file without its UTF-8 byte order mark, if it has one."""
    return first_line.removeprefix(_UTF8_BOM)


def decode_line(line: bytes) -> str:
    """A line of text as UTF-8; ``ValueError`` saying where it is not."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})") from None


def json_record(line: bytes) -> dict[str, Any]:
    """The JSON object on one line; ``ValueError`` with the reason when it is not one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object on each line, got {_json_kind(obj)}")
    return obj


def csv_columns(header: list[str]) -> list[str]:
    """Column names of a CSV header row, trimmed; ``ValueError`` for an empty or repeated one."""
    columns = [name.strip() for name in header]
    seen: set[str] = set()
    for number, name in enumerate(columns, 1):
        if not name:
            raise ValueError(f"header column {number} has no name (a header row is required)")
        if name in seen:
            raise ValueError(f"column {name!r} appears twice in the header")
        seen.add(name)
    return columns


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, (int, float)):
        return "a number"
    return "null"
