"""LMDB storage of one store-version: one environment, named databases per partition.

Databases in the environment:

* ``p{N}``: partition N's data, key bytes -> stored value (4-byte schema id + Avro bytes);
* ``__checkpoints__``: per partition, its :class:`~venice.ingestion.records.Checkpoint`;
* ``c{N}``: partition N's change log (real-time writes, so hybrid versions only), real-time offset (8-byte
  big-endian) -> :class:`~venice.ingestion.records.Change`, newest ``changelog_size``
  entries kept; the highest offset trimmed is kept in ``__checkpoints__`` under ``t{N}``.

A batch's data, its checkpoint and its change-log entries are written in ONE write
transaction (:meth:`VersionStorage.write_batch`), so a crash never loses or
double-applies a record: after a restart ingestion resumes exactly at the checkpoint.

Another process may open the same files read-only (``readonly=True``): LMDB lets any
number of readers share an environment with its one writer, and readers never block.
Every lmdb exception is re-raised as :class:`StorageError`.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import lmdb

from venice.errors import InternalError
from venice.ingestion.records import Change, Checkpoint, Outcome

__all__ = ["DEFAULT_CHANGELOG_SIZE", "DEFAULT_MAP_SIZE", "PartitionReader", "StorageError", "VersionStorage"]

_CHECKPOINTS = b"__checkpoints__"
_OFFSET = struct.Struct(">Q")
DEFAULT_MAP_SIZE = 1 << 36
"""64 GiB of address space; files grow only as data arrives."""
DEFAULT_CHANGELOG_SIZE = 100_000
"""Change-log entries kept per partition."""


class StorageError(InternalError):
    code = "STORAGE"


@contextmanager
def _lmdb_errors(what: str) -> Iterator[None]:
    try:
        yield
    except lmdb.Error as exc:
        raise StorageError(f"LMDB {what} failed: {exc}") from exc


Reader = Callable[[bytes], bytes | None]


def _appendable(txn: lmdb.Transaction, db: lmdb._Database, writes: list[tuple[bytes, bytes | None]]) -> bool:
    """Whether ``writes`` are all puts with keys strictly ascending (LMDB's order: bytewise,
    a prefix first, as Python compares bytes) and above every key ``db`` holds: then
    ``putmulti(append=True)`` stores exactly what the puts one by one would."""
    previous = b""
    first = True
    for key, value in writes:
        if value is None or (not first and key <= previous):
            return False
        previous, first = key, False
    cursor = txn.cursor(db=db)
    return not cursor.last() or bytes(cursor.key()) < writes[0][0]


class PartitionReader:
    """See :meth:`VersionStorage.reader`. Call it with key bytes: the stored value or ``None``."""

    __slots__ = ("_db", "_fresh", "_storage", "_txn", "seen")

    def __init__(self, storage: VersionStorage, db: lmdb._Database) -> None:
        self._storage = storage
        self._db = db
        # Read-only (another process writes): no commit is seen here, so every read takes
        # a new snapshot and none is kept between reads.
        self._fresh = storage.readonly
        self._txn: lmdb.Transaction | None = None
        self.seen = -1
        """The storage's :attr:`~VersionStorage.generation` the snapshot is at least as new as."""

    def __call__(self, key: bytes) -> bytes | None:
        if self._fresh:
            try:
                with self._storage.env.begin(db=self._db, buffers=False) as fresh:
                    return fresh.get(key)
            except lmdb.Error as exc:
                raise StorageError(f"LMDB read failed: {exc}") from exc
        txn = self._txn
        try:
            generation = self._storage.generation
            if txn is None or self.seen != generation:
                # py-lmdb has no reset/renew: a fresh snapshot is a new transaction. The
                # generation is read first: a commit racing the begin only makes it renew again.
                if txn is not None:
                    txn.abort()
                self.seen = generation
                txn = self._txn = self._storage.env.begin(db=self._db, buffers=False)
            return cast("bytes | None", txn.get(key))
        except lmdb.Error as exc:
            self.release()
            raise StorageError(f"LMDB read failed: {exc}") from exc

    def release(self) -> None:
        """End the snapshot; the next read begins a new one."""
        txn, self._txn = self._txn, None
        self.seen = -1
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass  # the environment is closing: the transaction is gone with it


def _trim_key(partition: int) -> bytes:
    """Key (in ``__checkpoints__``) of the highest change-log offset trimmed from a partition."""
    return b"t%d" % partition


class VersionStorage:
    """The LMDB environment of one store-version.

    Writes come from one thread at a time (the host's writer thread); reads from any
    thread or, with ``readonly=True``, any process.
    """

    def __init__(
        self,
        path: Path,
        partitions_total: int,
        partitions: Iterable[int],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        changelog_size: int = DEFAULT_CHANGELOG_SIZE,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.partitions_total = partitions_total
        self.readonly = readonly
        self.changelog_size = changelog_size
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        with _lmdb_errors(f"open {path}"):
            if readonly:
                self.env = lmdb.open(
                    str(path), readonly=True, create=False, max_dbs=2 * partitions_total + 2, readahead=False
                )
            else:
                # sync=False: a process crash loses nothing (the page cache survives it); an OS
                # crash may lose the last transactions but never breaks the data/checkpoint pairing.
                self.env = lmdb.open(
                    str(path), map_size=map_size, max_dbs=2 * partitions_total + 2, sync=False, readahead=False
                )
            self._checkpoints = self.env.open_db(_CHECKPOINTS, create=not readonly)
        self._dbs: dict[int, lmdb._Database] = {}
        self._logs: dict[int, lmdb._Database] = {}
        self.appended_batches = 0
        """Batches stored by appending (keys in order past the last one), not key by key."""
        self.generation = 0
        """Write transactions committed through this object: a :class:`Reader` whose snapshot
        is older renews it before reading."""
        self._readers: list[PartitionReader] = []
        self._reader_of: dict[int, PartitionReader] = {}
        # Reads served from this environment, counted by the server that serves them: an
        # attribute increment on an object the read already holds is the cheapest count
        # there is (its metrics read them at scrape time).
        self.hits = 0
        self.misses = 0
        self.batches = 0
        self.batch_keys = 0
        # Opened up front: opening a named database inside a read transaction is unsafe.
        self.open_partitions(partitions)

    # -- partitions ----------------------------------------------------------------------
    def open_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            if partition in self._dbs:
                continue
            with _lmdb_errors(f"open partition {partition}"):
                self._dbs[partition] = self.env.open_db(b"p%d" % partition, create=not self.readonly)
                try:
                    self._logs[partition] = self.env.open_db(b"c%d" % partition, create=not self.readonly)
                except lmdb.NotFoundError:
                    pass  # read-only, and made before change logs existed

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._dbs)

    def _db(self, partition: int) -> lmdb._Database:
        db = self._dbs.get(partition)
        if db is None:
            raise StorageError(f"partition {partition} is not open in {self.path.name}")
        return db

    def drop_partition(self, partition: int) -> None:
        """Delete a partition's data, change log and checkpoint (it moved to another server)."""
        db = self._db(partition)
        with _lmdb_errors("drop partition"), self.env.begin(write=True) as txn:
            txn.drop(db, delete=False)
            log = self._logs.get(partition)
            if log is not None:
                txn.drop(log, delete=False)
            txn.delete(b"%d" % partition, db=self._checkpoints)
            txn.delete(_trim_key(partition), db=self._checkpoints)
        self.generation += 1

    # -- writes ----------------------------------------------------------------------------
    def write_batch(self, partition: int, decide: Callable[[Reader], Outcome]) -> Outcome:
        """Run ``decide`` inside a write transaction (its reader sees the data as of the
        transaction), then write its data, checkpoint and change-log entries in that same
        transaction. Nothing is written when ``decide`` raises."""
        db = self._db(partition)
        with _lmdb_errors("write"), self.env.begin(write=True) as txn:
            outcome = decide(lambda key: txn.get(key, db=db))
            if outcome.clear_changes:
                log = self._logs.get(partition)
                if log is not None:
                    txn.drop(log, delete=False)
                # The old epoch's trim mark would make every position of the new one look expired.
                txn.delete(_trim_key(partition), db=self._checkpoints)
            writes = outcome.writes
            if len(writes) > 1 and _appendable(txn, db, writes):
                # Keys in order past the last stored one (a sorted push into a fresh version):
                # LMDB appends them to the rightmost page instead of searching the tree per key.
                puts = cast("list[tuple[bytes, bytes]]", writes)  # _appendable: no deletes among them
                consumed, added = txn.cursor(db=db).putmulti(puts, append=True)
                if added != len(puts):  # cannot happen after _appendable; never store half a batch
                    raise StorageError(f"LMDB append stored {added} of {len(puts)} records (consumed {consumed})")
                self.appended_batches += 1
            else:
                for key, value in writes:
                    if value is None:
                        txn.delete(key, db=db)
                    else:
                        txn.put(key, value, db=db)
            if outcome.changes:
                self._log_changes(txn, partition, outcome.changes)
            txn.put(b"%d" % partition, outcome.checkpoint.to_bytes(), db=self._checkpoints)
        self.generation += 1  # after the commit, before the caller learns of it: readers renew
        return outcome

    def apply(self, partition: int, writes: Iterable[tuple[bytes, bytes | None]], checkpoint: Checkpoint) -> None:
        """Apply puts (stored values) and deletes (``None``) and the checkpoint, atomically."""
        self.write_batch(partition, lambda _read: Outcome(checkpoint, list(writes)))

    def _log_changes(self, txn: lmdb.Transaction, partition: int, changes: list[Change]) -> None:
        log = self._logs.get(partition)
        if log is None:
            raise StorageError(f"{self.path.name} partition {partition} has no change log")
        for change in changes:
            txn.put(_OFFSET.pack(change.offset), change.encode(), db=log)
        excess = int(txn.stat(log)["entries"]) - self.changelog_size
        if excess > 0:
            cursor = txn.cursor(db=log)
            cursor.first()
            trimmed = b""
            for _ in range(excess):
                trimmed = bytes(cursor.key())
                cursor.delete()
            # Remembered so a reader asking for a trimmed position is told, never given a gap.
            txn.put(_trim_key(partition), trimmed, db=self._checkpoints)

    # -- reads -----------------------------------------------------------------------------
    def checkpoint(self, partition: int) -> Checkpoint:
        with _lmdb_errors("read checkpoint"), self.env.begin(db=self._checkpoints) as txn:
            return Checkpoint.from_bytes(txn.get(b"%d" % partition))

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._db(partition)
        with _lmdb_errors("read"), self.env.begin(db=db, buffers=False) as txn:
            return txn.get(key)

    def get_many(self, items: Iterable[tuple[int, bytes]]) -> list[bytes | None]:
        """Values for ``(partition, key)`` pairs, read in one snapshot."""
        with _lmdb_errors("read"), self.env.begin(buffers=False) as txn:
            return [txn.get(key, db=self._db(partition)) for partition, key in items]

    def getter(self, partition: int) -> Callable[[bytes], bytes | None]:
        """A function reading one key of ``partition``: :meth:`get` without its per-call
        lookups (an embedded client's hot path). The caller keeps it from running once
        the storage is closed."""
        db = self._db(partition)
        begin = self.env.begin

        def get(key: bytes) -> bytes | None:
            try:
                txn = begin(db=db, buffers=False)
                try:
                    return txn.get(key)
                finally:
                    txn.abort()
            except lmdb.Error as exc:
                raise StorageError(f"LMDB read failed: {exc}") from exc

        return get

    def reader(self, partition: int) -> PartitionReader:
        """The reader of one partition (the same object each call), for ONE thread (the
        server's event loop), keeping one
        read transaction open and renewing it only when a write committed since its
        snapshot (:attr:`generation`): the storage server's hot path, without a
        transaction begun and ended per read. On a read-only storage (another process
        writes; commits are not seen here) each read takes a fresh snapshot."""
        reader = self._reader_of.get(partition)
        if reader is None:  # one per partition: each holds an LMDB reader slot (126 by default)
            reader = self._reader_of[partition] = PartitionReader(self, self._db(partition))
            self._readers.append(reader)
        return reader

    def release_stale_readers(self) -> None:
        """End the snapshots of readers that fell behind a commit (call from their thread):
        a reader read no more since, and its old snapshot would keep LMDB from reusing
        the pages later commits freed."""
        for reader in self._readers:
            if reader.seen != self.generation:
                reader.release()

    def changes(self, partition: int, after: int | None = None, limit: int = 1000) -> list[Change]:
        """Up to ``limit`` change-log entries with offsets above ``after`` (all kept ones
        when ``None``), oldest first."""
        log = self._logs.get(partition)
        if log is None or limit <= 0:
            return []
        out: list[Change] = []
        with _lmdb_errors("read change log"), self.env.begin(db=log, buffers=False) as txn:
            cursor = txn.cursor()
            found = cursor.first() if after is None else cursor.set_range(_OFFSET.pack(after + 1))
            while found and len(out) < limit:
                out.append(Change.decode(_OFFSET.unpack(cursor.key())[0], cursor.value()))
                found = cursor.next()
        return out

    def changelog_trimmed(self, partition: int) -> int | None:
        """The highest offset trimmed from ``partition``'s change log (``None``: none yet):
        a reader needing an entry at or below it has lost entries."""
        with _lmdb_errors("read change log"), self.env.begin(db=self._checkpoints, buffers=False) as txn:
            raw = txn.get(_trim_key(partition))
        return None if raw is None else int(_OFFSET.unpack(raw)[0])

    def count(self, partition: int) -> int:
        with _lmdb_errors("stat"), self.env.begin() as txn:
            return int(txn.stat(self._db(partition))["entries"])

    def size_bytes(self) -> int:
        """Bytes of the environment's pages in use (what the data file holds, free pages
        included; LMDB never shrinks a file, but reuses its free pages)."""
        with _lmdb_errors("stat"):
            return int((self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"])

    def dump(self) -> dict[bytes, list[tuple[bytes, bytes]]]:
        """Every named database and its contents (for tests comparing replicas)."""
        out: dict[bytes, list[tuple[bytes, bytes]]] = {}
        with _lmdb_errors("dump"):
            with self.env.begin(buffers=False) as txn:
                names = [key for key, _ in txn.cursor()]  # the main database lists the named ones
            dbs = {name: self.env.open_db(name, create=False) for name in names}
            with self.env.begin(buffers=False) as txn:
                for name, db in dbs.items():
                    out[name] = list(txn.cursor(db=db))
        return out

    # -- lifecycle ---------------------------------------------------------------------------
    def sync(self) -> None:
        with _lmdb_errors("sync"):
            self.env.sync(True)

    def close(self) -> None:
        for reader in self._readers:
            reader.release()
        self._readers.clear()
        self._reader_of.clear()
        self.env.close()

    def destroy(self) -> None:
        """Close and remove the files."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
