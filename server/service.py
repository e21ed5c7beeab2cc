"""The storage server's moving parts: a heartbeat loop around an :class:`IngestionHost`.

:class:`StorageService` heartbeats to the controller with the state of every replica
(:class:`venice.protocol.Heartbeat`) and hands the assignment in the answer to the
ingestion host, which opens, feeds and drops store-versions (:mod:`venice.ingestion`).
It also answers the host's schema questions from the controller (``GET /stores/{s}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from venice.controller_client import AsyncControllerClient
from venice.errors import InternalError, StoreNotFoundError, UnavailableError, VeniceError
from venice.httpserver import DEFAULT_LIMITS, HttpLimits
from venice.ingestion import DEFAULT_MAP_SIZE, IngestionHost
from venice.protocol import Heartbeat, HeartbeatAnswer
from venice.pubsub import connect
from venice.token_cache import TokenCache

__all__ = ["ServerConfig", "StorageService"]

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
    http: HttpLimits = DEFAULT_LIMITS
    """What the server accepts from its clients (sizes, timeouts, connections)."""
    cluster_secret: str | None = field(default=None, repr=False)
    """Presented to the controller and required of callers of admin paths; ``None``: open."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Serve HTTPS with this certificate and key (both or neither)."""
    ca_file: Path | None = None
    """CA bundle the controller's certificate is verified with (default: ``VENICE_CA_FILE``,
    else the system's)."""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert is not None else 'http'}://{self.host}:{self.port}"


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
        self.server_id = _load_server_id(config.data_dir, config.server_id)
        self.controller = AsyncControllerClient(
            config.controller_url, timeout_s=5.0, token=config.cluster_secret, ca_file=config.ca_file
        )
        self.auth = TokenCache(config.controller_url, config.cluster_secret, ca_file=config.ca_file)
        """Decides reads of private stores and the admin paths (the controller's token table)."""
        self.private_stores: frozenset[str] = frozenset()
        """Stores whose reads need a token, as the last assignment said."""
        self.host = IngestionHost(
            config.data_dir, schema_refresh=self.value_schemas, map_size=config.lmdb_map_size, on_change=self.poke
        )
        self._wake = asyncio.Event()
        self.draining = False
        self._acked_drain = asyncio.Event()

    # -- membership ----------------------------------------------------------------
    def poke(self) -> None:
        """Heartbeat now: a replica's state changed."""
        self._wake.set()

    async def heartbeat_loop(self) -> None:
        while True:
            try:
                draining = self.draining
                heartbeat = Heartbeat(self.config.url, tuple(self.host.reports()), draining)
                answer = await self.controller.heartbeat(self.server_id, heartbeat)
                if draining:
                    self._acked_drain.set()
                await self.reconcile(answer)
            except UnavailableError as exc:
                log.warning("controller unreachable: %s", exc)
            except VeniceError as exc:
                log.error("heartbeat failed: %s", exc)
            self.host.release_stale_readers()  # snapshots of reads that stopped since a commit
            self._wake.clear()
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (3.11).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.heartbeat_interval_s):
                    await self._wake.wait()

    async def drain(self) -> None:
        """Tell the controller to stop routing reads here, then keep serving for the grace
        period so reads already on their way still get answers."""
        self.draining = True
        self.poke()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._acked_drain.wait(), 2.0)
        log.info("draining: controller %s; serving %.1f s more", "acknowledged" if self._acked_drain.is_set() else "unreachable", self.config.drain_grace_s)
        await asyncio.sleep(self.config.drain_grace_s)

    async def reconcile(self, answer: HeartbeatAnswer) -> None:
        # Before the host opens anything of a store, so no read of it is ever unchecked.
        self.private_stores = frozenset(a.store for a in answer.assignment if a.private)
        if self.host.pubsub is None:
            self.host.pubsub = connect(self.config.pubsub_url or answer.pubsub_url)
        await self.host.reconcile(answer.assignment)

    async def value_schemas(self, store: str, incarnation: str) -> Mapping[int, Any]:
        """The host's schema source: every value schema the controller has for ``store``."""
        description = await self.controller.get_store(store)
        if incarnation and description.get("incarnation", incarnation) != incarnation:
            raise StoreNotFoundError(f"store {store!r} was deleted and created again")
        schemas = description.get("value_schemas")
        if not isinstance(schemas, dict) or not all(isinstance(k, str) and k.isascii() and k.isdigit() for k in schemas):
            raise InternalError(f"the controller's description of {store!r} has no readable value_schemas")
        return {int(k): v for k, v in schemas.items()}

    async def close(self) -> None:
        await self.auth.aclose()
        await self.host.close()
        await self.controller.aclose()
        if self.host.pubsub is not None:
            await self.host.pubsub.close()
