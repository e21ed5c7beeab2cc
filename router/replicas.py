"""HTTP reads from storage servers: the router's one boundary to the network.

Requests go over :mod:`router.upstream`, the router's own pooled keep-alive HTTP/1.1
client (httpx cost ~400 µs of CPU per call and capped the router near 2k reads/s).
Every upstream exception is re-raised here as a :mod:`venice.errors` class, and every
error answer of a server is turned into a typed error whose ``retriable`` flag tells
:func:`venice.failover.first_success` whether to try the next replica.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from router.upstream import DEFAULT_MAX_ANSWER_BYTES, AnswerTooLarge, Response, UpstreamClient, UpstreamError, UpstreamTimeout
from venice.errors import (
    AnswerTooLargeError,
    DeadlineExceededError,
    KeyNotFoundError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)
from venice.failover import FailoverCounts, first_success
from venice.protocol import (
    SCHEMA_ID_HEADER,
    Hit,
    decode_batch_response,
    encode_batch_request,
    encode_compute_request,
    replica_batch_path,
    replica_compute_path,
    replica_get_path,
)
from venice.replica_health import ReplicaHealth, RetryBudget

__all__ = ["MAX_CONNECTIONS_PER_REPLICA", "ReplicaReader"]

T = TypeVar("T")

MAX_CONNECTIONS_PER_REPLICA = 64
"""Keep-alive connections per storage server; sized for ~64 requests in flight."""
KEEPALIVE_EXPIRY_S = 30.0

_SCHEMA_ID_HEADER = SCHEMA_ID_HEADER.encode()
_BATCH_HEADERS = {"content-type": "application/octet-stream"}


class ReplicaReader:
    """Reads single keys and key batches from replicas, with failover and a deadline."""

    def __init__(
        self,
        *,
        hedge_after_s: float | None = None,
        on_stale_routing: Callable[[], None] = lambda: None,
        health: ReplicaHealth | None = None,
        budget: RetryBudget | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        authorization: str | None = None,
    ) -> None:
        self._hedge_after_s = hedge_after_s
        """A fixed hedge delay, or ``None``: derived from observed latency (see ReplicaHealth)."""
        self._on_stale_routing = on_stale_routing
        self.health = health if health is not None else ReplicaHealth()
        self.budget = budget if budget is not None else RetryBudget()
        self.counts = FailoverCounts()
        """Failovers, hedges and budget refusals of every read (the router's metrics)."""
        # One pool of keep-alive connections per server, so one slow server cannot
        # starve the connections to the others. One TLS context for all: replicas at
        # https:// URLs are verified with it (the router's --ca-file, else the system's CAs).
        # A replica's answer over ``max_answer_bytes`` is refused as it arrives (a 413
        # for the caller, not worth another replica: each holds the same values).
        self._upstream = UpstreamClient(
            max_connections=MAX_CONNECTIONS_PER_REPLICA,
            idle_expiry_s=KEEPALIVE_EXPIRY_S,
            max_answer_bytes=max_answer_bytes,
            ssl_context=ssl_context if ssl_context is not None else ssl.create_default_context(),
            authorization=authorization,
        )

    async def get(
        self, replicas: Sequence[str], store: str, version: int, partition: int, key: bytes, *, deadline_at: float
    ) -> Hit | None:
        """The stored value of one key, or ``None`` when the key is missing (final, no failover)."""
        path = replica_get_path(store, version, partition, key)

        async def attempt(url: str, timeout: float) -> Hit | None:
            response = await self._send(url, "GET", path, None, timeout)
            if response.status == 200:
                return _hit(url, response)
            error = self._replica_error(url, response)
            if isinstance(error, KeyNotFoundError):
                return None
            raise error

        what = f"store {store!r} v{version} partition {partition}"
        return await self._first_success(replicas, attempt, deadline_at, what)

    async def batch(
        self, replicas: Sequence[str], store: str, version: int, items: Sequence[tuple[int, bytes]], *, deadline_at: float
    ) -> list[Hit | None]:
        """Values of ``(partition, key bytes)`` items from one replica, in order; ``None`` = missing."""
        path = replica_batch_path(store, version)
        body = encode_batch_request(items)

        async def attempt(url: str, timeout: float) -> list[Hit | None]:
            response = await self._send(url, "POST", path, body, timeout)
            if response.status == 200:
                return decode_batch_response(response.body, len(items))
            raise self._replica_error(url, response)

        what = f"batch of {len(items)} key(s) of store {store!r} v{version}"
        return await self._first_success(replicas, attempt, deadline_at, what)

    async def compute(
        self,
        replicas: Sequence[str],
        store: str,
        version: int,
        spec_json: bytes,
        items: Sequence[tuple[int, bytes]],
        *,
        deadline_at: float,
    ) -> list[Hit | None]:
        """Read-compute results (JSON bytes per found key) of ``items`` from one replica, in order."""
        path = replica_compute_path(store, version)
        body = encode_compute_request(spec_json, items)

        async def attempt(url: str, timeout: float) -> list[Hit | None]:
            response = await self._send(url, "POST", path, body, timeout)
            if response.status == 200:
                return decode_batch_response(response.body, len(items))
            raise self._replica_error(url, response)

        what = f"compute over {len(items)} key(s) of store {store!r} v{version}"
        return await self._first_success(replicas, attempt, deadline_at, what)

    def order(self, replicas: Sequence[str], spread: int) -> list[str]:
        """``replicas`` healthiest first (recent failures last, then load and latency)."""
        return self.health.order(replicas, spread)

    async def aclose(self) -> None:
        await self._upstream.aclose()

    async def _first_success(
        self, replicas: Sequence[str], attempt: Callable[[str, float], Awaitable[T]], deadline_at: float, what: str
    ) -> T:
        """:func:`first_success` with every attempt's outcome fed to the health tracker,
        the hedge delay taken from it, and retries and hedges paid from the retry budget."""
        health = self.health
        self.budget.record_request()

        async def tracked(url: str, timeout: float) -> T:
            started = health.started(url)
            try:
                result = await attempt(url, timeout)
            except asyncio.CancelledError:
                health.abandoned(url, started)  # another replica answered first, or the deadline passed
                raise
            except VeniceError as exc:
                if exc.retriable:
                    health.failed(url)
                else:  # a definitive answer (e.g. a bad request): the replica is fine
                    health.succeeded(url, started)
                raise
            except BaseException:
                health.failed(url)
                raise
            health.succeeded(url, started)
            return result

        hedge_after_s = self._hedge_after_s if self._hedge_after_s is not None else health.hedge_after_s()
        return await first_success(
            replicas,
            tracked,
            deadline_at=deadline_at,
            hedge_after_s=hedge_after_s,
            what=what,
            may_retry=self.budget.try_spend,
            counts=self.counts,
        )

    async def _send(self, url: str, method: str, path: str, body: bytes | None, timeout: float) -> Response:
        try:
            if body is None:
                return await self._upstream.request(url, method, path, timeout=timeout)
            return await self._upstream.request(url, method, path, body, timeout=timeout, headers=_BATCH_HEADERS)
        except UpstreamTimeout as exc:
            raise DeadlineExceededError(f"replica {url} did not answer in {timeout:.3f}s") from exc
        except AnswerTooLarge as exc:
            raise AnswerTooLargeError(f"the answer is too large: {exc}") from exc
        except UpstreamError as exc:
            raise TransportError(f"replica {url}: {exc}") from exc

    def _replica_error(self, url: str, response: Response) -> VeniceError:
        """The typed error of a non-200 answer; any 5xx counts as retriable."""
        error = error_from_response(response.status, response.body)
        if error.refresh_routing:
            self._on_stale_routing()
        if response.status >= 500 and not error.retriable:
            return UnavailableError(f"replica {url} answered {response.status}: {error.message}")
        return error


def _hit(url: str, response: Response) -> Hit:
    raw = response.headers.get(_SCHEMA_ID_HEADER, b"")
    if not raw.isdigit():
        raise UnavailableError(f"replica {url} answered without a valid {SCHEMA_ID_HEADER} header")
    return int(raw), response.body
