"""A storage server's read worker (``venice server --workers N``: workers 1..N-1).

One Python process answers reads on one core at most. A storage server started with
``--workers N`` stays one ingesting process (the only LMDB writer, heartbeats, every
endpoint) and starts N-1 read workers bound to the same port (SO_REUSEPORT). A worker
opens the store-versions the ingesting process lists in its hosting manifest
(``hosting.json``, :class:`venice.ingestion.manifest.HostingView`) READ-ONLY and answers
the two read paths itself (:class:`server.reads.ReadPaths`: single GETs and batches, each
read in a fresh LMDB snapshot, so it sees every commit before it); any other request
(health, admin, change log, read compute, and a read of a partition not in its view of
the manifest yet) is relayed to the ingesting process on its private loopback port, so
a client sees one server whichever process its connection landed on.

A partition the ingesting process stops hosting leaves the manifest within its poll
interval (0.1 s); until then the worker still answers it from the version's files, which
stay readable for :data:`~venice.ingestion.manifest.RETIRE_GRACE_S` seconds.

The reads a worker answers are counted as the ingesting process counts its own, and
published for its ``/metrics`` every second (server/workercounts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from server import workercounts
from server.reads import Answer, ReadPaths
from venice.errors import ReplicaNotReadyError, UnavailableError, VeniceError, error_body
from venice.ingestion.manifest import HostingView
from venice.metrics import OTHER, Counter

__all__ = ["ReadWorkerApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"upgrade",
                         b"proxy-connection", b"te", b"trailer"})
log = logging.getLogger("venice.server")

_RELAY_TIMEOUT_S = 120.0
"""Longer than any long poll the ingesting process holds (the change log waits up to 30 s)."""


class ReadWorkerApp:
    """ASGI app of a read worker: reads from the manifest's read-only view, the rest relayed."""

    def __init__(self, data_dir: Path, main_url: str, *, poll_s: float = 0.1, serve_reads: bool = True) -> None:
        self.data_dir = data_dir
        self.serve_reads = serve_reads
        """False: relay reads too (a closed cluster: only the ingesting process checks tokens)."""
        self.main_url = main_url.rstrip("/")
        self._poll_s = poll_s
        self.view: HostingView | None = None
        self.reads: ReadPaths | None = None
        self._client: httpx.AsyncClient | None = None
        self.refused = Counter("venice_server_reads_total", "", ("store", "version", "kind", "result"))
        self._publisher: asyncio.Task[None] | None = None

    def fast_path(self, method: str, path: bytes, query: bytes, body: bytes) -> Answer | None:
        """A read of a partition the manifest lists as ready, answered here; ``None`` (the
        request is relayed) for anything else, including a partition not (yet) in this
        worker's view: the ingesting process may already serve it (it reports READY to
        the controller before this worker's next look at the manifest), and its answer is
        the authoritative one."""
        if self.reads is None or not self.serve_reads:
            return None
        try:
            return self.reads.fast_path(method, path, query, body)
        except ReplicaNotReadyError:
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._relay(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                view = self.view = HostingView(self.data_dir, poll_s=self._poll_s)
                self.reads = ReadPaths(view.ready, self._ready_set, self._count_refused)
                self._client = httpx.AsyncClient(base_url=self.main_url, timeout=_RELAY_TIMEOUT_S)
                self._publisher = asyncio.create_task(self._publish_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._publisher is not None:
                    self._publisher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._publisher
                self.publish()  # the reads of the last interval
                self.reads = None
                if self._client is not None:
                    await self._client.aclose()
                if self.view is not None:
                    self.view.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _count_refused(self, store: str, version: int | None, kind: str, code: str) -> None:
        """A read refused here. Not ready: not counted, the request is relayed and the
        ingesting process answers (and counts) it."""
        if code == ReplicaNotReadyError.code:
            return
        view = self.view
        if version is not None and view is not None and (store, version) in view.entries:
            self.refused.inc((store, str(version), kind, code))
        else:
            self.refused.inc((OTHER, OTHER, kind, code))

    def publish(self) -> None:
        """Write this worker's counts for the ingesting process (server/workercounts.py)."""
        view = self.view
        if view is None:
            return
        reads = [[store, version, s.hits, s.misses, s.batches, s.batch_keys] for store, version, s in view.storages()]
        refused = [[*labels, int(count)] for labels, count in self.refused.values.items()]
        try:
            workercounts.write(self.data_dir, os.getpid(), reads, refused)
        except OSError as exc:
            log.warning("cannot write this worker's read counts: %s", exc)

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(workercounts.PUBLISH_INTERVAL_S)
            self.publish()

    def _ready_set(self) -> object:
        assert self.view is not None
        return self.view.ready_set

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = raw_path + (b"?" + query if query else b"")
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _HOP_BY_HOP]
        assert self._client is not None
        try:
            answer = await self._client.request(
                scope["method"], target.decode("latin-1"), content=b"".join(chunks), headers=headers
            )
        except httpx.HTTPError as exc:
            error: VeniceError = UnavailableError(f"the storage server's ingesting process did not answer: {exc}")
            body = error_body(error)
            await send({"type": "http.response.start", "status": error.http_status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        out_headers = [(k.lower(), v) for k, v in answer.headers.raw if k.lower() not in _HOP_BY_HOP]
        out_headers.append((b"content-length", b"%d" % len(answer.content)))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out_headers})
        await send({"type": "http.response.body", "body": answer.content})
