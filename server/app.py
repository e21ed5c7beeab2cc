"""The storage server's HTTP API as a raw ASGI app.

The read path skips any framework routing: it is the hottest code in the platform.
Paths (see docs/api.md):

* ``GET  /v1/{store}/{version}/{partition}/{key_b64url}``
* ``POST /v1/batch/{store}/{version}``
* ``POST /v1/compute/{store}/{version}`` (read compute; through ASGI, beside the fast paths)
* ``GET  /v1/changes/{store}/{version}?partition=P&from=N`` (a page of a change log; ASGI, may wait)
* ``GET  /health``, ``GET /admin/replicas``, ``GET /metrics`` (Prometheus text format)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from server.changes import ChangesEndpoint
from server.compute import ComputeEndpoint
from server.metrics import ServerMetrics
from server.reads import ReadPaths
from server.service import StorageService
from venice.auth import Action, Role, bearer
from venice.errors import ForbiddenError, NotFoundError, VeniceError, error_body
from venice.httpserver import AnswerHeaders, header_list
from venice.metrics import PROMETHEUS_CONTENT_TYPE

__all__ = ["StorageApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_PROMETHEUS = [(b"content-type", PROMETHEUS_CONTENT_TYPE.encode())]
_OCTETS = (b"content-type", b"application/octet-stream")
_CONTENT_LENGTH = b"content-length"
_BODY = "http.response.body"
_START = "http.response.start"


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    # An explicit content-length: without one an ASGI server may fall back to chunked
    # encoding, which costs both sides framing work on every answer.
    headers = [*headers, (_CONTENT_LENGTH, b"%d" % len(body))]
    await send({"type": _START, "status": status, "headers": headers})
    await send({"type": _BODY, "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return None


def _store_of(method: str, path: bytes) -> str:
    """The store a ``/v1/...`` path is about (see the module docstring for the paths)."""
    parts = path[4:].split(b"/")
    raw = parts[0] if method == "GET" and len(parts) == 4 else parts[1] if len(parts) > 1 else b""
    return (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8", "replace")


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class StorageApp:
    """ASGI callable; lifespan starts and stops the :class:`StorageService`."""

    def __init__(self, service: StorageService) -> None:
        self.service = service
        host = service.host
        self.metrics = ServerMetrics(host, service.server_id)
        self.reads = ReadPaths(host.ready, lambda: host.ready_set, self.metrics.count_refused)
        self._heartbeat: asyncio.Task[None] | None = None
        self._compute = ComputeEndpoint(service.host)
        self._changes = ChangesEndpoint(service.host, lambda: service.draining)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except VeniceError as exc:
                await _respond(send, exc.http_status, error_body(exc), [*_JSON, *exc.headers()])
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.service.auth.start()
                self._heartbeat = asyncio.create_task(self.service.heartbeat_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._heartbeat is not None:
                    self._heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._heartbeat
                await self.service.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        body = await _read_body(receive) if method == "POST" else b""
        if raw_path.startswith(b"/v1/"):
            store = _store_of(method, raw_path)
            if store in self.service.private_stores:
                credential = bearer(_header(scope, b"authorization"))
                self.service.auth.check(credential, Action.READ, store, private=True)
        answer = self.reads.fast_path(method, raw_path, scope.get("query_string", b""), body)
        if answer is not None:
            status, headers, answer_body = answer
            return await _respond(send, status, answer_body, header_list(headers))
        if method == "GET" and path == "/health":
            body = orjson.dumps({"status": "ok", "server_id": self.service.server_id})
            return await _respond(send, 200, body, _JSON)
        if method == "GET" and path == "/metrics":
            self.service.auth.check(bearer(_header(scope, b"authorization")), Action.MONITOR)
            return await _respond(send, 200, self.metrics.render(), _PROMETHEUS)
        if method == "GET" and path == "/admin/replicas":
            self._check_operator(bearer(_header(scope, b"authorization")))
            return await _respond(send, 200, orjson.dumps(self._replicas()), _JSON)
        if method == "GET" and raw_path.startswith(b"/v1/changes/"):
            page = await self._changes.answer(raw_path, scope.get("query_string", b""))
            return await _respond(send, 200, page, [_OCTETS])
        if method == "POST" and raw_path.startswith(b"/v1/compute/"):
            return await _respond(send, 200, self._compute.answer(raw_path, body), [_OCTETS])
        raise NotFoundError(f"no such endpoint: {method} {path}")

    def fast_path(self, method: str, path: bytes, query: bytes, body: bytes) -> tuple[int, AnswerHeaders, bytes] | None:
        """Reads (single and batch) answered synchronously by :class:`venice.httpserver.HttpServer`
        (no task, no ASGI messages): :meth:`server.reads.ReadPaths.fast_path`. ``None``
        sends everything else through ASGI, reads of private stores too (their
        Authorization header is checked there)."""
        private = self.service.private_stores
        if private and _store_of(method, path) in private:
            return None
        return self.reads.fast_path(method, path, query, body)

    def _check_operator(self, credential: str | None) -> None:
        """The admin paths: the cluster secret or an admin token (401 without, 403 for others)."""
        principal = self.service.auth.check(credential, Action.MEMBER)
        if self.service.auth.policy.required(Action.MEMBER) and principal.role not in (Role.ADMIN, Role.CLUSTER):
            raise ForbiddenError(f"{principal.describe()} may not read a storage server's admin paths")

    def _replicas(self) -> dict[str, Any]:
        replicas = []
        for hosted in self.service.host.hosted.values():
            states = hosted.ingestion.partitions
            for report in hosted.ingestion.reports():
                entry = report.to_json()
                entry["ingested"] = states[report.partition].ingested
                entry["lmdb_entries"] = hosted.storage.count(report.partition)
                replicas.append(entry)
        return {"server_id": self.service.server_id, "replicas": replicas}

