"""LMDB storage of one store-version: one environment, one named database per partition.

Each partition's checkpoint (next offset to read, end-of-push seen, data records applied)
lives in the ``__checkpoints__`` database and is written in the same write transaction as
the records it covers, so a crash never loses or double-applies a record: after a restart
ingestion resumes exactly at the checkpoint's offset.

Stored value layout: 4-byte big-endian value schema id, then the Avro value bytes.
Every lmdb exception is re-raised as a :class:`venice.errors.VeniceError`.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb
import orjson

from venice.errors import InternalError

__all__ = ["Checkpoint", "StorageError", "VersionStorage"]

_SCHEMA_ID = struct.Struct(">I")
_CHECKPOINTS = b"__checkpoints__"
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; files grow only as data arrives


class StorageError(InternalError):
    code = "STORAGE"


@dataclass(frozen=True)
class Checkpoint:
    offset: int = 0
    """Next topic offset to apply."""
    end_of_push: bool = False
    start_of_push: bool = False
    records: int = 0
    """Data records (puts and deletes) applied since start-of-push."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {"offset": self.offset, "eop": self.end_of_push, "sop": self.start_of_push, "records": self.records}
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Checkpoint:
        if raw is None:
            return cls()
        data = orjson.loads(raw)
        return cls(int(data["offset"]), bool(data["eop"]), bool(data.get("sop")), int(data["records"]))


@contextmanager
def _lmdb_errors(what: str) -> Iterator[None]:
    try:
        yield
    except lmdb.Error as exc:
        raise StorageError(f"LMDB {what} failed: {exc}") from exc


def encode_stored(schema_id: int, value: bytes) -> bytes:
    return _SCHEMA_ID.pack(schema_id) + value


def decode_stored(raw: bytes) -> tuple[int, bytes]:
    return _SCHEMA_ID.unpack_from(raw)[0], raw[4:]


class VersionStorage:
    """The LMDB environment of one store-version on this server."""

    def __init__(
        self, path: Path, partitions_total: int, partitions: Iterable[int], *, map_size: int = DEFAULT_MAP_SIZE
    ) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        with _lmdb_errors(f"open {path}"):
            # sync=False: a process crash loses nothing (the page cache survives it); an OS
            # crash may lose the last transactions but never breaks the data/checkpoint pairing.
            self.env = lmdb.open(
                str(path), map_size=map_size, max_dbs=partitions_total + 2, sync=False, readahead=False
            )
            self._checkpoints = self.env.open_db(_CHECKPOINTS)
        self._dbs: dict[int, lmdb._Database] = {}
        # Opened up front: opening a named database inside a read transaction is unsafe.
        for partition in partitions:
            self._db(partition)

    def _db(self, partition: int) -> lmdb._Database:
        db = self._dbs.get(partition)
        if db is None:
            with _lmdb_errors("open database"):
                db = self._dbs[partition] = self.env.open_db(b"p%d" % partition)
        return db

    def open_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._db(partition)

    def drop_partition(self, partition: int) -> None:
        """Delete a partition's data and checkpoint (it moved to another server)."""
        db = self._db(partition)
        with _lmdb_errors("drop partition"), self.env.begin(write=True) as txn:
            txn.drop(db, delete=False)
            txn.delete(b"%d" % partition, db=self._checkpoints)

    def checkpoint(self, partition: int) -> Checkpoint:
        with _lmdb_errors("read checkpoint"), self.env.begin(db=self._checkpoints) as txn:
            return Checkpoint.from_bytes(txn.get(b"%d" % partition))

    def apply(
        self, partition: int, writes: Iterable[tuple[bytes, bytes | None]], checkpoint: Checkpoint
    ) -> None:
        """Apply puts (value bytes as stored) and deletes (``None``) and the checkpoint, atomically."""
        db = self._db(partition)
        with _lmdb_errors("write"), self.env.begin(write=True) as txn:
            for key, value in writes:
                if value is None:
                    txn.delete(key, db=db)
                else:
                    txn.put(key, value, db=db)
            txn.put(b"%d" % partition, checkpoint.to_bytes(), db=self._checkpoints)

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._db(partition)
        with _lmdb_errors("read"), self.env.begin(db=db, buffers=False) as txn:
            return txn.get(key)

    def get_many(self, items: Iterable[tuple[int, bytes]]) -> list[bytes | None]:
        """Values for ``(partition, key)`` pairs, read in one snapshot."""
        with _lmdb_errors("read"), self.env.begin(buffers=False) as txn:
            return [txn.get(key, db=self._db(partition)) for partition, key in items]

    def count(self, partition: int) -> int:
        with _lmdb_errors("stat"), self.env.begin() as txn:
            return int(txn.stat(self._db(partition))["entries"])

    def sync(self) -> None:
        with _lmdb_errors("sync"):
            self.env.sync(True)

    def close(self) -> None:
        self.env.close()

    def destroy(self) -> None:
        """Close and remove the files."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
