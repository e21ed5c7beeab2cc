"""The store-version an embedded client serves reads from, and the reads themselves.

A :class:`Served` is immutable except for being closed: the client swaps a whole new
one in (one attribute assignment, atomic for readers on any thread) and closes the old
one. Reads run on the application's threads, while ingestion runs on the client's
background thread, which also closes LMDB environments when it drops a version. So each
read holds the view's lock around its LMDB transaction and checks ``closed`` first: the
background thread closes a view under the same lock before any environment behind it
can go, and a reader that finds its view closed reads again from the new one. The lock
is held for one LMDB read (about a microsecond), never across a decode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from venice.errors import NotSubscribedError, UnknownSchemaError
from venice.evolution import ValueDecoder
from venice.ingestion.storage import VersionStorage
from venice.partitioner import partition_for
from venice.schema import AvroCodec

__all__ = ["Closed", "Served", "key_datum"]


class Closed(Exception):
    """The view was closed (swapped out) before this read began: read from the new one."""


def key_datum(codec: AvroCodec, key: Any) -> Any:
    """A ``str`` key of a ``bytes`` key schema means its UTF-8 (as in the router)."""
    if codec.type_name == "bytes" and isinstance(key, str):
        return key.encode()
    return key


class Served:
    """One store-version's subscribed partitions, as one embedded client reads them."""

    __slots__ = (
        "_getters",
        "_schemas",
        "_storages",
        "closed",
        "decoder",
        "incarnation",
        "key_codec",
        "lock",
        "partitions",
        "partitions_total",
        "store",
        "version",
    )

    def __init__(
        self,
        store: str,
        version: int,
        incarnation: str,
        partitions_total: int,
        storages: Mapping[int, VersionStorage],
        key_schema: Any,
        schemas: Callable[[], Mapping[int, Any]],
    ) -> None:
        self.store, self.version, self.incarnation = store, version, incarnation
        self.partitions_total = partitions_total
        self.partitions = frozenset(storages)
        self._storages = dict(storages)
        self._getters = {p: s.getter(p) for p, s in storages.items()}
        self.key_codec = AvroCodec(key_schema, kind="key")
        self._schemas = schemas
        """Where the newest schema set comes from when a value names an id not known yet."""
        self.decoder = ValueDecoder(schemas())
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        """No read runs on this view once this returns, and none starts after."""
        with self.lock:
            self.closed = True

    # -- reads (any thread) ----------------------------------------------------------------
    def key_bytes(self, key: Any) -> bytes:
        return self.key_codec.encode(key_datum(self.key_codec, key))

    def partition_of(self, key_bytes: bytes) -> int:
        partition = partition_for(key_bytes, self.partitions_total)
        if partition not in self.partitions:
            raise NotSubscribedError(
                f"the key is in partition {partition} of store {self.store!r}, which this client does not hold "
                f"(it holds {sorted(self.partitions)})"
            )
        return partition

    def read(self, partition: int, key_bytes: bytes) -> bytes | None:
        """The stored value (schema id + Avro), ``None`` when missing; :class:`Closed` when
        the view was closed meanwhile."""
        get = self._getters[partition]
        with self.lock:
            if self.closed:
                raise Closed
            return get(key_bytes)

    def read_many(self, items: Sequence[tuple[int, bytes]]) -> list[bytes | None]:
        """Stored values of ``(partition, key bytes)`` pairs from one snapshot per
        environment; :class:`Closed` when the view was closed meanwhile."""
        with self.lock:
            if self.closed:
                raise Closed
            storages = {id(s): s for s in self._storages.values()}
            if len(storages) == 1:
                return next(iter(storages.values())).get_many(items)
            getters = self._getters
            return [getters[p](k) for p, k in items]

    def schemas(self) -> Mapping[int, Any]:
        """The newest value schemas known for this version."""
        return self._schemas()

    def decode(self, raw: bytes) -> Any:
        """The newest-schema datum of a stored value."""
        schema_id = int.from_bytes(raw[:4], "big")
        try:
            return self.decoder.decode(schema_id, raw[4:])
        except UnknownSchemaError:
            # Ingestion learnt a schema after this view was built: take the newest set.
            self.decoder = ValueDecoder(self._schemas())
            return self.decoder.decode(schema_id, raw[4:])
