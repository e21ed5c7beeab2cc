"""A small pooled keep-alive HTTP/1.1 client for the router's hop to the storage servers.

Why not httpx: it costs ~400 µs of CPU per request (request/response models, header
normalisation, its pool's bookkeeping, anyio), which capped the router near 2k
requests/s. This client does only what that hop needs, on ``asyncio.Protocol`` and
httptools' C parser (as the server side, venice/httpserver.py):

* one request at a time per connection, connections kept alive and reused most
  recently used first, at most ``max_connections`` per server (callers beyond that
  wait for a free one);
* a connection the server closed while idle is noticed (``connection_lost``) and
  dropped; one the server closed just as it was reused (no answer byte arrived) is
  retried once on a new connection, since every call the router makes is a read;
* one timeout covers connecting and the whole exchange; a timed-out, cancelled or
  broken exchange closes its connection (its answer may still come);
* an answer over ``max_answer_bytes`` is an error and its connection is closed: by
  its content-length before any of the body is read, else (chunked, or delimited by
  the close of the connection) as soon as it passes the cap;
* an answer without a length is complete when the server closes the connection;
* a pool closed with :meth:`HostPool.aclose` takes no connection back: one whose
  request was in flight is closed when its answer has come;
* errors are :class:`UpstreamError` subclasses: :class:`ConnectFailed`,
  :class:`UpstreamTimeout`, :class:`ConnectionLost`, :class:`ProtocolError`,
  :class:`AnswerTooLarge`.

Answers are read whole into memory (storage server answers are small, or a batch
the router needs whole anyway): status, lower-cased headers (a header sent more than
once has its values joined with ``", "``, as RFC 9110 5.3 allows), body.

Two ways to ask: ``await pool.request(...)`` (a future per exchange, connects when no
connection is idle, waits for a free slot), and :meth:`HostPool.try_send`, the router's
callback lane for single-key reads: when a slot is free and a connection idle it writes
the request at once and hands the answer (or the :class:`UpstreamError`) to a
:class:`Waiter`'s ``set_result`` / ``set_exception``, called from the protocol's own
callbacks: no task, no future. Otherwise it returns ``None`` and the caller takes the
awaiting path.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools

__all__ = [
    "AnswerTooLarge",
    "ConnectFailed",
    "ConnectionLost",
    "HostPool",
    "ProtocolError",
    "Response",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamTimeout",
    "Waiter",
]

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_EXPIRY_S = 30.0
"""Idle connections older than this are closed instead of reused."""
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""Largest answer body read; a larger one is an :class:`AnswerTooLarge` error."""


class UpstreamError(Exception):
    """Any failure to get an answer from the server."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unreachable)."""


class UpstreamTimeout(UpstreamError):
    """No complete answer within the timeout (connecting included)."""


class ConnectionLost(UpstreamError):
    """The server closed or reset the connection before the answer was complete."""


class ProtocolError(UpstreamError):
    """The server sent something that is not a valid HTTP/1.1 answer."""


class AnswerTooLarge(UpstreamError):
    """The answer's body is over the pool's ``max_answer_bytes``."""


class _Stop(Exception):
    """Raised in a parser callback to stop parsing an answer already given up on."""


class Response:
    """One answer: ``status``, ``headers`` (lower-case bytes names -> bytes values), ``body``."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        return self.headers.get(name, default)

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"


class Waiter(Protocol):
    """What waits for one answer: an ``asyncio.Future[Response]`` or a callback object of
    :meth:`HostPool.try_send` (``done()`` is false until one of the setters ran)."""

    def done(self) -> bool: ...

    def set_result(self, result: Response, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class _Slots:
    """A semaphore that can also be taken without waiting (:meth:`try_take`); waiters are
    served first come, first served."""

    __slots__ = ("_loop", "_waiters", "free")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.free = count
        self._loop = loop
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as the wait was cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the waiter
                return
        self.free += 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the ``on_*`` methods while parsing."""

    __slots__ = (
        "_body", "_body_size", "_framed", "_headers", "_headers_done", "_loop", "_parser", "_pool", "_timer",
        "_waiter", "closed", "got_bytes", "idle_since", "transport",
    )

    def __init__(self, pool: HostPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: Waiter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._headers_done = False
        self._framed = False
        """The answer has a content-length or is chunked (else the close of the connection ends it)."""
        self.closed = False
        self.got_bytes = False
        """Whether any byte of the current answer arrived (a retry would then be unsafe)."""
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Nothing was asked: a server speaking out of turn cannot be trusted with the next request.
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # Closed first, then failed: a callback waiter must see a connection it cannot reuse.
            self.close()
            self._fail(ProtocolError(f"{self._pool.url} sent an invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        # The parser cannot be told about the end of the input (httptools has no
        # finish()), so an answer delimited by the close of the connection is completed here.
        if self._waiter is not None and self._headers_done and not self._framed:
            self._complete()
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        if self._waiter is not None:
            reason = f": {exc!r}" if exc else ""
            self._fail(ConnectionLost(f"{self._pool.url} closed the connection before answering{reason}"))

    # -- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        seen = self._headers.get(name)
        self._headers[name] = value if seen is None else seen + b", " + value
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._pool.max_answer_bytes:
            self._too_large(f"announces {int(length)} bytes")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._pool.max_answer_bytes:
            self._too_large(f"passed {self._body_size} bytes")
        self._body.append(body)

    def _too_large(self, what: str) -> None:
        self.close()
        self._fail(AnswerTooLarge(f"{self._pool.url}: the answer {what}, over the limit of {self._pool.max_answer_bytes}"))
        raise _Stop

    def on_message_complete(self) -> None:
        if self._waiter is not None:
            self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        assert waiter is not None
        status = self._parser.get_status_code()
        self._headers_done = self._framed = False
        self._body_size = 0
        if status < 200:  # an interim 1xx answer: the real one follows
            self._headers = {}
            self._body = []
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = Response(status, self._headers, body)
        self._waiter = None
        self._headers = {}
        self._body = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parser.should_keep_alive():
            self.close()
        if not waiter.done():
            waiter.set_result(response)

    # -- requests ------------------------------------------------------------------------
    def send(self, data: bytes, deadline: float) -> asyncio.Future[Response]:
        """Write one request; the future resolves with its answer (or an UpstreamError)."""
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self.send_to(data, deadline, waiter)
        return waiter

    def send_to(self, data: bytes, deadline: float | None, waiter: Waiter) -> None:
        """Write one request; ``waiter`` gets its answer (or an UpstreamError). Without a
        ``deadline`` the caller keeps time itself (and calls :meth:`abandon`)."""
        self._waiter = waiter
        self.got_bytes = False
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timeout)
        assert self.transport is not None
        self.transport.write(data)

    def abandon(self) -> None:
        """The answer is no longer wanted (cancelled, timed out): it may still arrive, so
        this connection cannot carry another request."""
        self.close()
        self._fail(ConnectionLost("request abandoned"))

    @property
    def busy(self) -> bool:
        return self._waiter is not None

    def _on_timeout(self) -> None:
        self._timer = None
        self.close()
        self._fail(UpstreamTimeout(f"{self._pool.url} did not answer in time"))

    def _fail(self, exc: UpstreamError) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HostPool:
    """Keep-alive connections to one ``http://host:port`` (or ``https://``)."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_expiry_s: float = DEFAULT_IDLE_EXPIRY_S,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        authorization: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {url!r}")
        self.url = url.rstrip("/")
        self.loop = loop or asyncio.get_running_loop()
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        host_header = parts.netloc.encode("idna")
        # The credential (the router's cluster secret) is part of every request's head,
        # built once here: nothing more per request.
        auth = b"" if authorization is None else b"\r\nAuthorization: " + authorization.encode("latin-1")
        self._get_head = b" HTTP/1.1\r\nHost: " + host_header + auth + b"\r\n\r\n"
        self._post_head = b" HTTP/1.1\r\nHost: " + host_header + auth + b"\r\nContent-Length: "
        self._idle: list[_Connection] = []
        self._slots = _Slots(max_connections, self.loop)
        self._idle_expiry_s = idle_expiry_s
        self.max_answer_bytes = max_answer_bytes
        self._closed = False
        self.opened = 0
        """Connections opened so far (tests and stats)."""

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def encode(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None = None) -> bytes:
        """The request bytes: request line, Host, optional headers, Content-Length for a body."""
        target = path.encode("ascii")
        if body is None and not headers and method == "GET":
            return b"GET " + target + self._get_head
        extra = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
        if body is None:
            return method.encode("ascii") + b" " + target + self._get_head[:-2] + extra + b"\r\n"
        return (
            method.encode("ascii") + b" " + target + self._post_head + str(len(body)).encode("ascii") + b"\r\n"
            + extra + b"\r\n" + body
        )

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and return the whole answer; raises UpstreamError subclasses."""
        if self._closed:
            raise ConnectionLost(f"the pool of {self.url} is closed")
        data = self.encode(method, path, body, headers)
        loop = self.loop
        deadline = loop.time() + timeout
        # No timeout of its own: a caller whose deadline passes cancels this wait.
        await self._slots.take()
        try:
            conn = self._take_idle(loop.time())
            if conn is not None:
                try:
                    return await self._exchange(conn, data, deadline)
                except ConnectionLost:
                    if conn.got_bytes:
                        raise
                    # The server closed this idle connection just as it was reused: the
                    # request never reached it, so one more try on a new connection is safe.
            conn = await self._connect(deadline)
            return await self._exchange(conn, data, deadline)
        finally:
            self._slots.give()

    def try_send(self, method: str, path: str, deadline: float | None, waiter: Waiter) -> _Connection | None:
        """Send a body-less request at once on an idle connection, if a slot is free and
        one is idle (``None`` otherwise: nothing was sent). ``waiter`` gets the answer from
        the connection's callbacks (an :class:`UpstreamTimeout` at ``deadline``; ``None``:
        no timer, the caller keeps time); the caller then calls :meth:`finished` with the
        connection, or :meth:`abandoned` when it stops waiting before the answer came."""
        if self._closed or not self._idle or not self._slots.try_take():
            return None
        conn = self._take_idle(self.loop.time())
        if conn is None:
            self._slots.give()
            return None
        conn.send_to(self.encode(method, path, None), deadline, waiter)
        return conn

    def finished(self, conn: _Connection) -> None:
        """The exchange :meth:`try_send` started has its answer (or failed): the slot is
        free, and the connection is idle again unless it closed."""
        self._slots.give()
        self._reuse(conn)

    def abandoned(self, conn: _Connection) -> None:
        """The caller of :meth:`try_send` stopped waiting: the connection is closed."""
        conn.abandon()
        self._slots.give()

    async def _exchange(self, conn: _Connection, data: bytes, deadline: float) -> Response:
        try:
            response = await conn.send(data, deadline)
        except BaseException:
            # Timed out, cancelled (a hedge lost, a deadline passed) or broken: the answer
            # may still arrive, so this connection cannot carry another request.
            conn.abandon()
            raise
        self._reuse(conn)
        return response

    def _reuse(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()  # the pool was closed while this request was in flight
        elif not conn.closed:
            conn.idle_since = self.loop.time()
            self._idle.append(conn)

    def _take_idle(self, now: float) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used: the likeliest to be open still
            if conn.closed:
                continue
            if now - conn.idle_since > self._idle_expiry_s:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, deadline: float) -> _Connection:
        remaining = deadline - self.loop.time()
        if remaining <= 0:
            raise UpstreamTimeout(f"{self.url}: no time left to connect")
        try:
            async with asyncio.timeout(remaining):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), self._host, self._port, ssl=self._ssl
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.url}: connect timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: {exc}") from exc
        self.opened += 1
        if self._closed:
            conn.close()
            raise ConnectionLost(f"the pool of {self.url} is closed")
        return conn

    def _forget(self, conn: _Connection) -> None:
        """A connection closed: drop it from the idle list at once."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


class UpstreamClient:
    """One :class:`HostPool` per server base URL, created on first use."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_expiry_s: float = DEFAULT_IDLE_EXPIRY_S,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        authorization: str | None = None,
    ) -> None:
        self._options: dict[str, Any] = {
            "max_connections": max_connections, "idle_expiry_s": idle_expiry_s,
            "max_answer_bytes": max_answer_bytes, "ssl_context": ssl_context, "authorization": authorization,
        }
        self._pools: dict[str, HostPool] = {}

    def pool(self, url: str) -> HostPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = HostPool(url, **self._options)
        return pool

    async def request(
        self, url: str, method: str, path: str, body: bytes | None = None, *, timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        pool = self._pools.get(url) or self.pool(url)
        return await pool.request(method, path, body, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()
