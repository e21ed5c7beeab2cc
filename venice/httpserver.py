"""A lean HTTP/1.1 server for the platform's ASGI apps (storage server, router, controller).

Why not uvicorn on the read path: on this kind of machine uvicorn with uvloop and
httptools answers a trivial raw ASGI app at ~46k requests/s under wrk, while a bare
``asyncio.Protocol`` on the same httptools parser answers ~200k/s; a py-spy profile of
the storage server showed 60% of its CPU inside uvicorn's per-request machinery
(see ``bench/README.md``). This server keeps the ASGI interface, so the apps stay
plain ASGI (and testable under any ASGI server), and adds one thing: an app may
expose ``fast_path(method, raw_path, query, body)``, a *synchronous* handler tried first; when
it returns ``(status, headers, body)`` the answer is written at once, with no task,
no scope and no ASGI messages; when it returns an awaitable of that (an answer that
needs I/O), one task awaits it, still without ASGI; when it returns a :class:`Deferred`
(the router's single-key reads), the answer is written when the app resolves it, from
whatever callback has it: no task, no future. It returns ``None`` for anything it does
not handle. A :class:`venice.errors.VeniceError` it
raises becomes the platform's JSON error answer.

What it implements (all our apps need, nothing more):

* the ASGI ``lifespan`` protocol (startup must succeed or the server does not start);
* HTTP/1.1 keep-alive and HTTP/1.0, request bodies by length or chunked (httptools
  decodes them), pipelined requests answered in order, one at a time per connection;
* answers sent in one ASGI message are written whole with a ``content-length``; an
  app that sends ``more_body=True`` gets each part written as it comes, with chunked
  transfer encoding (to HTTP/1.0 clients: unframed, then the connection closes), so
  Server-Sent Events work. ``receive()`` after the body waits for ``http.disconnect``:
  the client closing the connection, or the server shutting down;
* HEAD answers carry the headers (and content-length) of the GET but no body;
  1xx, 204 and 304 answers carry neither content-length nor body;
* ``Expect: 100-continue`` is answered ``100 Continue`` before the body is read;
* an ``Upgrade`` header (``curl --http2`` sends ``Upgrade: h2c``) is ignored: the request
  is answered as plain HTTP/1.1 and the connection goes on as HTTP/1.1;
* a client that does not read its answers stops being read from (and answered) once
  the send buffer passes the transport's high-water mark, so memory stays bounded.

Limits (:class:`HttpLimits`), each answered in the platform's JSON error shape, after
which the connection is closed:

* request line + headers over ``max_head_bytes``: 431 ``HEADERS_TOO_LARGE``; URL over
  ``max_url_bytes``: 414 ``URL_TOO_LONG``. An unfinished head is cut once it passes the
  limit (the parser grows an unfinished header by concatenation, so reading on would
  cost time quadratic in its size);
* a body over ``max_body_bytes``: 413 ``BODY_TOO_LARGE``, decided from Content-Length
  before any of the body is read (chunked bodies: once they pass the limit);
* a head not complete ``head_timeout_s`` after its first byte: 408 ``REQUEST_TIMEOUT``;
* a connection idle for ``keepalive_s``: closed (with a 408 when it stopped inside a
  request body);
* beyond ``max_connections`` open connections, a new connection gets 503
  ``TOO_MANY_CONNECTIONS``;
* malformed requests get a 400; an app that raises gets a 500.

"Closed" means closed gracefully: the answer is written, our side is shut down, and
what the client still sends is read and dropped for a moment (at most ``LINGER_S`` and
``LINGER_BYTES``), so a client still sending its body reads the answer instead of a
connection reset.

SIGINT/SIGTERM: stop accepting, tell requests waiting in ``receive()`` (long polls,
streams) that the request is over, finish requests in flight (up to
``graceful_shutdown_s``), cancel the rest and let their clean-up run (up to
``CANCELLED_REQUESTS_WAIT_S``), run the lifespan shutdown. With
``before_shutdown`` set, the first SIGTERM runs it first (the storage server drains
there) while still serving; a second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import resource
import signal
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from venice.errors import (
    BodyTooLargeError,
    HeadersTooLargeError,
    InternalError,
    RequestError,
    RequestTimeoutError,
    TooManyConnectionsError,
    UrlTooLongError,
    VeniceError,
    error_body,
)

__all__ = [
    "DEFAULT_HEAD_TIMEOUT_S",
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DEFAULT_MAX_URL_BYTES",
    "AnswerHeaders",
    "Deferred",
    "HttpLimits",
    "HttpServer",
    "header_list",
]

log = logging.getLogger("venice.http")

Headers = list[tuple[bytes, bytes]]
AnswerHeaders = Headers | bytes
"""An answer's headers: ``(name, value)`` pairs, or pre-encoded header lines (each
``name: value\r\n``, without content-length or transfer-encoding), which the fast paths
build once and reuse: written as they are, they save most of an answer's encoding."""
FastResponse = tuple[int, AnswerHeaders, bytes]


class Deferred:
    """An answer a fast path gives later: the app calls :meth:`resolve` or :meth:`fail`
    once, from any callback on the server's loop (an upstream connection's, a timer's),
    and the connection writes it then. Cheaper than an awaitable answer, which costs a
    task per request. Apps may subclass it to carry their own per-request state. It is
    also awaitable (for the app's own ASGI path, or any other host), giving the answer or
    raising the error."""

    __slots__ = ("_connection", "_outcome", "_request", "_waiter")

    def __init__(self) -> None:
        self._connection: _Connection | None = None
        self._request: _Request | None = None
        self._outcome: FastResponse | BaseException | None = None
        self._waiter: asyncio.Future[FastResponse] | None = None

    def __await__(self) -> Generator[Any, None, FastResponse]:
        outcome = self._outcome
        if outcome is None:
            self._waiter = asyncio.get_running_loop().create_future()
            return (yield from self._waiter.__await__())
        self._outcome = None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def resolve(self, status: int, headers: AnswerHeaders, body: bytes) -> None:
        self._settle((status, headers, body))

    def fail(self, exc: BaseException) -> None:
        """Answer with ``exc``: a :class:`VeniceError` becomes its JSON error answer, anything
        else a logged 500."""
        self._settle(exc)

    def _settle(self, outcome: FastResponse | BaseException) -> None:
        connection, request = self._connection, self._request
        if connection is None or request is None:
            waiter = self._waiter
            if waiter is not None:  # awaited
                self._waiter = None
                if not waiter.done():
                    if isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)
            elif self._outcome is None:  # settled before the connection took it
                self._outcome = outcome
            return
        self._connection = self._request = None
        connection._deferred_done(request, outcome)

    def _bind(self, connection: _Connection, request: _Request) -> None:
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            connection._deferred_done(request, outcome)
        else:
            self._connection, self._request = connection, request


FastPath = Callable[[str, bytes, bytes, bytes], FastResponse | Awaitable[FastResponse] | Deferred | None]

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_S = 60.0
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
DEFAULT_MAX_URL_BYTES = 8 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

CANCELLED_REQUESTS_WAIT_S = 2.0
"""At shutdown, how long requests cancelled after the grace period get to run their clean-up."""
LINGER_S = 2.0
"""After a refusal: how long what the client still sends is read and dropped."""
LINGER_BYTES = 16 * 1024 * 1024
"""... and how much of it at most; then the connection is reset."""
_MAX_LINGERING = 1024
"""Connections refused at the cap that may linger at once; beyond, they are reset at once
(a flood of new connections must not use up the file descriptors the cap protects)."""
_FD_RESERVE = 256
"""File descriptors kept for everything but client connections (upstream pools, LMDB, logs)."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one server process accepts from its clients (see docs/failure-model.md)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open client connections per process; one more gets 503 ``TOO_MANY_CONNECTIONS``."""
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    """Time from the first byte of a request to the end of its head; then 408."""
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    """A connection with nothing arriving and nothing to answer this long is closed
    (with a 408 when it stopped inside a request body)."""
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    """Request line and headers together; beyond: 431."""
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    """The request target (path and query); beyond: 414 (it counts toward the head too)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """A request body; beyond: 413, from Content-Length before the body is read."""
    body_limits_by_path: tuple[tuple[bytes, int], ...] = ()
    """``(path prefix, limit)`` pairs: a request whose target starts with a prefix may
    send a body up to that limit instead of ``max_body_bytes`` (the first match wins).
    For the rare route whose contract needs more than the rest, e.g. the controller's
    heartbeats, without raising the limit of every other route."""

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not self.head_timeout_s > 0 or not self.keepalive_s > 0:
            raise ValueError("head_timeout_s and keepalive_s must be positive")
        if self.max_head_bytes < 256:
            raise ValueError("max_head_bytes must be at least 256")
        if self.max_url_bytes < 16:
            raise ValueError("max_url_bytes must be at least 16")
        if self.max_body_bytes < 0 or any(limit < 0 for _, limit in self.body_limits_by_path):
            raise ValueError("max_body_bytes must not be negative")


DEFAULT_LIMITS = HttpLimits()

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}
_JSON = (b"content-type", b"application/json")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SWEEP_S = 5.0
_NOTED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")}
"""Request headers the server itself acts on (framing, 100-continue, upgrades)."""


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def _no_body(status: int) -> bool:
    """1xx, 204 and 304 answers have neither body nor content-length (RFC 9110 8.6, 9112 6.3)."""
    return status < 200 or status == 204 or status == 304


def header_list(headers: AnswerHeaders) -> Headers:
    """``(name, value)`` pairs of an answer's headers, pre-encoded or not."""
    if not isinstance(headers, bytes):
        return headers
    pairs: Headers = []
    for line in headers.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            pairs.append((name, value.strip()))
    return pairs


def _encode(status: int, headers: AnswerHeaders, body: bytes, keep_alive: bool, head: bool = False) -> bytes:
    """A whole answer: a content-length of its own unless ``headers`` has one (for HEAD,
    the GET's); ``head`` answers lose their body; 1xx/204/304 lose length and body.
    ``headers`` must not frame the answer otherwise (no transfer-encoding)."""
    if isinstance(headers, bytes):
        if not _no_body(status):  # the fast paths' answers: one formatting, no loop
            return b"%s%scontent-length: %d\r\n%s\r\n%s" % (
                _status_line(status), headers, len(body), b"" if keep_alive else b"connection: close\r\n",
                b"" if head else body,
            )
        headers = header_list(headers)
    return _encode_pairs(status, headers, body, keep_alive, head)


def _encode_pairs(status: int, headers: Headers, body: bytes, keep_alive: bool, head: bool) -> bytes:
    parts = [_status_line(status)]
    if status != 200 and _no_body(status):
        for name, value in headers:
            if name != b"content-length" and name != b"transfer-encoding":
                parts.append(b"%s: %s\r\n" % (name, value))
        body = b""
    else:
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            parts.append(b"%s: %s\r\n" % (name, value))
        if not has_length:
            parts.append(b"content-length: %d\r\n" % len(body))
        if head:
            body = b""
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def _error_response(error: VeniceError) -> tuple[int, Headers, bytes]:
    return error.http_status, [_JSON, *error.headers()], error_body(error)


def _failure_response(exc: Exception, request: _Request) -> tuple[int, Headers, bytes]:
    """The answer to a fast path that raised: the platform's error, or a logged 500."""
    if isinstance(exc, VeniceError):
        return _error_response(exc)
    log.exception("unexpected error serving %s %r", request.method, request.url, exc_info=exc)
    return _error_response(InternalError("unexpected error"))


def _declared_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class _Refusal(Exception):
    """Raised from a parser callback to stop parsing and answer ``error``."""

    def __init__(self, error: VeniceError) -> None:
        super().__init__(error.message)
        self.error = error


class _Framing:
    """What a request's headers say about its body, when they say anything (most reads
    carry none of these headers, so most requests never build one)."""

    __slots__ = ("chunked", "content_length", "continue_due", "expect_continue", "upgrade")

    def __init__(self) -> None:
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.continue_due = False
        """``100 Continue`` is owed once the answers before this request are written."""
        self.upgrade = False

    def note(self, name: bytes, value: bytes) -> None:
        """One of ``_NOTED_HEADERS``."""
        if name == b"content-length":
            try:
                self.content_length = int(value)
            except ValueError:
                raise _Refusal(RequestError("malformed content-length")) from None
        elif name == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif name == b"expect":
            self.expect_continue = value.strip().lower() == b"100-continue"
        else:
            self.upgrade = True

    @property
    def has_body(self) -> bool:
        return bool(self.content_length) or self.chunked


class _Request:
    """One parsed request; ``path`` (raw, still percent-encoded) is ``None`` when the URL
    does not parse."""

    __slots__ = ("body", "chunks", "framing", "head", "headers", "http_version", "keep_alive", "method", "path", "query", "url")

    def __init__(self) -> None:
        self.url = b""
        self.path: bytes | None = None
        self.query = b""
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.body = b""
        self.method = "GET"
        self.head = False
        self.keep_alive = True
        self.http_version: str | None = None
        """Read from the parser only for requests that need it (ASGI, queued): it costs a
        string format per call, and fast-path reads do not need it."""
        self.framing: _Framing | None = None

    def complete(self, parser: httptools.HttpRequestParser) -> None:
        """Fill in what the parser knows once the whole request is in."""
        raw_method = parser.get_method()
        self.method = method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        self.head = method == "HEAD"
        self.keep_alive = parser.should_keep_alive()
        if self.chunks:
            self.body = b"".join(self.chunks)
            self.chunks = []
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return
        self.path, self.query = parsed.path, parsed.query or b""


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.fast_path = server.fast_path
        self.loop = server.loop
        limits = server.limits
        self.max_head = limits.max_head_bytes
        self.max_url = limits.max_url_bytes
        self.max_body_default = limits.max_body_bytes
        self.body_limits_by_path = limits.body_limits_by_path
        self.max_body = self.max_body_default
        """The body limit of the request being parsed (see HttpLimits.body_limits_by_path)."""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.request: _Request | None = None
        """The request being parsed (or whose upgrade body is being read)."""
        self.in_head = True
        """Waiting for or inside a request head (not inside a body)."""
        self.head_since = 0.0
        """When the first byte of the head being received arrived; 0: none is."""
        self.head_bytes = 0
        """Bytes received while inside the current head (an upper bound of its size)."""
        self.head_size = 0
        """Bytes of the headers parsed so far (exact; the URL is added when the head is complete)."""
        self.body_bytes = 0
        self.raw_body_left = 0
        """Bytes of an upgrade request's body still to read past the parser (see _upgraded)."""
        self.pending: deque[_Request] = deque()
        self.busy = False
        self.write_paused = False
        """The transport's send buffer is over its high-water mark: read and answer no
        more until the client has taken some (a slow reader cannot make us buffer
        answers without bound)."""
        self.drain_waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.disconnect: asyncio.Event | None = None
        """Set when the client is gone or the server shuts down: ends ``receive()``."""
        self.lingering = False
        self.unusual = False
        """Lingering, or reading an upgrade request's body: data_received's slow path."""
        self.linger_left = 0
        self.linger_timer: asyncio.TimerHandle | None = None
        self.last_active = time.monotonic()
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None

    # -- transport callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        self.transport = tcp
        server = self.server
        if len(server.connections) >= server.max_connections:
            server.refused.add(self)
            error = TooManyConnectionsError(f"this server holds its maximum of {server.max_connections} connections")
            tcp.write(_encode(error.http_status, [_JSON], error_body(error), keep_alive=False))
            if len(server.refused) > _MAX_LINGERING:
                tcp.abort()
            else:
                self._linger()
            return
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.sockname = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = now = time.monotonic()
        if self.unusual:
            if self.lingering:
                self.linger_left -= len(data)
                if self.linger_left < 0 and self.transport is not None:
                    self.transport.abort()
                return
            data = self._read_raw_body(data)
            if not data:
                return
        if self.in_head:
            if not self.head_since:
                self.head_since = now
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data, int(exc.args[0]))
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._reject(refusal.error)
            else:
                self._reject(RequestError(f"malformed HTTP request: {exc}"))
            return
        if self.in_head and self.head_bytes > self.max_head:
            # An unfinished head past the limit: stop before the parser grows it further.
            self._reject(HeadersTooLargeError(f"request head over {self.max_head} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        server.refused.discard(self)
        if server.stopping:
            server.connection_closed()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        self._signal_disconnect()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()
        if self.busy or self.closed:
            return  # the request in progress picks the queue up when it finishes
        if self.pending:
            self._handle(self.pending.popleft())
        if not self.write_paused and not self.busy and self.transport is not None and len(self.pending) <= 16:
            self.transport.resume_reading()
        self._maybe_continue()

    def _reject(self, error: VeniceError) -> None:
        """A request that cannot be served: answer it (unless another answer is being
        written) and close."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.lingering:
            return
        self.pending.clear()
        if self.busy:  # answering an earlier request: no room for another answer
            self._close()
            return
        transport.write(_encode(error.http_status, [_JSON], error_body(error), keep_alive=False))
        self._linger()

    def _linger(self) -> None:
        """Close without losing the answer just written: shut our side, drop what the
        client still sends for a moment, then close. Closing at once with unread input
        makes the kernel reset the connection, and the client may lose the answer."""
        transport = self.transport
        assert transport is not None
        self.lingering = self.unusual = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self.linger_left = LINGER_BYTES
        self.linger_timer = self.loop.call_later(LINGER_S, transport.abort)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _signal_disconnect(self) -> None:
        if self.disconnect is not None:
            self.disconnect.set()

    def _wake_writer(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        """Wait until the client has taken enough of what was written (or is gone)."""
        if self.write_paused and not self.closed:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    async def _wait_disconnect(self) -> None:
        if self.disconnect is None:
            self.disconnect = asyncio.Event()
            if self.closed or self.server.stopping:
                self.disconnect.set()
        await self.disconnect.wait()

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.request = _Request()
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.url += url
        if len(request.url) > self.max_url:
            raise _Refusal(UrlTooLongError(f"request URL over {self.max_url} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        name = name.lower()
        request.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_head:
            raise _Refusal(HeadersTooLargeError(f"request head over {self.max_head} bytes"))
        if name in _NOTED_HEADERS:
            if request.framing is None:
                request.framing = _Framing()
            request.framing.note(name, value)

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        self.in_head = False
        self.head_since = 0.0
        self.head_bytes = 0
        if self.head_size + len(request.url) > self.max_head:
            raise _Refusal(HeadersTooLargeError(f"request head over {self.max_head} bytes"))
        self.head_size = 0
        if self.body_limits_by_path:
            self.max_body = self._body_limit(request.url)
        if request.framing is not None:
            self._check_framing(request.framing)

    def _body_limit(self, url: bytes) -> int:
        for prefix, limit in self.body_limits_by_path:
            if url.startswith(prefix):
                return limit
        return self.max_body_default

    def _check_framing(self, framing: _Framing) -> None:
        """Refuse an announced body over the limit before reading it; answer ``Expect:
        100-continue`` (now, or once the answers before this request are written)."""
        length = framing.content_length
        if length is not None and length > self.max_body:
            raise _Refusal(BodyTooLargeError(f"request body of {length} bytes is over the limit of {self.max_body} bytes"))
        if framing.expect_continue and framing.has_body and self.parser.get_http_version() == "1.1":
            if self.busy or self.pending or self.write_paused:
                framing.continue_due = True
            elif self.transport is not None:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body:
            raise _Refusal(BodyTooLargeError(f"request body over the limit of {self.max_body} bytes"))
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.in_head = True
        request.complete(self.parser)
        framing = request.framing
        if framing is not None and framing.upgrade and framing.has_body and self.parser.should_upgrade():
            # The parser stops at an upgrade request's head; its body follows as raw bytes.
            if framing.chunked:
                raise _Refusal(RequestError("a chunked body with an Upgrade header is not supported; send it without"))
            self.raw_body_left = framing.content_length or 0
            self.unusual = True
            return
        self.request = None
        if self.busy or self.write_paused:
            self._queue(request)
        else:
            self._handle(request)

    def _queue(self, request: _Request) -> None:
        request.http_version = self.parser.get_http_version()  # the parser moves on to the next request
        self.pending.append(request)
        if self.transport is not None and len(self.pending) > 16:
            self.transport.pause_reading()  # a client pipelining far ahead waits

    # -- upgrades (ignored: the connection stays HTTP/1.1) -------------------------------
    def _upgraded(self, data: bytes, offset: int) -> None:
        """The parser paused after an upgrade request; it is ready for the next request.
        Whatever followed the request head is its body (if it has one) and then more
        HTTP/1.1 requests."""
        rest = data[offset:]
        if self.raw_body_left:
            rest = self._read_raw_body(rest)
        if rest:
            self.data_received(rest)

    def _read_raw_body(self, data: bytes) -> bytes:
        """Take the upgrade request's body off ``data``; return what follows it."""
        request = self.request
        assert request is not None
        take = data[: self.raw_body_left]
        request.chunks.append(take)
        self.raw_body_left -= len(take)
        if not self.raw_body_left:
            self.unusual = False
            request.body = b"".join(request.chunks)
            request.chunks = []
            self.request = None
            if self.busy or self.write_paused:
                self._queue(request)
            else:
                self._handle(request)
        return data[len(take) :]

    # -- answering -----------------------------------------------------------------------
    def _handle(self, request: _Request) -> None:
        while True:
            if request.path is None:
                answer: Any = _error_response(RequestError("malformed request URL"))
            elif self.fast_path is not None:
                try:
                    answer = self.fast_path(request.method, request.path, request.query, request.body)
                except Exception as exc:  # noqa: BLE001 - any failure becomes an answer, logged when unexpected
                    answer = _failure_response(exc, request)
            else:
                answer = None
            if answer is not None:
                if type(answer) is not tuple:  # the answer needs I/O
                    self.busy = True
                    if isinstance(answer, Deferred):
                        answer._bind(self, request)
                    else:  # an awaitable
                        self.task = self.loop.create_task(self._run_fast(answer, request))
                    return
                self._write(answer[0], answer[1], answer[2], request.keep_alive, request.head)
                if not request.keep_alive or self.closed:
                    self._close()
                    return
                if not self.pending or self.write_paused:
                    return  # resume_writing goes on with the queue
                request = self.pending.popleft()
                continue
            if request.http_version is None:  # the request the parser just finished
                request.http_version = self.parser.get_http_version()
            self.busy = True
            self.task = self.loop.create_task(self._run_asgi(request))
            return

    def _write(self, status: int, headers: AnswerHeaders, body: bytes, keep_alive: bool, head: bool = False) -> None:
        # No last_active update here: a synchronous answer follows its request within
        # microseconds, and _finish marks the end of the ones that took time.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode(status, headers, body, keep_alive, head))

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
        self.last_active = time.monotonic()

    def _maybe_continue(self) -> None:
        """Send a ``100 Continue`` that waited for the answers before its request."""
        request = self.request
        framing = request.framing if request is not None else None
        if framing is not None and framing.continue_due and not self.busy and not self.pending:
            framing.continue_due = False
            self._write_raw(_CONTINUE)

    def _deferred_done(self, request: _Request, outcome: FastResponse | BaseException) -> None:
        """A :class:`Deferred` answer came: write it (as :meth:`_run_fast` does), go on."""
        keep_alive = request.keep_alive
        try:
            if type(outcome) is tuple:
                status, headers, body = outcome
            else:
                assert isinstance(outcome, BaseException)
                exc = outcome if isinstance(outcome, Exception) else InternalError(f"answer failed: {outcome!r}")
                status, headers, body = _failure_response(exc, request)
                keep_alive = keep_alive and isinstance(exc, VeniceError)
            self._write(status, headers, body, keep_alive, request.head)
        except BaseException:
            keep_alive = False
            raise
        finally:
            self._finish(keep_alive)

    async def _run_fast(self, answer: Awaitable[FastResponse], request: _Request) -> None:
        keep_alive = request.keep_alive
        try:
            try:
                status, headers, body = await answer
            except Exception as exc:  # noqa: BLE001 - any failure becomes an answer, logged when unexpected
                status, headers, body = _failure_response(exc, request)
                keep_alive = keep_alive and isinstance(exc, VeniceError)
            self._write(status, headers, body, keep_alive, request.head)
        except BaseException:
            keep_alive = False
            raise
        finally:
            self._finish(keep_alive)

    async def _run_asgi(self, request: _Request) -> None:
        raw_path = request.path
        assert raw_path is not None  # _handle answers unparsable URLs itself
        scope: MutableMapping[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "method": request.method,
            "scheme": "http",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.sockname,
        }
        answer = _AsgiAnswer(self, request)
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await self._wait_disconnect()
            return {"type": "http.disconnect"}

        keep_alive = request.keep_alive
        try:
            await self.app(scope, receive, answer.send)
        except asyncio.CancelledError:
            keep_alive = False
            raise
        except Exception:
            log.exception("unexpected error serving %s %r", request.method, raw_path)
            if answer.status is None:
                code, error_headers, error = _error_response(InternalError("unexpected error"))
                self._write(code, error_headers, error, False)
            keep_alive = False
        else:
            if not answer.complete:  # the app returned without finishing its answer
                if answer.status is None:
                    code, error_headers, error = _error_response(InternalError("no answer from the app"))
                    self._write(code, error_headers, error, False)
                keep_alive = False
            keep_alive = keep_alive and answer.keep_alive
        finally:
            self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self.busy = False
        self.task = None
        self.last_active = time.monotonic()
        self.server.request_done()
        if not keep_alive or self.closed or self.server.stopping:
            self._close()
            return
        if self.write_paused:
            return  # resume_writing goes on with the queue
        if self.transport is not None and len(self.pending) <= 16:
            self.transport.resume_reading()
        if self.pending:
            self._handle(self.pending.popleft())
        self._maybe_continue()

    # -- timers ----------------------------------------------------------------------------
    def sweep(self, now: float, limits: HttpLimits) -> None:
        """Enforce the head deadline and the idle timeout (called every few seconds)."""
        if self.lingering or self.closed:
            return
        if self.head_since and now - self.head_since > limits.head_timeout_s:
            self._reject(RequestTimeoutError(f"request head not complete within {limits.head_timeout_s:g}s"))
        elif self.busy or self.pending or now - self.last_active <= limits.keepalive_s:
            return
        elif self.request is not None:  # stopped inside a body
            self._reject(RequestTimeoutError(f"request body not complete: nothing arrived for {limits.keepalive_s:g}s"))
        else:
            self._close()

    def close_if_idle(self) -> None:
        if not self.busy and not self.pending:
            self._close()


class _AsgiAnswer:
    """The ``send`` side of one ASGI request: a whole answer in one write, or a stream."""

    __slots__ = ("complete", "connection", "declared", "headers", "keep_alive", "request", "sent", "status", "stream")

    def __init__(self, connection: _Connection, request: _Request) -> None:
        self.connection = connection
        self.request = request
        self.status: int | None = None
        self.headers: Headers = []
        self.complete = False
        self.keep_alive = True
        """False when the stream's end can only be told by closing the connection."""
        self.stream: str | None = None
        """Once streaming: ``"chunked"``, ``"length"`` (the app's content-length), ``"close"``
        (an HTTP/1.0 client) or ``"none"`` (HEAD, 204, 304: headers only)."""
        self.declared: int | None = None
        self.sent = 0

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            # The server frames the answer: an app's transfer-encoding would contradict it.
            self.headers = [
                (name, bytes(v)) for n, v in message.get("headers", []) if (name := bytes(n).lower()) != b"transfer-encoding"
            ]
            return
        if kind != "http.response.body":
            return
        if self.status is None or self.complete:
            raise RuntimeError("http.response.body out of order")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        connection = self.connection
        if self.stream is None:
            if not more:
                self.complete = True
                self._write_whole(body)
                return
            self._start_stream()
        self._write_part(body)
        if not more:
            self.complete = True
            self._end_stream()
        await connection._drain()

    def _write_whole(self, body: bytes) -> None:
        assert self.status is not None
        status, request = self.status, self.request
        declared = _declared_length(self.headers)
        if declared is not None and not request.head and not _no_body(status) and declared != len(body):
            log.error("the app declared content-length %d for a body of %d bytes (%s %r)",
                      declared, len(body), request.method, request.path)
            status, headers, body = _error_response(InternalError("the app's answer does not match its content-length"))
            self.connection._write(status, headers, body, False)
            self.keep_alive = False
            return
        self.connection._write(status, self.headers, body, self.request.keep_alive, request.head)

    def _start_stream(self) -> None:
        assert self.status is not None
        status, request = self.status, self.request
        headers = list(self.headers)
        keep_alive = request.keep_alive
        self.declared = _declared_length(headers)
        if _no_body(status):
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            self.stream = "none"
        elif self.declared is not None:
            self.stream = "length"
        elif request.http_version == "1.1":
            headers.append((b"transfer-encoding", b"chunked"))
            self.stream = "chunked"
        else:
            keep_alive = self.keep_alive = False  # an HTTP/1.0 client reads until the close
            self.stream = "close"
        if request.head:
            self.stream = "none"
        parts = [_status_line(status)]
        parts.extend(b"%s: %s\r\n" % (n, v) for n, v in headers)
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.connection._write_raw(b"".join(parts))

    def _write_part(self, body: bytes) -> None:
        if not body or self.stream == "none":
            return
        self.sent += len(body)
        if self.stream == "chunked":
            self.connection._write_raw(b"%x\r\n%s\r\n" % (len(body), body))
            return
        if self.declared is not None and self.sent > self.declared:
            raise RuntimeError(f"the app sent more than its content-length of {self.declared} bytes")
        self.connection._write_raw(body)

    def _end_stream(self) -> None:
        if self.stream == "chunked":
            self.connection._write_raw(b"0\r\n\r\n")
        elif self.stream == "length" and self.sent != self.declared:
            self.keep_alive = False  # short of its content-length: only closing tells the client


class HttpServer:
    """Serve an ASGI app (plus its optional ``fast_path``) on ``host:port``."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_shutdown_s: float = 5.0,
        limits: HttpLimits = DEFAULT_LIMITS,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
        backlog: int = 2048,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        """Serve TLS with this context (``--tls-cert``/``--tls-key``); ``None``: plain HTTP."""
        self.fast_path: FastPath | None = getattr(app, "fast_path", None)
        self.host, self.port = host, port
        self.graceful_shutdown_s = graceful_shutdown_s
        self.limits = limits
        self.max_connections = limits.max_connections
        """The cap in force: ``limits.max_connections``, lowered when the process may not
        open that many files."""
        self.before_shutdown = before_shutdown
        self.backlog = backlog
        self.reuse_port = reuse_port
        """Bind with SO_REUSEPORT: several processes serve one port (``--workers``)."""
        self.connections: set[_Connection] = set()
        self.refused: set[_Connection] = set()
        """Connections over the cap, answered 503 and lingering until closed."""
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in serve()
        self._exit: asyncio.Event | None = None
        self._force = False
        self._draining: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self._all_closed: asyncio.Event | None = None
        """Set once stopping and every connection is closed."""
        self._lifespan: _Lifespan | None = None

    # -- running ----------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (blocks), on uvloop."""
        import uvloop

        uvloop.run(self.serve(install_signal_handlers=True))

    async def serve(self, *, install_signal_handlers: bool = False, ready: Callable[[int], None] | None = None) -> None:
        """Serve until :meth:`request_exit`; ``ready(port)`` is called once accepting."""
        self.loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        self._idle = asyncio.Event()
        self._all_closed = asyncio.Event()
        self.max_connections = connection_cap(self.limits.max_connections)
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.startup()
        try:
            server = await self.loop.create_server(
                lambda: _Connection(self), self.host, self.port, backlog=self.backlog, reuse_address=True,
                reuse_port=self.reuse_port or None, ssl=self.ssl_context,
            )
        except BaseException:
            await self._lifespan.shutdown()
            raise
        self.port = server.sockets[0].getsockname()[1]
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, self.handle_signal, sig)
        sweeper = self.loop.create_task(self._sweep())
        if ready is not None:
            ready(self.port)
        try:
            await self._exit.wait()
        finally:
            sweeper.cancel()
            await self._shutdown(server)
            if install_signal_handlers:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.loop.remove_signal_handler(sig)

    def handle_signal(self, sig: int) -> None:
        if sig == signal.SIGTERM and self.before_shutdown is not None and self._draining is None and not self.stopping:
            self._draining = self.loop.create_task(self._drain_then_exit())
            return
        if self.stopping or self._draining is not None:
            self._force = True  # a second signal: do not wait any longer
        self.request_exit()

    async def _drain_then_exit(self) -> None:
        assert self.before_shutdown is not None
        try:
            await self.before_shutdown()
        except Exception:
            log.exception("draining failed; shutting down anyway")
        finally:
            self.request_exit()

    def request_exit(self) -> None:
        """Stop: from inside the loop (thread-safe via ``loop.call_soon_threadsafe``)."""
        if self._exit is not None:
            self._exit.set()

    def connection_closed(self) -> None:
        """While stopping: a connection is closed (and maybe the last one)."""
        if not self.connections and not self.refused and self._all_closed is not None:
            self._all_closed.set()

    def request_done(self) -> None:
        if self.stopping and self._idle is not None and not any(c.busy for c in self.connections):
            self._idle.set()

    async def _sweep(self) -> None:
        limits = self.limits
        interval = max(0.01, min(_SWEEP_S, limits.keepalive_s / 4, limits.head_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now, limits)

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        self.stopping = True
        server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
            if connection.busy:
                connection._signal_disconnect()  # long polls and streams end now
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()
        assert self._idle is not None
        if any(c.busy for c in self.connections) and not self._force:
            try:
                await asyncio.wait_for(self._idle.wait(), self.graceful_shutdown_s)
            except TimeoutError:
                log.warning("%d request(s) still running after %.1fs; cancelling",
                            sum(c.busy for c in self.connections), self.graceful_shutdown_s)
        cancelled = []
        for connection in [*self.connections, *self.refused]:
            if connection.task is not None and not connection.task.done():
                connection.task.cancel()
                cancelled.append(connection.task)
            connection._close()
        if cancelled:
            # A cancelled request's own clean-up (closing its clients, ending its streams)
            # runs before the lifespan shutdown and the loop's end, not cut off by them.
            _, stuck = await asyncio.wait(cancelled, timeout=CANCELLED_REQUESTS_WAIT_S)
            if stuck:
                log.warning("%d cancelled request(s) still running after %.1fs", len(stuck), CANCELLED_REQUESTS_WAIT_S)
        # A connection still open now waits to flush to a client that does not read, or
        # lingers to let its client read an answer: cut it, so that nothing outlives the server.
        for connection in [*self.connections, *self.refused]:
            if connection.transport is not None:
                connection.transport.abort()
        assert self._all_closed is not None
        self.connection_closed()
        with contextlib.suppress(TimeoutError):  # each connection_lost says its transport is closed
            await asyncio.wait_for(self._all_closed.wait(), CANCELLED_REQUESTS_WAIT_S)
        assert self._lifespan is not None
        await self._lifespan.shutdown()


def connection_cap(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many files.

    Beyond the file limit ``accept`` fails and new clients hang unanswered, which is
    what the cap is there to prevent; so the soft limit is raised toward the hard one
    first, and a cap still over it is lowered (with a warning)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    cap = max(1, soft - _FD_RESERVE)
    log.warning("at most %d open files allowed: serving at most %d connections instead of %d", soft, cap, wanted)
    return cap


class _Lifespan:
    """Drives an app's ASGI lifespan: startup must complete, shutdown is awaited."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failure: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        waiter = asyncio.ensure_future(self.started.wait())
        await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.failure is not None:
            raise RuntimeError(f"application start-up failed: {self.failure}")
        if not self.started.is_set():
            raise RuntimeError("application start-up failed: the lifespan ended before starting")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        waiter = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except Exception as exc:
            if not self.started.is_set():
                self.failure = repr(exc)
            log.exception("lifespan of the application failed")

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = str(message.get("message", "")) or "startup failed"
            self.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.stopped.set()
