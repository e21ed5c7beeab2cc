"""The storage server's moving parts: membership, assignment, hosted versions.

:class:`StorageService` heartbeats to the controller with the state of every replica,
and reconciles what it hosts with the assignment in the answer: it opens LMDB and starts
ingestion for new store-versions, and drops (files removed) what is no longer assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.ingestion import VersionIngestion
from server.storage import DEFAULT_MAP_SIZE, VersionStorage
from venice.errors import ReplicaNotReadyError, VeniceError
from venice.pubsub import PubSub, connect

__all__ = ["HostedVersion", "ServerConfig", "StorageService"]

log = logging.getLogger("venice.server")


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    controller_url: str
    host: str = "127.0.0.1"
    port: int = 7001
    server_id: str | None = None
    """Stable identity; by default generated once and kept in the data dir."""
    pubsub_url: str | None = None
    """Override the pub-sub URL the controller hands out (e.g. another network path)."""
    heartbeat_interval_s: float = 0.5
    drain_grace_s: float = 1.0
    """On SIGTERM: how long to keep answering reads after the controller stopped
    routing to this server (routers long-poll, so they move within milliseconds)."""
    lmdb_map_size: int = DEFAULT_MAP_SIZE
    """Largest size one store-version's LMDB may grow to; writes beyond it fail."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class HostedVersion:
    store: str
    version: int
    storage: VersionStorage
    ingestion: VersionIngestion
    task: asyncio.Task[None]
    incarnation: str = ""
    """The store's incarnation (see controller/state.py): part of the key and file name, so
    a copy of a deleted store of the same name is never resumed or served."""


HostedKey = tuple[str, int, str]
"""(store, version, incarnation)"""


def _load_server_id(data_dir: Path, configured: str | None) -> str:
    path = data_dir / "server-id"
    if configured:
        path.write_text(configured)
        return configured
    if path.exists():
        return path.read_text().strip()
    server_id = f"server-{uuid.uuid4().hex[:8]}"
    path.write_text(server_id)
    return server_id


class StorageService:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.versions_dir = config.data_dir / "versions"
        self.versions_dir.mkdir(exist_ok=True)
        self.server_id = _load_server_id(config.data_dir, config.server_id)
        self.hosted: dict[HostedKey, HostedVersion] = {}
        self._readable: dict[tuple[str, int], HostedVersion] = {}
        """The hosted copy reads of (store, version) go to."""
        self.pubsub: PubSub | None = None
        self._wake = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=5.0)
        self._cleaned_orphans = False
        self.draining = False
        self._acked_drain = asyncio.Event()

    # -- reads ---------------------------------------------------------------------
    def ready_version(self, store: str, version: int, partition: int) -> HostedVersion:
        hosted = self._readable.get((store, version))
        if hosted is None or not hosted.ingestion.is_ready(partition):
            raise ReplicaNotReadyError(
                f"{self.server_id} does not serve {store} v{version} partition {partition}"
            )
        return hosted

    # -- membership ----------------------------------------------------------------
    def replica_report(self) -> list[dict[str, Any]]:
        return [
            {
                "store": h.store,
                "incarnation": h.incarnation,
                "version": h.version,
                "partition": p,
                "status": s.status,
                "offset": s.offset,
                "records": s.records,
                "reason": s.reason,
            }
            for h in self.hosted.values()
            for p, s in h.ingestion.partitions.items()
        ]

    def poke(self) -> None:
        """Heartbeat now: a replica's state changed."""
        self._wake.set()

    async def heartbeat_loop(self) -> None:
        url = f"{self.config.controller_url.rstrip('/')}/servers/{self.server_id}/heartbeat"
        while True:
            try:
                draining = self.draining
                body = {"url": self.config.url, "replicas": self.replica_report(), "draining": draining}
                response = await self._http.post(url, json=body)
                if response.status_code == 200:
                    if draining:
                        self._acked_drain.set()
                    await self.reconcile(response.json())
                else:
                    log.warning("heartbeat answered %s: %s", response.status_code, response.text[:200])
            except httpx.HTTPError as exc:
                log.warning("controller unreachable: %s", exc)
            except VeniceError as exc:
                log.error("could not apply assignment: %s", exc)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.heartbeat_interval_s)

    async def drain(self) -> None:
        """Tell the controller to stop routing reads here, then keep serving for the grace
        period so reads already on their way still get answers."""
        self.draining = True
        self.poke()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._acked_drain.wait(), 2.0)
        log.info("draining: controller %s; serving %.1f s more", "acknowledged" if self._acked_drain.is_set() else "unreachable", self.config.drain_grace_s)
        await asyncio.sleep(self.config.drain_grace_s)

    async def reconcile(self, answer: dict[str, Any]) -> None:
        if self.pubsub is None:
            self.pubsub = connect(self.config.pubsub_url or answer["pubsub_url"])
        wanted = {_hosted_key(a): a for a in answer["assignment"]}
        for key in [k for k in self.hosted if k not in wanted]:
            await self._drop(key)
        for key, assignment in wanted.items():
            hosted = self.hosted.get(key)
            if hosted is None:
                self._host(assignment)
            elif set(hosted.ingestion.partitions) != {int(p) for p in assignment["partitions"]}:
                await self._repartition(hosted, assignment)
        if not self._cleaned_orphans:
            self._remove_orphans(set(wanted))
            self._cleaned_orphans = True

    def _dir(self, key: HostedKey) -> Path:
        store, version, incarnation = key
        return self.versions_dir / (f"{store}_v{version}-{incarnation}" if incarnation else f"{store}_v{version}")

    def _host(self, assignment: dict[str, Any]) -> None:
        assert self.pubsub is not None
        key = _hosted_key(assignment)
        store, version, incarnation = key
        partitions = [int(p) for p in assignment["partitions"]]
        storage = VersionStorage(
            self._dir(key), int(assignment["partitions_total"]), partitions, map_size=self.config.lmdb_map_size
        )
        ingestion = VersionIngestion(
            store, version, assignment["topic"], partitions, storage, self.pubsub, on_change=self.poke
        )
        task = asyncio.create_task(ingestion.run(), name=f"ingest-{assignment['topic']}")
        self.hosted[key] = self._readable[(store, version)] = HostedVersion(
            store, version, storage, ingestion, task, incarnation
        )
        log.info("hosting %s partitions %s", assignment["topic"], partitions)
        self.poke()

    async def _repartition(self, hosted: HostedVersion, assignment: dict[str, Any]) -> None:
        """The controller moved partitions of a version to or from this server."""
        assert self.pubsub is not None
        partitions = [int(p) for p in assignment["partitions"]]
        hosted.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hosted.task
        for partition in set(hosted.ingestion.partitions) - set(partitions):
            hosted.storage.drop_partition(partition)
        hosted.storage.open_partitions(partitions)
        hosted.ingestion = VersionIngestion(
            hosted.store, hosted.version, assignment["topic"], partitions, hosted.storage, self.pubsub, on_change=self.poke
        )
        hosted.task = asyncio.create_task(hosted.ingestion.run(), name=f"ingest-{assignment['topic']}")
        log.info("now hosting %s partitions %s", assignment["topic"], partitions)
        self.poke()

    async def _drop(self, key: HostedKey) -> None:
        hosted = self.hosted.pop(key)
        if self._readable.get(key[:2]) is hosted:
            del self._readable[key[:2]]
        hosted.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hosted.task
        hosted.storage.destroy()
        log.info("dropped %s v%d (incarnation %s)", *key)

    def _remove_orphans(self, wanted: set[HostedKey]) -> None:
        """Remove version directories left from before a restart that are no longer assigned."""
        keep = {self._dir(key).name for key in wanted}
        for path in self.versions_dir.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed unassigned data %s", path.name)

    async def close(self) -> None:
        for hosted in self.hosted.values():
            hosted.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hosted.task
            hosted.storage.close()
        self.hosted.clear()
        self._readable.clear()
        await self._http.aclose()
        if self.pubsub is not None:
            await self.pubsub.close()


def _hosted_key(assignment: dict[str, Any]) -> HostedKey:
    return str(assignment["store"]), int(assignment["version"]), str(assignment.get("incarnation") or "")
