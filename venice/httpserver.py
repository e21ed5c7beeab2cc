"""A lean HTTP/1.1 server for the platform's raw ASGI apps (storage server and router).

Why not uvicorn on the read path: on this kind of machine uvicorn with uvloop and
httptools answers a trivial raw ASGI app at ~46k requests/s under wrk, while a bare
``asyncio.Protocol`` on the same httptools parser answers ~200k/s; a py-spy profile of
the storage server showed 60% of its CPU inside uvicorn's per-request machinery
(see ``bench/README.md``). This server keeps the ASGI interface, so the apps stay
plain ASGI (and testable under any ASGI server), and adds one thing: an app may
expose ``fast_path(method, raw_path, query, body)``, a *synchronous* handler tried first; when
it returns ``(status, headers, body)`` the answer is written at once, with no task,
no scope and no ASGI messages; when it returns an awaitable of that (an answer that
needs I/O, like the router's), one task awaits it, still without ASGI. It returns
``None`` for anything it does not handle. A :class:`venice.errors.VeniceError` it
raises becomes the platform's JSON error answer.

What it implements (all our apps need, nothing more):

* the ASGI ``lifespan`` protocol (startup must succeed or the server does not start);
* HTTP/1.1 keep-alive and HTTP/1.0, request bodies by length or chunked (httptools
  decodes them), pipelined requests answered in order, one at a time per connection;
* answers written whole, with a ``content-length`` (an app's streamed body is
  buffered: our answers are small or needed whole);
* malformed requests get a 400 in the platform's JSON error shape and the connection
  is closed; a body over ``max_body_bytes`` gets a 413; an app that raises gets a 500;
* a client that does not read its answers stops being read from (and answered) once
  the send buffer passes the transport's high-water mark, so memory stays bounded;
* idle keep-alive connections are closed after ``keepalive_s``;
* SIGINT/SIGTERM: stop accepting, finish requests in flight (up to
  ``graceful_shutdown_s``), close the rest, run the lifespan shutdown. With
  ``before_shutdown`` set, the first SIGTERM runs it first (the storage server drains
  there) while still serving; a second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import http
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from venice.errors import InternalError, RequestError, VeniceError, error_body

__all__ = ["HttpServer"]

log = logging.getLogger("venice.http")

Headers = list[tuple[bytes, bytes]]
FastResponse = tuple[int, Headers, bytes]
FastPath = Callable[[str, bytes, bytes, bytes], FastResponse | Awaitable[FastResponse] | None]

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}
_JSON = (b"content-type", b"application/json")
_SWEEP_S = 5.0


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def _encode(status: int, headers: Headers, body: bytes, keep_alive: bool) -> bytes:
    parts = [_status_line(status)]
    has_length = False
    for name, value in headers:
        if name == b"content-length":
            has_length = True
        parts.append(b"%s: %s\r\n" % (name, value))
    if not has_length:
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def _error_response(error: VeniceError) -> tuple[int, Headers, bytes]:
    return error.http_status, [_JSON], error_body(error)


def _failure_response(exc: Exception, request: _Request) -> tuple[int, Headers, bytes]:
    """The answer to a fast path that raised: the platform's error, or a logged 500."""
    if isinstance(exc, VeniceError):
        return _error_response(exc)
    log.exception("unexpected error serving %s %r", request.method, request.url, exc_info=exc)
    return _error_response(InternalError("unexpected error"))


class _Request:
    """One parsed request; ``path`` (raw, still percent-encoded) is ``None`` when the URL
    does not parse."""

    __slots__ = ("body", "chunks", "headers", "http_version", "keep_alive", "method", "path", "query", "url")

    def __init__(self) -> None:
        self.url = b""
        self.path: bytes | None = None
        self.query = b""
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.body = b""
        self.method = "GET"
        self.keep_alive = True
        self.http_version = "1.1"

    def complete(self, parser: httptools.HttpRequestParser) -> None:
        """Fill in what the parser knows once the whole request is in."""
        self.method = parser.get_method().decode("ascii", "replace")
        self.keep_alive = parser.should_keep_alive()
        self.http_version = parser.get_http_version()
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
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.request: _Request | None = None
        self.body_bytes = 0
        self.pending: deque[_Request] = deque()
        self.busy = False
        self.write_paused = False
        """The transport's send buffer is over its high-water mark: read and answer no
        more until the client has taken some (a slow reader cannot make us buffer
        answers without bound)."""
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.disconnected: asyncio.Future[None] | None = None
        self.last_active = time.monotonic()
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None

    # -- transport callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.sockname = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(RequestError("protocol upgrades are not supported"), 400)
        except httptools.HttpParserError as exc:
            if self.body_bytes > self.server.max_body_bytes:  # raised from on_body, wrapped by httptools
                self._reject(RequestError(f"request body over {self.server.max_body_bytes} bytes"), 413)
            else:
                self._reject(RequestError(f"malformed HTTP request: {exc}"), 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.busy or self.closed:
            return  # the request in progress picks the queue up when it finishes
        if self.pending:
            self._handle(self.pending.popleft())
        if not self.write_paused and not self.busy and self.transport is not None and len(self.pending) <= 16:
            self.transport.resume_reading()

    def _reject(self, error: VeniceError, status: int) -> None:
        """A broken request: answer it (if no answer is being written) and close."""
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            body = error_body(error)
            self.transport.write(_encode(status, [_JSON], body, keep_alive=False))
        self.pending.clear()
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.request = _Request()
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.request.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        assert self.request is not None
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body_bytes:
            raise httptools.HttpParserError("request body too large")
        self.request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.request = None
        request.complete(self.parser)
        if self.busy or self.write_paused:
            self.pending.append(request)
            if self.transport is not None and len(self.pending) > 16:
                self.transport.pause_reading()  # a client pipelining far ahead waits
            return
        self._handle(request)

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
                if type(answer) is not tuple:  # a coroutine: the answer needs I/O
                    self.busy = True
                    self.task = self.loop.create_task(self._run_fast(answer, request))
                    return
                self._write(answer[0], answer[1], answer[2], request.keep_alive)
                if not request.keep_alive or self.closed:
                    self._close()
                    return
                if not self.pending or self.write_paused:
                    return  # resume_writing goes on with the queue
                request = self.pending.popleft()
                continue
            self.busy = True
            self.task = self.loop.create_task(self._run_asgi(request))
            return

    def _write(self, status: int, headers: Headers, body: bytes, keep_alive: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode(status, headers, body, keep_alive))
        self.last_active = time.monotonic()

    async def _run_fast(self, answer: Awaitable[FastResponse], request: _Request) -> None:
        keep_alive = request.keep_alive
        try:
            try:
                status, headers, body = await answer
            except Exception as exc:  # noqa: BLE001 - any failure becomes an answer, logged when unexpected
                status, headers, body = _failure_response(exc, request)
                keep_alive = keep_alive and isinstance(exc, VeniceError)
            self._write(status, headers, body, keep_alive)
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
        body = request.body
        received = False
        status: int | None = None
        headers: Headers = []
        chunks: list[bytes] = []
        complete = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            if self.disconnected is None:
                self.disconnected = self.loop.create_future()
                if self.closed:
                    self.disconnected.set_result(None)
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers, complete
            kind = message["type"]
            if kind == "http.response.start":
                if status is not None:
                    raise RuntimeError("http.response.start sent twice")
                status = int(message["status"])
                headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", [])]
            elif kind == "http.response.body":
                if status is None or complete:
                    raise RuntimeError("http.response.body out of order")
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    complete = True
                    self._write(status, headers, b"".join(chunks), request.keep_alive)

        keep_alive = request.keep_alive
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            keep_alive = False
            raise
        except Exception:
            log.exception("unexpected error serving %s %r", request.method, raw_path)
            if status is None:
                code, error_headers, error = _error_response(InternalError("unexpected error"))
                self._write(code, error_headers, error, False)
            keep_alive = False
        else:
            if not complete:  # the app returned without finishing its answer
                if status is None:
                    code, error_headers, error = _error_response(InternalError("no answer from the app"))
                    self._write(code, error_headers, error, False)
                keep_alive = False
        finally:
            self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self.busy = False
        self.task = None
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

    def close_if_idle(self, now: float, idle_s: float) -> None:
        if not self.busy and not self.pending and (idle_s <= 0 or now - self.last_active > idle_s):
            self._close()


class HttpServer:
    """Serve an ASGI app (plus its optional ``fast_path``) on ``host:port``."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_shutdown_s: float = 5.0,
        keepalive_s: float = 60.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
        backlog: int = 2048,
    ) -> None:
        self.app = app
        self.fast_path: FastPath | None = getattr(app, "fast_path", None)
        self.host, self.port = host, port
        self.graceful_shutdown_s = graceful_shutdown_s
        self.keepalive_s = keepalive_s
        self.max_body_bytes = max_body_bytes
        self.before_shutdown = before_shutdown
        self.backlog = backlog
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in serve()
        self._exit: asyncio.Event | None = None
        self._force = False
        self._draining: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
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
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.startup()
        try:
            server = await self.loop.create_server(
                lambda: _Connection(self), self.host, self.port, backlog=self.backlog, reuse_address=True
            )
        except BaseException:
            await self._lifespan.shutdown()
            raise
        self.port = server.sockets[0].getsockname()[1]
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, self.handle_signal, sig)
        sweeper = self.loop.create_task(self._sweep_idle())
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

    def request_done(self) -> None:
        if self.stopping and self._idle is not None and not any(c.busy for c in self.connections):
            self._idle.set()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.close_if_idle(now, self.keepalive_s)

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        self.stopping = True
        server.close()
        for connection in list(self.connections):
            connection.close_if_idle(0.0, 0.0)
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()
        assert self._idle is not None
        if any(c.busy for c in self.connections) and not self._force:
            try:
                await asyncio.wait_for(self._idle.wait(), self.graceful_shutdown_s)
            except TimeoutError:
                log.warning("%d request(s) still running after %.1fs; cancelling",
                            sum(c.busy for c in self.connections), self.graceful_shutdown_s)
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
            connection._close()
        await asyncio.sleep(0)  # let the transports finish closing
        assert self._lifespan is not None
        await self._lifespan.shutdown()


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
