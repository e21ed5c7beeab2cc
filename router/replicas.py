"""HTTP reads from storage servers: the router's one boundary to the network.

Requests go over :mod:`router.upstream`, the router's own pooled keep-alive HTTP/1.1
client (httpx cost ~400 µs of CPU per call and capped the router near 2k reads/s).
Every upstream exception is re-raised here as a :mod:`venice.errors` class, and every
error answer of a server is turned into a typed error whose ``retriable`` flag tells
:func:`venice.failover.first_success` whether to try the next replica.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from router.upstream import (
    DEFAULT_MAX_ANSWER_BYTES,
    AnswerTooLarge,
    ConnectionLost,
    HostPool,
    Response,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
)
from router.upstream import _Connection as UpstreamConnection
from venice.errors import (
    AnswerTooLargeError,
    DeadlineExceededError,
    KeyNotFoundError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)
from venice.failover import FailoverCounts, FirstAttempt, first_success
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
GetOutcome = Hit | None | BaseException
"""What :meth:`ReplicaReader.start_get` hands its callback: the hit, ``None`` (not found) or the error."""

log = logging.getLogger("venice.router")

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

    def start_get(
        self,
        replicas: Sequence[str],
        store: str,
        version: int,
        partition: int,
        key: bytes,
        *,
        deadline_at: float,
        done: Callable[[GetOutcome], None],
    ) -> bool:
        """:meth:`get` on the callback lane: when the first replica's pool has an idle
        connection and a free slot, send the read at once and return ``True``; ``done``
        is called once, later, with what :meth:`get` would return or raise. ``False``:
        nothing was sent (the caller awaits :meth:`get`).

        The usual read is one exchange driven by the upstream connection's callbacks (no
        task, no future). Anything else is handed to :func:`first_success`, with the first
        attempt as it stands: a retriable failure (the next replica is a failover) or, when
        the hedge delay passes first, the attempt still running (the next one is a hedge).
        Health, the retry budget and the failover counts see the same as with :meth:`get`.
        """
        url = replicas[0]
        pool = self._upstream.pool(url)
        read = _FastGet(self, pool, replicas, store, version, partition, key, deadline_at, done)
        # One timer per read: the hedge delay's when there is another replica to ask (from
        # then on first_success keeps the deadline), else the connection's deadline.
        hedge_at = None
        if len(replicas) > 1:
            hedge_after_s = self._hedge_after_s if self._hedge_after_s is not None else self.health.hedge_after_s()
            hedge_at = pool.loop.time() + hedge_after_s
            if hedge_at >= deadline_at:
                hedge_at = None
        conn = pool.try_send("GET", read.path, deadline_at if hedge_at is None else None, read)
        if conn is None:
            return False
        read.conn = conn
        self.budget.record_request()
        read.started = self.health.started(url)
        if hedge_at is not None:
            read.hedge = pool.loop.call_at(hedge_at, read.on_hedge_delay)
        return True

    def _take_over(self, read: _FastGet, first: FirstAttempt | None) -> None:
        """Go on with ``read`` in :func:`first_success` (a task); ``first=None``: from the
        start, as if the callback lane had not been tried."""

        async def attempt(url: str, timeout: float) -> Hit | None:
            response = await self._send(url, "GET", read.path, None, timeout)
            if response.status == 200:
                return _hit(url, response)
            error = self._replica_error(url, response)
            if isinstance(error, KeyNotFoundError):
                return None
            raise error

        what = f"store {read.store!r} v{read.version} partition {read.partition}"
        run = self._first_success(read.replicas, attempt, read.deadline_at, what, first=first, record=False)
        task = read.pool.loop.create_task(run)
        task.add_done_callback(read.took_over)

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
        self,
        replicas: Sequence[str],
        attempt: Callable[[str, float], Awaitable[T]],
        deadline_at: float,
        what: str,
        *,
        first: FirstAttempt | None = None,
        record: bool = True,
    ) -> T:
        """:func:`first_success` with every attempt's outcome fed to the health tracker,
        the hedge delay taken from it, and retries and hedges paid from the retry budget
        (``record=False``: the request was counted for the budget already)."""
        health = self.health
        if record:
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
            first=first,
        )

    async def _send(self, url: str, method: str, path: str, body: bytes | None, timeout: float) -> Response:
        try:
            if body is None:
                return await self._upstream.request(url, method, path, timeout=timeout)
            return await self._upstream.request(url, method, path, body, timeout=timeout, headers=_BATCH_HEADERS)
        except UpstreamError as exc:
            raise _upstream_error(url, exc, timeout) from exc

    def _replica_error(self, url: str, response: Response) -> VeniceError:
        """The typed error of a non-200 answer; any 5xx counts as retriable."""
        error = error_from_response(response.status, response.body)
        if error.refresh_routing:
            self._on_stale_routing()
        if response.status >= 500 and not error.retriable:
            return UnavailableError(f"replica {url} answered {response.status}: {error.message}")
        return error


def _upstream_error(url: str, exc: UpstreamError, timeout: float) -> VeniceError:
    if isinstance(exc, UpstreamTimeout):
        return DeadlineExceededError(f"replica {url} did not answer in {timeout:.3f}s")
    if isinstance(exc, AnswerTooLarge):
        return AnswerTooLargeError(f"the answer is too large: {exc}")
    return TransportError(f"replica {url}: {exc}")


class _FastGet:
    """One single-key read on the callback lane (:meth:`ReplicaReader.start_get`). It is
    the upstream connection's waiter (``done`` / ``set_result`` / ``set_exception``, called
    from the connection's callbacks) and, once :func:`first_success` took over while it was
    still running, the source of that attempt's future."""

    __slots__ = (
        "conn", "deadline_at", "future", "hedge", "key", "on_done", "partition", "path", "pool", "reader", "replicas",
        "settled", "started", "store", "taken_over", "timeout", "version",
    )

    def __init__(
        self,
        reader: ReplicaReader,
        pool: HostPool,
        replicas: Sequence[str],
        store: str,
        version: int,
        partition: int,
        key: bytes,
        deadline_at: float,
        done: Callable[[GetOutcome], None],
    ) -> None:
        self.reader = reader
        self.pool = pool
        self.replicas = replicas
        self.store = store
        self.version = version
        self.partition = partition
        self.key = key
        self.path = replica_get_path(store, version, partition, key)
        self.deadline_at = deadline_at
        self.timeout = deadline_at - pool.loop.time()
        self.on_done = done
        self.conn: UpstreamConnection | None = None
        self.started = 0.0
        self.hedge: asyncio.TimerHandle | None = None
        self.future: asyncio.Future[Hit | None] | None = None
        """The attempt as first_success sees it, once it took over while this one ran."""
        self.settled = False
        """The first replica's exchange is over (answered, failed or abandoned)."""
        self.taken_over = False

    # -- the upstream connection's waiter ---------------------------------------------
    def done(self) -> bool:
        return self.settled

    def set_result(self, response: Response, /) -> None:
        self._exchanged(response, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._exchanged(None, exception)

    def _exchanged(self, response: Response | None, exc: BaseException | None) -> None:
        if self.settled:
            return
        self.settled = True
        if self.hedge is not None:
            self.hedge.cancel()
            self.hedge = None
        conn = self.conn
        assert conn is not None
        self.pool.finished(conn)
        reader, url = self.reader, self.replicas[0]
        health = reader.health
        outcome: GetOutcome
        try:
            if response is not None:
                if response.status == 200:
                    outcome = _hit(url, response)
                else:
                    error = reader._replica_error(url, response)
                    outcome = None if isinstance(error, KeyNotFoundError) else error
            elif isinstance(exc, ConnectionLost) and not conn.got_bytes and self.future is None:
                # A reused idle connection the server had just closed: the request never
                # reached it; start over on the awaiting path (a new connection).
                health.unsent(url)
                self.taken_over = True
                reader._take_over(self, None)
                return
            elif isinstance(exc, UpstreamError):
                outcome = _upstream_error(url, exc, self.timeout)
            else:
                outcome = exc
        except VeniceError as error:  # an answer without a valid schema id
            outcome = error
        if isinstance(outcome, BaseException):
            if isinstance(outcome, VeniceError) and not outcome.retriable:
                health.succeeded(url, self.started)  # a definitive answer: the replica is fine
            else:
                health.failed(url)
        else:
            health.succeeded(url, self.started)
        future = self.future
        if future is not None:  # first_success has this attempt
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        elif isinstance(outcome, VeniceError) and outcome.retriable:
            self.taken_over = True
            self.reader._take_over(self, FirstAttempt(failure=outcome))
        else:
            self._deliver(outcome)

    # -- timers and take-over -------------------------------------------------------------
    def on_hedge_delay(self) -> None:
        """The first replica is silent past the hedge delay: first_success hedges it."""
        self.hedge = None
        if self.settled:
            return
        future: asyncio.Future[Hit | None] = self.pool.loop.create_future()
        future.add_done_callback(self._attempt_done)
        self.future = future
        self.taken_over = True
        self.reader._take_over(self, FirstAttempt(running=future))

    def _attempt_done(self, future: asyncio.Future[Hit | None]) -> None:
        if future.cancelled() and not self.settled:  # another replica answered, or the deadline passed
            self.settled = True
            self.reader.health.abandoned(self.replicas[0], self.started)
            assert self.conn is not None
            self.pool.abandoned(self.conn)
        elif not future.cancelled():
            future.exception()  # retrieved: first_success has looked at it or is gone

    def took_over(self, task: asyncio.Task[Hit | None]) -> None:
        if task.cancelled():
            self._deliver(UnavailableError("the read was cancelled"))
            return
        exc = task.exception()
        self._deliver(exc if exc is not None else task.result())

    def _deliver(self, outcome: GetOutcome) -> None:
        try:
            self.on_done(outcome)
        except Exception:  # a callback of the event loop must not raise
            log.exception("unexpected error answering a read of %r", self.store)


def _hit(url: str, response: Response) -> Hit:
    raw = response.headers.get(_SCHEMA_ID_HEADER, b"")
    if not raw.isdigit():
        raise UnavailableError(f"replica {url} answered without a valid {SCHEMA_ID_HEADER} header")
    return int(raw), response.body
