"""A copy of the routing table, kept fresh in the background (the router's, and the
direct client's).

The table is long-polled from ``source_url`` (the controller, or a router, which
serves the same ``GET /routing``): ``GET /routing?generation=G&wait_s=W`` returns as soon
as the table moves past generation G (a new version, a swap, a replica change), or with a
304 after W seconds, so every reader sees a change within milliseconds. It is also
refreshed early when a replica says the reader's view is stale (``refresh_routing``
errors). When the source is down the last table keeps serving, and the cache retries
every ``refresh_interval_s``: reads must not depend on the controller being up.

A router serves its copy onwards (:meth:`RoutingCache.payload_json`,
:meth:`RoutingCache.wait_change`) with the same generations and long-poll contract, so
direct clients follow the cluster through the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping

import orjson

from venice import protocol
from venice.controller_client import AsyncControllerClient, ControllerPoller
from venice.errors import UnavailableError, VeniceError
from venice.routing import RoutingTable, StoreRoute

__all__ = ["DEFAULT_REFRESH_INTERVAL_S", "RoutingCache"]

DEFAULT_REFRESH_INTERVAL_S = 1.0
MIN_ON_DEMAND_GAP_S = 0.1
"""Replica errors can ask for a refresh on every request; this caps the rate."""
FETCH_TIMEOUT_S = 2.0
LONG_POLL_S = 10.0
OUTAGE_LOG_EVERY_S = 30.0

logger = logging.getLogger("venice.routing")


class RoutingCache(ControllerPoller):
    """Holds the newest routing table and refreshes it from ``source_url``."""

    def __init__(
        self,
        source_url: str,
        *,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._url = source_url.rstrip("/")
        self._token = token
        self._ca_file = ca_file
        """Sent as the bearer credential: the cluster secret for a router, a token for a client."""
        self._refresh_interval_s = refresh_interval_s
        self._table: RoutingTable | None = None
        self._last_on_demand = 0.0
        self._failing_since: float | None = None
        self._last_outage_log = 0.0
        self._payload: protocol.RoutingTable | None = None
        self._payload_json: tuple[int, bytes] | None = None
        self._moved: asyncio.Event | None = None
        """Set (and replaced) whenever a newer table arrives; long polls wait on it."""
        self.confirmed_at: float | None = None
        """``time.monotonic()`` of the controller's last answer (a new table, or a long
        poll's "unchanged"): how fresh the table is known to be."""

    @property
    def table(self) -> RoutingTable:
        """The newest table; UnavailableError before the controller ever answered."""
        if self._table is None:
            raise UnavailableError("the router has no routing table yet: the controller has not answered")
        return self._table

    @property
    def loaded(self) -> bool:
        return self._table is not None

    def stores(self) -> Mapping[str, StoreRoute]:
        """The stores of the newest table (none before the first)."""
        return {} if self._table is None else self._table.stores

    def generation(self) -> int:
        """The newest table's generation (0 before the first)."""
        return 0 if self._table is None else self._table.generation

    async def start(self) -> None:
        """One immediate fetch (failure only logged), then refresh in the background."""
        self._client = AsyncControllerClient(self._url, timeout_s=FETCH_TIMEOUT_S, token=self._token, ca_file=self._ca_file)
        await self._refresh_logged()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="routing-refresh")

    def request_refresh(self) -> None:
        """Ask for an early refresh; cheap and safe to call on every failed read."""
        now = time.monotonic()
        if self._client is not None and now - self._last_on_demand >= MIN_ON_DEMAND_GAP_S:
            self._last_on_demand = now
            asyncio.get_running_loop().create_task(self._refresh_logged(wait_s=0.0))

    async def refresh(self, wait_s: float = 0.0) -> bool:
        """Fetch the table once, waiting up to ``wait_s`` for a change; True when it changed.
        Raises VeniceError (UnavailableError, InternalError, ...)."""
        if self._client is None:
            raise RuntimeError("RoutingCache.start() was not called")
        generation = None if self._table is None else self._table.generation
        payload = await self._client.routing(generation, wait_s=wait_s)
        self.confirmed_at = time.monotonic()
        if payload is None:
            return False
        if self._table is not None and payload.generation < self._table.generation:
            return False  # an answer overtaken by a newer one (two refreshes crossed)
        self._table = RoutingTable.from_payload(payload, previous=self._table)
        self._payload = payload
        if self._moved is not None:
            self._moved.set()
            self._moved = None
        return True

    def payload_json(self) -> tuple[int, bytes]:
        """``(generation, JSON of GET /routing)`` of the newest table, serialized once per
        generation; UnavailableError before the first one arrived."""
        payload = self._payload
        if payload is None:
            raise UnavailableError("no routing table yet: the controller has not answered")
        cached = self._payload_json
        if cached is None or cached[0] != payload.generation:
            cached = self._payload_json = (payload.generation, orjson.dumps(payload.to_json()))
        return cached

    async def wait_change(self, generation: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a table newer than ``generation``; True when there is one."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            payload = self._payload
            if payload is not None and payload.generation != generation:
                return True
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            if self._moved is None:
                self._moved = asyncio.Event()
            moved = self._moved
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await moved.wait()

    async def _run(self) -> None:
        while True:
            if not await self._refresh_logged(wait_s=LONG_POLL_S):
                await asyncio.sleep(self._refresh_interval_s)

    async def _refresh_logged(self, wait_s: float = 0.0) -> bool:
        """Refresh, turning failures into rate-limited warnings: the old table keeps serving.
        False when the controller could not be asked."""
        try:
            changed = await self.refresh(wait_s)
        except VeniceError as exc:
            self._note_failure(exc)
            return False
        except Exception:
            # The refresher must outlive any bug in parsing; the old table keeps serving.
            logger.exception("routing refresh crashed; retrying")
            return False
        if self._failing_since is not None:
            logger.info("controller reachable again after %.1fs", time.monotonic() - self._failing_since)
            self._failing_since = None
        if changed and self._table is not None:
            logger.info("routing table generation %d loaded", self._table.generation)
        return True

    def _note_failure(self, exc: VeniceError) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._last_outage_log < OUTAGE_LOG_EVERY_S:
            return
        self._last_outage_log = now
        serving = f"generation {self._table.generation}" if self._table else "no table"
        logger.warning("routing refresh failed (%s); serving %s, retrying", exc.message, serving)
