"""The store-versions one process holds in LMDB, kept fed from their topics.

:class:`IngestionHost` is what a storage server and an embedded client both run. Given
the desired set of :class:`~venice.protocol.Assignment` (:meth:`IngestionHost.reconcile`)
it opens new store-versions and starts ingesting them, moves partitions in and out,
and drops versions no longer wanted (files removed); at the first reconcile it removes
version directories nobody asked for (left from before a restart). It answers
:meth:`IngestionHost.ready` for reads, :meth:`IngestionHost.reports` for the controller,
calls ``on_change`` whenever a replica's state changes, and publishes the hosting
manifest (:mod:`venice.ingestion.manifest`) so other processes can read the same files.

No HTTP inside: the pub-sub and a schema source (``schema_refresh(store, incarnation)``
-> every value schema of the store, by id) are given to it.

Threads: everything here runs on one event loop, except LMDB writes and environment
set-up, which run on one writer thread (:class:`~venice.ingestion.writer.Writer`).
A storage returned by :meth:`ready` stays usable until the next ``await`` on that loop
(reads are synchronous and short); environments are closed on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venice.errors import ReplicaNotReadyError, VeniceError
from venice.ingestion.manifest import MANIFEST_NAME, VERSIONS_DIR, HostedEntry, is_dir_name, render_manifest, write_manifest
from venice.ingestion.schemas import StoreCodecs
from venice.ingestion.storage import DEFAULT_CHANGELOG_SIZE, DEFAULT_MAP_SIZE, VersionStorage
from venice.ingestion.version import StoreSchemas, VersionIngestion
from venice.ingestion.writer import Writer
from venice.protocol import Assignment, ReplicaReport
from venice.pubsub import PubSub

__all__ = ["HostedVersion", "IngestionHost", "SchemaRefresh", "version_dir_name"]

log = logging.getLogger("venice.ingestion")

SchemaRefresh = Callable[[str, str], Awaitable[Mapping[int, Any]]]
"""``(store, incarnation)`` -> every value schema the store has now, by id. Raises a
:class:`~venice.errors.VeniceError` when it cannot say (it is asked again later)."""

REFRESH_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)

HostKey = tuple[str, int, str]
"""``(store, version, incarnation)``."""


def version_dir_name(topic: str, incarnation: str) -> str:
    """The directory of a store-version's LMDB: the topic, then the store incarnation, so
    data of a deleted store is never taken for a new store of the same name."""
    return f"{topic}-{incarnation}" if incarnation else topic


@dataclass
class HostedVersion:
    assignment: Assignment
    storage: VersionStorage
    ingestion: VersionIngestion

    @property
    def key(self) -> HostKey:
        a = self.assignment
        return (a.store, a.version, a.incarnation)


@dataclass
class _SchemaRequests:
    store: StoreSchemas
    waiting: set[int]
    task: asyncio.Task[None] | None = None


class IngestionHost:
    """Hosts store-versions in ``data_dir/versions``; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        *,
        schema_refresh: SchemaRefresh,
        pubsub: PubSub | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        changelog_size: int = DEFAULT_CHANGELOG_SIZE,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.versions_dir = self.data_dir / VERSIONS_DIR
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.pubsub = pubsub
        self.map_size = map_size
        self.changelog_size = changelog_size
        self.on_change = on_change
        self._schema_refresh = schema_refresh
        self.hosted: dict[HostKey, HostedVersion] = {}
        self._ready: dict[tuple[str, int, int], VersionStorage] = {}
        self._schemas: dict[tuple[str, str], _SchemaRequests] = {}
        self._writer = Writer()
        self._first_reconcile = True
        self._published: bytes | None = None
        self._publishing = False
        self._publisher: asyncio.Task[None] | None = None
        self._closing = False

    # -- reads ---------------------------------------------------------------------------
    def ready(self, store: str, version: int, partition: int) -> VersionStorage:
        """The storage holding that partition, when it is READY here; else ReplicaNotReadyError."""
        storage = self._ready.get((store, version, partition))
        if storage is None:
            raise ReplicaNotReadyError(f"{store} v{version} partition {partition} is not ready here")
        return storage

    @property
    def ready_set(self) -> object:
        """The current ready set, as an object replaced (never changed in place) whenever
        readiness changes: a reader cache keyed on it is right while it is the same object."""
        return self._ready

    def release_stale_readers(self) -> None:
        """:meth:`VersionStorage.release_stale_readers` of every hosted version (loop thread)."""
        for hosted in self.hosted.values():
            hosted.storage.release_stale_readers()

    def reports(self) -> list[ReplicaReport]:
        return [r for hosted in self.hosted.values() for r in hosted.ingestion.reports()]

    # -- the desired set -------------------------------------------------------------------
    async def reconcile(self, assignments: Iterable[Assignment]) -> None:
        """Host exactly ``assignments``. One assignment that cannot be hosted is logged and
        retried at the next call; it does not stop the others."""
        wanted: dict[HostKey, Assignment] = {}
        for assignment in assignments:
            if not (is_dir_name(assignment.topic) and is_dir_name(version_dir_name(assignment.topic, assignment.incarnation))):
                log.error("ignoring an assignment with an unusable topic or incarnation: %r", assignment.topic[:100])
                continue
            wanted[(assignment.store, assignment.version, assignment.incarnation)] = assignment
        for key in [k for k in self.hosted if k not in wanted]:
            await self._drop(key)
        for key, assignment in wanted.items():
            hosted = self.hosted.get(key)
            try:
                self._learn_schemas(assignment)
                if hosted is None:
                    await self._host(assignment)
                else:
                    if set(hosted.ingestion.partitions) != set(assignment.partitions):
                        await hosted.ingestion.set_partitions(assignment.partitions)
                        log.info(
                            "now hosting %s partitions %s", assignment.topic, list(assignment.partitions),
                            extra={"event": "partitions_changed", "store": assignment.store, "version": assignment.version},
                        )
                    hosted.assignment = assignment
                    hosted.ingestion.update(assignment)
            except VeniceError as exc:
                log.error("cannot host %s: %s", assignment.topic, exc)
        if self._first_reconcile:
            self._first_reconcile = False
            await self._remove_orphans({version_dir_name(a.topic, a.incarnation) for a in wanted.values()})
        self._refresh()

    async def _host(self, assignment: Assignment) -> None:
        if self.pubsub is None:
            raise VeniceError("no pub-sub to ingest from")
        path = self.versions_dir / version_dir_name(assignment.topic, assignment.incarnation)
        storage = await self._writer.run(
            VersionStorage, path, assignment.partitions_total, (), map_size=self.map_size, changelog_size=self.changelog_size
        )
        schemas = self._schema_requests(assignment).store
        ingestion = VersionIngestion(
            assignment,
            storage,
            self.pubsub,
            self._writer,
            schemas,
            need_schema=functools.partial(self._need_schema, assignment),
            on_change=lambda _ingestion: self._refresh(notify=True),
        )
        try:
            await ingestion.start()
        except BaseException:
            await ingestion.stop()
            storage.close()
            raise
        self.hosted[(assignment.store, assignment.version, assignment.incarnation)] = HostedVersion(assignment, storage, ingestion)
        log.info("hosting %s partitions %s", assignment.topic, list(assignment.partitions))

    async def _drop(self, key: HostKey) -> None:
        hosted = self.hosted.pop(key)
        self._refresh()  # out of the ready set and the manifest before its files go
        await hosted.ingestion.stop()
        hosted.storage.close()  # on the loop thread: no read of it is running
        await self._writer.run(shutil.rmtree, hosted.storage.path, True)
        log.info("dropped %s v%d", key[0], key[1])
        if not any(k[0] == key[0] and k[2] == key[2] for k in self.hosted):
            requests = self._schemas.pop((key[0], key[2]), None)
            if requests is not None and requests.task is not None:
                requests.task.cancel()

    async def _remove_orphans(self, keep: set[str]) -> None:
        """Remove version directories left from before a restart that are no longer wanted."""
        for path in list(self.versions_dir.iterdir()):
            if path.name not in keep:
                await self._writer.run(shutil.rmtree, path, True)
                log.info("removed unassigned data %s", path.name)

    # -- schemas -----------------------------------------------------------------------------
    def _schema_requests(self, assignment: Assignment) -> _SchemaRequests:
        key = (assignment.store, assignment.incarnation)
        requests = self._schemas.get(key)
        if requests is None:
            requests = self._schemas[key] = _SchemaRequests(StoreSchemas(StoreCodecs(assignment.value_schemas, assignment.key_schema)), set())
        return requests

    def _learn_schemas(self, assignment: Assignment) -> None:
        if self._schema_requests(assignment).store.learn(dict(assignment.value_schemas)):
            self._wake_store(assignment.store, assignment.incarnation)

    def _wake_store(self, store: str, incarnation: str) -> None:
        for hosted in self.hosted.values():
            if hosted.assignment.store == store and hosted.assignment.incarnation == incarnation:
                hosted.ingestion.wake()

    def _need_schema(self, assignment: Assignment, schema_id: int) -> None:
        requests = self._schema_requests(assignment)
        requests.waiting.add(schema_id)
        if requests.task is None or requests.task.done():
            requests.task = asyncio.create_task(
                self._ask_schemas(assignment.store, assignment.incarnation, requests), name=f"schemas-{assignment.store}"
            )

    async def _ask_schemas(self, store: str, incarnation: str, requests: _SchemaRequests) -> None:
        """Ask the schema source until it answers; then every id asked about is either
        known or confirmed missing, and the paused partitions resume."""
        attempt = 0
        while requests.waiting and not self._closing:
            asked = set(requests.waiting)
            try:
                answer = await self._schema_refresh(store, incarnation)
            except VeniceError as exc:
                delay = REFRESH_BACKOFF_S[min(attempt, len(REFRESH_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("%s: cannot refresh value schemas (%s); asking again in %.1f s", store, exc, delay)
                await asyncio.sleep(delay)
                continue
            requests.store.learn(dict(answer))
            gone = {i for i in asked if i not in requests.store.schemas}
            if gone:
                log.warning("%s: value schema id(s) %s do not exist; records naming them are skipped", store, sorted(gone))
            requests.store.missing |= gone
            requests.waiting -= asked
            self._wake_store(store, incarnation)

    # -- state changes ---------------------------------------------------------------------------
    def _refresh(self, *, notify: bool = False) -> None:
        """Recompute the ready set and publish the manifest if it changed; tell the owner
        when something changed (or ``notify``: a replica's state did)."""
        ready: dict[tuple[str, int, int], VersionStorage] = {}
        entries: list[HostedEntry] = []
        for hosted in self.hosted.values():
            a = hosted.assignment
            partitions = hosted.ingestion.ready_partitions()
            for partition in partitions:
                ready[(a.store, a.version, partition)] = hosted.storage
            entries.append(
                HostedEntry(
                    a.store, a.version, a.incarnation, a.topic, hosted.storage.path.name, a.partitions_total,
                    tuple(partitions), a.key_schema, hosted.ingestion.schemas.schemas.schemas(),
                )
            )
        self._ready = ready
        content = render_manifest(sorted(entries, key=lambda e: (e.store, e.version)))
        if content != self._published:
            self._published = content
            notify = True
            if not self._publishing:
                self._publishing = True
                self._publisher = asyncio.get_running_loop().create_task(self._publish())
        if notify:
            self.on_change()

    async def _publish(self) -> None:
        """Write the newest manifest on the writer thread (after the writes it describes)."""
        try:
            written: bytes | None = None
            while written != self._published and self._published is not None:
                written = self._published
                await self._writer.run(write_manifest, self.data_dir, written)
        except OSError as exc:
            log.error("cannot write %s: %s", self.data_dir / MANIFEST_NAME, exc)
        finally:
            self._publishing = False

    async def close(self) -> None:
        """Stop ingesting and close every environment (files are kept)."""
        self._closing = True
        for requests in self._schemas.values():
            if requests.task is not None:
                requests.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await requests.task
        for hosted in list(self.hosted.values()):
            await hosted.ingestion.stop()
        if self._publisher is not None:
            await self._publisher  # the manifest on disk matches the last state
        self._ready = {}
        for hosted in self.hosted.values():
            hosted.storage.close()
        self.hosted.clear()
        self._writer.close()
