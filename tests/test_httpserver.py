"""venice.httpserver: the HTTP/1.1 server under the storage servers and routers."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest

from tests.rawhttp import connect, header, read_response, read_until, read_until_close
from tests.router.fakes import read_body, serve_in_thread
from venice.errors import KeyNotFoundError
from venice.httpserver import Deferred, HttpLimits, HttpServer

FIXED = b"a fixed answer"
NO_BODY = b"this body must never be sent"


class App:
    """ASGI app with a fast path: ``/fast/<text>`` (sync), ``/io/<text>`` (awaited),
    ``/later/<text>`` (a Deferred resolved 10 ms later by a timer; ``missing``: failed
    with a KeyNotFoundError, ``boom``: with a RuntimeError), ``/now/<text>`` (a Deferred
    resolved before it is returned), ``/code/<status>`` (sync, any status); everything
    else through ASGI (echo, slow, boom, nothing, fixed, status, stream, burst, sse)."""

    def __init__(self) -> None:
        self.asgi_calls = 0
        self.fast_calls = 0
        self.events: list[str] = []
        self.fail_startup = False
        self.acks = [threading.Event() for _ in range(8)]
        """``/stream/N`` sends chunk i+1 only once the test has set ``acks[i]``."""
        self.stream_done = threading.Event()
        self.disconnected = threading.Event()
        """Set when ``/sse`` saw ``http.disconnect`` from ``receive()``."""
        self.sse_sent = 0

    def fast_path(self, method: str, path: bytes, query: bytes, body: bytes) -> Any:
        if path.startswith(b"/fast/"):
            self.fast_calls += 1
            if path == b"/fast/missing":
                raise KeyNotFoundError("no such key")
            return 200, [(b"content-type", b"text/plain")], path[6:] + b"?" + query + body
        if path.startswith(b"/io/"):
            self.fast_calls += 1
            return self._io(path[4:])
        if path.startswith(b"/code/"):
            self.fast_calls += 1
            return int(path[6:]), [(b"content-length", b"%d" % len(NO_BODY))], NO_BODY
        if path.startswith(b"/pre/"):  # pre-encoded headers
            self.fast_calls += 1
            return int(path[5:]), b"content-type: text/plain\r\nx-pre: 1\r\n", b"pre-encoded"
        if path.startswith((b"/later/", b"/now/")):
            self.fast_calls += 1
            deferred = Deferred()
            text = path.split(b"/", 2)[2]
            if path.startswith(b"/now/"):
                deferred.resolve(200, [], text)
            else:
                asyncio.get_running_loop().call_later(0.01, self._settle_later, deferred, text)
            return deferred
        return None

    @staticmethod
    def _settle_later(deferred: Deferred, text: bytes) -> None:
        if text == b"missing":
            deferred.fail(KeyNotFoundError("no such key, later"))
        elif text == b"boom":
            deferred.fail(RuntimeError("bug, later"))
        else:
            deferred.resolve(200, [(b"x-later", b"1")], text)

    async def _io(self, text: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        await asyncio.sleep(0.01)
        if text == b"boom":
            raise RuntimeError("bug")
        return 200, [], text

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.events.append("startup")
                    if self.fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.asgi_calls += 1
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("bug in the app")
        if path == "/nothing":
            return
        if path == "/stubborn":  # ignores the disconnect; its clean-up takes a while
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.05)
                self.events.append("cleaned up")
        if path.startswith("/slow/"):
            await asyncio.sleep(float(path[6:]))
        if path == "/fixed":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(FIXED))]})
            await send({"type": "http.response.body", "body": FIXED})
            return
        if path.startswith("/status/"):
            await send({"type": "http.response.start", "status": int(path[8:]),
                        "headers": [(b"content-length", b"%d" % len(NO_BODY))]})
            await send({"type": "http.response.body", "body": NO_BODY})
            return
        if path.startswith("/stream/"):
            await self._stream(int(path[8:]), send)
            return
        if path == "/burst":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"part %d;" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/sse":
            await self._sse(receive, send)
            return
        body = await read_body(receive)
        answer = orjson.dumps({"method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode(),
                               "query": scope["query_string"].decode(), "body": body.decode()})
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer[:5], "more_body": True})
        await send({"type": "http.response.body", "body": answer[5:]})


    async def _stream(self, count: int, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            # The next chunk only once the client has the previous one: a server that
            # buffers the stream leaves the client waiting (and the test failing).
            await asyncio.to_thread(self.acks[i].wait, 10)
        await send({"type": "http.response.body", "body": b""})
        self.stream_done.set()

    async def _sse(self, receive: Any, send: Any) -> None:
        """Events until the client leaves, as Starlette's StreamingResponse runs them."""
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def events() -> None:
            while True:
                self.sse_sent += 1
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % self.sse_sent, "more_body": True})
                await asyncio.sleep(0.01)

        streaming = asyncio.ensure_future(events())
        try:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
        finally:
            streaming.cancel()


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def url(app: App) -> Iterator[str]:
    with serve_in_thread(HttpServer(app, port=0, limits=HttpLimits(max_body_bytes=1000))) as base:
        yield base


def raw_exchange(url: str, data: bytes, *, wait_s: float = 1.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        return received


def test_asgi_requests_with_bodies_over_one_keep_alive_connection(url: str, app: App) -> None:
    with httpx.Client(base_url=url) as http:
        for i in range(3):
            response = http.post(f"/echo/a%2Fb?x={i}", content=b"payload %d" % i)
            assert response.status_code == 201
            # The app sends its answer in two parts: each is written as it comes.
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.json() == {"method": "POST", "path": "/echo/a/b", "raw_path": "/echo/a%2Fb",
                                       "query": f"x={i}", "body": f"payload {i}"}
    assert app.asgi_calls == 3 and app.fast_calls == 0


def test_fast_path_answers_without_asgi_and_maps_errors(url: str, app: App) -> None:
    with httpx.Client(base_url=url) as http:
        assert http.get("/fast/hello?q=1").text == "hello?q=1"
        missing = http.get("/fast/missing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "KEY_NOT_FOUND"
        assert http.get("/io/later").text == "later"
        failed = http.get("/io/boom")
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "INTERNAL"
    assert app.asgi_calls == 0 and app.fast_calls == 4


def test_app_errors_become_json_500s(url: str) -> None:
    for path in ("/boom", "/nothing"):
        response = httpx.get(url + path)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "INTERNAL"


def test_malformed_request_gets_a_400_and_the_connection_closes(url: str) -> None:
    answer = raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "BAD_REQUEST"


def test_a_body_over_the_limit_gets_a_413(url: str, app: App) -> None:
    response = httpx.post(url + "/echo", content=b"x" * 5000)
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["error"]["message"]
    assert app.asgi_calls == 0


def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    requests = (b"GET /slow/0.05 HTTP/1.1\r\nHost: x\r\n\r\n" b"GET /fast/second HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /io/third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = raw_exchange(url, requests, wait_s=2.0)
    assert answer.count(b"HTTP/1.1 ") == 3
    assert answer.index(b"/slow/0.05") < answer.index(b"second?") < answer.index(b"third")
    assert answer.rstrip().endswith(b"third")


def test_deferred_answers_are_written_when_resolved_in_request_order(url: str, app: App) -> None:
    requests = (b"GET /later/first HTTP/1.1\r\nHost: x\r\n\r\n" b"GET /now/second HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /slow/0.05 HTTP/1.1\r\nHost: x\r\n\r\n" b"GET /later/fourth HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /later/fifth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = raw_exchange(url, requests, wait_s=2.0)
    heads = answer.split(b"HTTP/1.1 ")[1:]
    assert [h.split(b"\r\n", 1)[0] for h in heads] == [b"200 OK", b"200 OK", b"201 Created", b"200 OK", b"200 OK"]
    assert heads[0].endswith(b"\r\n\r\nfirst") and b"x-later: 1" in heads[0]
    assert heads[1].endswith(b"\r\n\r\nsecond")
    assert b"/slow/0.05" in heads[2]
    assert heads[3].endswith(b"\r\n\r\nfourth")
    assert b"content-length: 5\r\n" in heads[4] and b"connection: close" in heads[4] and heads[4].endswith(b"\r\n\r\n")
    assert app.fast_calls == 4 and app.asgi_calls == 1


def test_deferred_errors_become_answers(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        missing = client.get("/later/missing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "KEY_NOT_FOUND"
        assert client.get("/later/again").text == "again"  # the connection stayed open
    answer = raw_exchange(url, b"GET /later/boom HTTP/1.1\r\nHost: x\r\n\r\nGET /fast/never HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ") and b'"INTERNAL"' in answer and b"connection: close" in answer
    assert b"never" not in answer  # an unexpected failure closes the connection


async def test_a_deferred_can_be_awaited() -> None:
    loop = asyncio.get_running_loop()
    later = Deferred()
    loop.call_later(0.01, later.resolve, 201, [(b"a", b"b")], b"body")
    assert await later == (201, [(b"a", b"b")], b"body")
    settled = Deferred()
    settled.resolve(200, [], b"at once")
    assert await settled == (200, [], b"at once")
    failed = Deferred()
    loop.call_later(0.01, failed.fail, KeyNotFoundError("gone"))
    with pytest.raises(KeyNotFoundError, match="gone"):
        await failed


@contextlib.asynccontextmanager
async def _serving(server: HttpServer) -> AsyncIterator[tuple[asyncio.Task[None], httpx.AsyncClient]]:
    """``server`` serving in this test's event loop, and a client of it."""
    serving = asyncio.create_task(server.serve())
    while not server.port:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        yield serving, http


async def test_shutdown_waits_for_a_deferred_answer(app: App) -> None:
    server = HttpServer(app, port=0, graceful_shutdown_s=5)
    async with _serving(server) as (serving, http):
        later = asyncio.create_task(http.get("/later/in-flight"))
        while app.fast_calls == 0:
            await asyncio.sleep(0.001)
        server.request_exit()
        response = await later
    assert response.status_code == 200 and response.text == "in-flight"
    await asyncio.wait_for(serving, 5)


def test_pre_encoded_headers_are_written_as_they_are(url: str) -> None:
    answer = raw_exchange(url, b"GET /pre/200 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /pre/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                               b"GET /pre/204 HTTP/1.1\r\nHost: x\r\n\r\nGET /pre/404 HTTP/1.0\r\n\r\n")
    head = b"content-type: text/plain\r\nx-pre: 1\r\ncontent-length: 11\r\n"
    assert answer == (
        b"HTTP/1.1 200 OK\r\n" + head + b"\r\npre-encoded"
        + b"HTTP/1.1 200 OK\r\n" + head + b"\r\n"  # HEAD: the length, no body
        + b"HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\nx-pre: 1\r\n\r\n"  # no length, no body
        + b"HTTP/1.1 404 Not Found\r\n" + head + b"connection: close\r\n\r\npre-encoded"
    )


def test_http_1_0_closes_after_the_answer(url: str) -> None:
    answer = raw_exchange(url, b"GET /fast/old HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer and answer.endswith(b"old?")


def test_lifespan_runs_around_serving(app: App) -> None:
    with serve_in_thread(HttpServer(app, port=0)) as base:
        assert app.events == ["startup"]
        assert httpx.get(base + "/fast/x").status_code == 200
    assert app.events == ["startup", "shutdown"]


async def test_failed_startup_does_not_serve(app: App) -> None:
    app.fail_startup = True
    with pytest.raises(RuntimeError, match="no database"):
        await HttpServer(app, port=0).serve()


async def test_shutdown_finishes_requests_in_flight(app: App) -> None:
    server = HttpServer(app, port=0, graceful_shutdown_s=5)
    async with _serving(server) as (serving, http):
        slow = asyncio.create_task(http.get("/slow/0.3"))
        await asyncio.sleep(0.1)
        server.request_exit()
        response = await slow
    assert response.status_code == 201
    await asyncio.wait_for(serving, 5)
    assert app.events == ["startup", "shutdown"]


async def test_requests_cancelled_at_shutdown_clean_up_before_the_lifespan_ends(app: App) -> None:
    server = HttpServer(app, port=0, graceful_shutdown_s=0.1)
    async with _serving(server) as (serving, http):
        stubborn = asyncio.create_task(http.get("/stubborn"))
        while app.asgi_calls == 0:
            await asyncio.sleep(0.01)
        server.request_exit()
        await asyncio.wait_for(serving, 10)
        with pytest.raises(httpx.HTTPError):  # closed without an answer
            await stubborn
    assert app.events == ["startup", "cleaned up", "shutdown"]


async def test_first_sigterm_runs_before_shutdown_while_still_serving(app: App) -> None:
    drained: list[int] = []

    async def drain() -> None:
        async with httpx.AsyncClient() as http:  # still answering while draining
            drained.append((await http.get(f"http://127.0.0.1:{server.port}/fast/during")).status_code)

    server = HttpServer(app, port=0, before_shutdown=drain)
    serving = asyncio.create_task(server.serve())
    while not server.port:
        await asyncio.sleep(0.01)
    server.handle_signal(signal.SIGTERM)
    await asyncio.wait_for(serving, 5)
    assert drained == [200]
    assert app.events == ["startup", "shutdown"]


def test_a_client_that_does_not_read_is_not_answered_without_bound(app: App) -> None:
    """Pipelined requests for big answers, unread: the server stops reading and answering
    once its send buffer is full, then serves every one when the client reads."""
    big = b"z" * 1_000_000

    def fast_path(method: str, path: bytes, query: bytes, body: bytes) -> Any:
        app.fast_calls += 1
        return 200, [], big

    app.fast_path = fast_path  # type: ignore[method-assign]
    with serve_in_thread(HttpServer(app, port=0)) as base:
        host, port = base.removeprefix("http://").split(":")
        count = 200
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * count)
            time.sleep(1.0)
            answered_while_unread = app.fast_calls
            assert answered_while_unread < 20  # not 200 MB sitting in the server's buffer
            answer_bytes = len(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n") + len(big)
            received = 0
            while received < count * answer_bytes:
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed early"
                received += len(chunk)
            assert received == count * answer_bytes
        assert app.fast_calls == count


def test_shutdown_cuts_a_client_that_does_not_read(app: App) -> None:
    """Answers a client leaves unread would hold its connection open past the server's end
    (a close waits to flush): shutdown cuts it, and nothing of the server outlives it."""
    big = b"z" * 1_000_000

    def fast_path(method: str, path: bytes, query: bytes, body: bytes) -> Any:
        app.fast_calls += 1
        return 200, [], big

    app.fast_path = fast_path  # type: ignore[method-assign]
    server = HttpServer(app, port=0, graceful_shutdown_s=0.2)
    with serve_in_thread(server) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        while app.fast_calls == 0:
            time.sleep(0.01)
    with sock:
        assert not server.connections
        ended = False
        try:
            while sock.recv(1 << 20):
                pass
            ended = True
        except ConnectionResetError:
            ended = True
        assert ended  # not a recv timeout: the server's side is gone


# -- protocol details a keep-alive client depends on (issue 8, item 8) -------------------------------


def _http_client(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


@pytest.mark.parametrize(("path", "body"), [("/fast/hello?q", b"hello?q"), ("/fixed", FIXED)])
def test_head_answers_have_the_gets_length_and_no_body(url: str, path: str, body: bytes) -> None:
    """http.client knows a HEAD answer has no body: a server that sends one anyway makes
    the next answer on the connection unreadable."""
    client = _http_client(url)
    try:
        client.request("HEAD", path)
        head = client.getresponse()
        assert head.status == 200
        assert head.getheader("content-length") == str(len(body))
        assert head.read() == b""
        client.request("GET", path)
        get = client.getresponse()
        assert (get.status, get.read()) == (200, body)
    finally:
        client.close()
    with connect(url) as sock:
        sock.sendall(b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        answer = read_until_close(sock)
    assert answer.endswith(b"\r\n\r\n") and header(answer, b"content-length") == b"%d" % len(body)


def test_expect_100_continue_is_answered_before_the_body_is_sent(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        buffer = bytearray()
        assert read_until(sock, b"\r\n\r\n", buffer) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        head, body = read_response(sock, buffer)
    assert head.startswith(b"HTTP/1.1 201 ")
    assert orjson.loads(body)["body"] == "hello"


def test_100_continue_comes_after_the_answers_before_its_request(url: str) -> None:
    """Pipelined behind a slow request, the interim answer must not cut into that answer."""
    with connect(url) as sock:
        sock.sendall(b"GET /slow/0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        buffer = bytearray()
        head, body = read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 201 ") and orjson.loads(body)["path"] == "/slow/0.2"
        assert read_until(sock, b"\r\n\r\n", buffer) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"12345")
        head, body = read_response(sock, buffer)
    assert head.startswith(b"HTTP/1.1 201 ") and orjson.loads(body)["body"] == "12345"


@pytest.mark.parametrize("expect", [b"Expect: 100-continue\r\n", b""])
def test_a_body_announced_over_the_limit_gets_a_413_before_it_is_sent(url: str, app: App, expect: bytes) -> None:
    with connect(url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n" + expect + b"\r\n")
        answer = read_until_close(sock)  # no byte of the body was sent
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    assert header(answer, b"connection") == b"close"
    error = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "BODY_TOO_LARGE" and "1000 bytes" in error["message"]
    assert app.asgi_calls == 0


@pytest.mark.parametrize("path", ["/status/204", "/status/304", "/code/204", "/code/304"])
def test_204_and_304_answers_have_no_length_and_no_body(url: str, path: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\nGET /fast/next HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        buffer = bytearray()
        head, _ = read_response(sock, buffer, head_only=True)
        assert head.split(b" ")[1] == path[-3:].encode()
        assert header(head, b"content-length") is None and header(head, b"transfer-encoding") is None
        head, body = read_response(sock, buffer)
    # The next answer follows the empty line at once: no body came in between.
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"next?"


H2C_UPGRADE = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"


@pytest.mark.parametrize("path", ["/fast/up", "/fixed"])
def test_an_upgrade_request_is_answered_as_plain_http_1_1(url: str, path: str) -> None:
    """What ``curl --http2`` sends to an http:// URL; the server keeps speaking HTTP/1.1."""
    with connect(url) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), H2C_UPGRADE)
                     + b"GET /fast/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 200 ") == 2
    assert b"101" not in answer.split(b"\r\n", 1)[0] and answer.endswith(b"next?")


def test_an_upgrade_request_with_a_body_keeps_its_body(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n%sContent-Length: 5\r\n\r\nhello" % H2C_UPGRADE
                     + b"GET /fast/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buffer = bytearray()
        head, body = read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 201 ")
        assert orjson.loads(body)["body"] == "hello"
        head, body = read_response(sock, buffer)
    assert body == b"next?"


# -- streamed answers (issue 8, item 10) -----------------------------------------------------------


def test_streamed_answers_are_written_as_they_come(url: str, app: App) -> None:
    with httpx.Client(base_url=url, timeout=5) as client, client.stream("GET", "/stream/3") as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        received = b""
        chunks = response.iter_raw()
        for i in range(3):
            while not received.endswith(b"chunk %d\n" % i):
                received += next(chunks)
            app.acks[i].set()
        assert b"".join(chunks) == b""
    assert received == b"chunk 0\nchunk 1\nchunk 2\n"
    assert app.stream_done.wait(5)


def test_a_stream_to_an_http_1_0_client_ends_with_the_connection(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /burst HTTP/1.0\r\n\r\n")
        answer = read_until_close(sock)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert header(head, b"transfer-encoding") is None and header(head, b"connection") == b"close"
    assert body == b"part 0;part 1;part 2;"


def test_a_client_leaving_mid_stream_ends_receive_with_disconnect(url: str, app: App) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        buffer = bytearray()
        head = read_until(sock, b"\r\n\r\n", buffer)
        assert header(head, b"content-type") == b"text/event-stream"
        read_until(sock, b"data: 2\n\n", buffer)
    assert app.disconnected.wait(10)
