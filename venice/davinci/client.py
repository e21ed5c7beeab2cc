"""``venice.DaVinciClient``: a store held in local LMDB, read with no network hop.

    with venice.DaVinciClient("http://controller:5050", "members", data_dir="/var/lib/app/venice") as dv:
        dv.get(42)             # in-process; None when missing
        dv.batch_get([1, 2])
        dv.version             # the version it serves

The client ingests the store's current version (all partitions, or ``partitions=[...]``)
into ``data_dir/<store>/`` on a background thread with its own event loop, using the
same ingestion library as storage servers (:mod:`venice.ingestion`), follows new
versions and rollbacks (swapped in atomically once complete locally) and, for hybrid
stores, applies real-time writes by the same rules. Reads are plain synchronous calls on
the caller's thread: a key, a partition, one LMDB read, an Avro decode. See
docs/clients.md for restarts and for sharing a directory between processes.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from venice.compute import Computer, ComputeSpec
from venice.davinci.follower import Follower
from venice.davinci.shared import SharedReader
from venice.davinci.view import Closed, Served
from venice.errors import ConflictError, DeadlineExceededError, ReplicaNotReadyError, RequestError
from venice.ingestion import DEFAULT_MAP_SIZE
from venice.ingestion.manifest import is_dir_name

__all__ = ["DEFAULT_START_TIMEOUT_S", "AsyncDaVinciClient", "DaVinciClient"]

DEFAULT_START_TIMEOUT_S = 600.0
LOCK_NAME = "writer.lock"


class DaVinciClient:
    """An embedded, read-only copy of one store. Thread-safe: share one per process."""

    def __init__(
        self,
        controller_url: str,
        store: str,
        *,
        data_dir: str | os.PathLike[str],
        partitions: Sequence[int] | None = None,
        read_only: bool = False,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        if not isinstance(store, str) or not is_dir_name(store):
            raise RequestError(f"store {str(store)[:100]!r} is not a store name")
        if partitions is not None:
            partitions = list(partitions)
            for p in partitions:
                if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                    raise RequestError(f"partitions: {p!r} is not a partition number")
        self.store = store
        self.read_only = read_only
        self.directory = Path(data_dir) / store
        self.start_timeout_s = start_timeout_s
        self._served: Served | None = None
        self._computers: dict[tuple[int, int, ComputeSpec], Computer] = {}
        self._lock_file: IO[bytes] | None = None
        self._closed = False
        if read_only:
            self._follower: Follower | SharedReader = SharedReader(store, self.directory, publish=self._publish)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = _lock(self.directory)
            self._follower = Follower(
                controller_url, store, self.directory, partitions=partitions, publish=self._publish, map_size=map_size
            )
        try:
            self._follower.start()
        except BaseException:
            self.close()
            raise

    def _publish(self, served: Served | None) -> None:
        self._served = served

    # -- state ---------------------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """The version reads are served from; ``None`` before one is complete locally."""
        served = self._served
        return None if served is None else served.version

    def start(self, timeout: float | None = None) -> DaVinciClient:
        """Block until caught up: serving the store's current version with every subscribed
        partition ready (a read-only client: serving what the writer serves). Raises the
        problem when it is one waiting cannot fix (StoreNotFoundError, NoCurrentVersionError,
        a partition the store does not have), DeadlineExceededError after ``timeout``."""
        timeout = self.start_timeout_s if timeout is None else timeout
        follower = self._follower
        with follower.changed:
            follower.changed.wait_for(lambda: follower.error is not None or follower.caught_up, timeout)
            if follower.error is not None:
                raise follower.error
            if not follower.caught_up:
                served = f"serving v{self.version}" if self.version is not None else "nothing served yet"
                raise DeadlineExceededError(f"Da Vinci client of {self.store!r} not caught up after {timeout:.0f} s ({served})")
        return self

    # -- reads -----------------------------------------------------------------------------------
    def _view(self) -> Served:
        served = self._served
        if served is None:
            if self._closed:
                raise ReplicaNotReadyError(f"the Da Vinci client of {self.store!r} is closed")
            raise ReplicaNotReadyError(f"the Da Vinci client of {self.store!r} holds no complete version yet")
        return served

    def get(self, key: Any) -> Any:
        """The value of ``key`` (in the store's newest value schema), ``None`` when missing."""
        while True:
            served = self._view()
            key_bytes = served.key_bytes(key)
            try:
                raw = served.read(served.partition_of(key_bytes), key_bytes)
            except Closed:
                continue  # swapped meanwhile: read the new version
            if raw is None:
                return None
            return served.decode(raw)

    def batch_get(self, keys: Sequence[Any]) -> list[Any]:
        """Values of ``keys`` in their order, ``None`` for each missing one; all from one version."""
        while True:
            served = self._view()
            encoded = [served.key_bytes(k) for k in keys]
            items = [(served.partition_of(kb), kb) for kb in encoded]
            try:
                raws = served.read_many(items)
            except Closed:
                continue
            decode = served.decode
            return [None if raw is None else decode(raw) for raw in raws]

    def compute(
        self, keys: Sequence[Any], *, project: Sequence[str] = (), compute: Sequence[Mapping[str, Any]] = ()
    ) -> list[Any]:
        """Read compute on the local copy: per key (in order; ``None`` when missing) a dict
        of the ``project`` fields and one entry per ``compute`` op (as
        :meth:`venice.Client.compute`; values as :meth:`get` returns them)."""
        spec = ComputeSpec.from_json({"project": list(project), "compute": [dict(op) for op in compute]})
        spec.check_cost(len(keys))
        while True:
            served = self._view()
            encoded = [served.key_bytes(k) for k in keys]
            items = [(served.partition_of(kb), kb) for kb in encoded]
            try:
                raws = served.read_many(items)
            except Closed:
                continue
            computer = self._computer(served, spec)
            return computer.run([None if raw is None else (int.from_bytes(raw[:4], "big"), raw[4:]) for raw in raws])

    def _computer(self, served: Served, spec: ComputeSpec) -> Computer:
        key = (id(served), served.decoder.schema_ids[-1], spec)
        computer = self._computers.get(key)
        if computer is None:
            if len(self._computers) > 64:
                self._computers.clear()
            computer = self._computers[key] = Computer(served.schemas(), spec)
        return computer

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop ingesting and close the files (kept for the next start)."""
        self._closed = True
        self._follower.stop()
        self._served = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def __enter__(self) -> DaVinciClient:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncDaVinciClient:
    """The asyncio face of :class:`DaVinciClient`: reads are local and short, so they run
    inline; only waiting for start-up happens off the event loop."""

    def __init__(self, controller_url: str, store: str, **options: Any) -> None:
        self.sync = DaVinciClient(controller_url, store, **options)

    @property
    def version(self) -> int | None:
        return self.sync.version

    async def start(self, timeout: float | None = None) -> AsyncDaVinciClient:
        await asyncio.to_thread(self.sync.start, timeout)
        return self

    async def get(self, key: Any) -> Any:
        return self.sync.get(key)

    async def batch_get(self, keys: Sequence[Any]) -> list[Any]:
        return self.sync.batch_get(keys)

    async def compute(
        self, keys: Sequence[Any], *, project: Sequence[str] = (), compute: Sequence[Mapping[str, Any]] = ()
    ) -> list[Any]:
        return self.sync.compute(keys, project=project, compute=compute)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncDaVinciClient:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def _lock(directory: Path) -> IO[bytes]:
    """Hold the directory's writer lock (one ingesting process per directory)."""
    handle = open(directory / LOCK_NAME, "ab")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConflictError(
            f"another process (or client) ingests into {directory}: open it with read_only=True, or use another data_dir"
        ) from None
    return handle
