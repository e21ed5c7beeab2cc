"""HTTP reads from storage servers: the router's one boundary to httpx.

Every httpx exception is re-raised here as a :mod:`venice.errors` class, and every
error answer of a server is turned into a typed error whose ``retriable`` flag tells
:func:`router.failover.first_success` whether to try the next replica.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Sequence
from urllib.parse import quote

import httpx

from router.batch import Hit, decode_batch_response, encode_batch_request
from router.failover import DEFAULT_HEDGE_AFTER_S, first_success
from venice.errors import (
    DeadlineExceededError,
    KeyNotFoundError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)

__all__ = ["MAX_CONNECTIONS_PER_REPLICA", "ReplicaReader"]

MAX_CONNECTIONS_PER_REPLICA = 64
"""Keep-alive connections per storage server; sized for ~64 requests in flight."""
KEEPALIVE_EXPIRY_S = 30.0

SCHEMA_ID_HEADER = "x-venice-schema-id"
_BATCH_HEADERS = {"content-type": "application/octet-stream"}


class ReplicaReader:
    """Reads single keys and key batches from replicas, with failover and a deadline."""

    def __init__(
        self,
        *,
        hedge_after_s: float = DEFAULT_HEDGE_AFTER_S,
        on_stale_routing: Callable[[], None] = lambda: None,
    ) -> None:
        self._hedge_after_s = hedge_after_s
        self._on_stale_routing = on_stale_routing
        # One TLS context for all clients: building one per client costs ~15 ms of CPU,
        # and the router opens dozens of clients (replicas speak plain http anyway).
        self._ssl_context = ssl.create_default_context()
        # Pools per server: httpx limits are per client, and per-server pools also keep
        # one slow server from starving connections to the others.
        self._pools: dict[str, _ReplicaPool] = {}

    async def get(
        self, replicas: Sequence[str], store: str, version: int, partition: int, key: bytes, *, deadline_at: float
    ) -> Hit | None:
        """The stored value of one key, or ``None`` when the key is missing (final, no failover)."""
        path = f"/v1/{quote(store, safe='')}/{version}/{partition}/{_b64url(key)}"

        async def attempt(url: str, timeout: float) -> Hit | None:
            response = await self._send(url, "GET", path, None, timeout)
            if response.status_code == 200:
                return _hit(url, response)
            error = self._replica_error(url, response)
            if isinstance(error, KeyNotFoundError):
                return None
            raise error

        what = f"store {store!r} v{version} partition {partition}"
        return await first_success(
            replicas, attempt, deadline_at=deadline_at, hedge_after_s=self._hedge_after_s, what=what
        )

    async def batch(
        self, replicas: Sequence[str], store: str, version: int, items: Sequence[tuple[int, bytes]], *, deadline_at: float
    ) -> list[Hit | None]:
        """Values of ``(partition, key bytes)`` items from one replica, in order; ``None`` = missing."""
        path = f"/v1/batch/{quote(store, safe='')}/{version}"
        body = encode_batch_request(items)

        async def attempt(url: str, timeout: float) -> list[Hit | None]:
            response = await self._send(url, "POST", path, body, timeout)
            if response.status_code == 200:
                return decode_batch_response(response.content, len(items))
            raise self._replica_error(url, response)

        what = f"batch of {len(items)} key(s) of store {store!r} v{version}"
        return await first_success(
            replicas, attempt, deadline_at=deadline_at, hedge_after_s=self._hedge_after_s, what=what
        )

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()

    async def _send(self, url: str, method: str, path: str, body: bytes | None, timeout: float) -> httpx.Response:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = _ReplicaPool(url, MAX_CONNECTIONS_PER_REPLICA, self._ssl_context)
        try:
            return await pool.send(method, path, body, timeout)
        except httpx.TimeoutException as exc:
            raise DeadlineExceededError(f"replica {url} did not answer in {timeout:.3f}s") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"replica {url}: {exc!r}") from exc

    def _replica_error(self, url: str, response: httpx.Response) -> VeniceError:
        """The typed error of a non-200 answer; any 5xx counts as retriable."""
        error = error_from_response(response.status_code, response.content)
        if error.refresh_routing:
            self._on_stale_routing()
        if response.status_code >= 500 and not error.retriable:
            return UnavailableError(f"replica {url} answered {response.status_code}: {error.message}")
        return error


class _ReplicaPool:
    """Up to ``size`` keep-alive connections to one server, one request on each at a time.

    Each connection is an httpx client limited to one connection, lent out whole.
    httpcore's own pool rescans every connection (with a poll() each) for every
    request, quadratically in its size; with 64 connections in one pool the router
    measured ~5x slower than with this free list, where each lookup is O(1).
    """

    def __init__(self, url: str, size: int, ssl_context: ssl.SSLContext) -> None:
        self._url = url
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(size)
        self._free: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    async def send(self, method: str, path: str, body: bytes | None, timeout: float) -> httpx.Response:
        # No timeout of its own: the caller's deadline cancels a request still waiting here.
        await self._slots.acquire()
        # LIFO: the most recently used connection is the one most likely still open.
        client = self._free.pop() if self._free else self._new_client()
        try:
            if body is None:
                return await client.get(path, timeout=timeout)
            return await client.post(path, content=body, headers=_BATCH_HEADERS, timeout=timeout)
        finally:
            self._free.append(client)
            self._slots.release()

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY_S)
        # trust_env=False: replicas are internal addresses; a proxy from the environment must not apply.
        client = httpx.AsyncClient(
            base_url=self._url, limits=limits, http1=True, http2=False, trust_env=False, verify=self._ssl_context
        )
        self._all.append(client)
        return client


def _hit(url: str, response: httpx.Response) -> Hit:
    raw = response.headers.get(SCHEMA_ID_HEADER, "")
    if not raw.isdigit():
        raise UnavailableError(f"replica {url} answered without a valid {SCHEMA_ID_HEADER} header")
    return int(raw), response.content


def _b64url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")
