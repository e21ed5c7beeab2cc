"""venice.httpserver: the HTTP/1.1 server under the storage servers and routers."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest

from tests.router.fakes import read_body, serve_in_thread
from venice.errors import KeyNotFoundError
from venice.httpserver import HttpServer


class App:
    """ASGI app with a fast path: ``/fast/<text>`` (sync), ``/io/<text>`` (awaited),
    everything else through ASGI (echo, slow, boom, nothing)."""

    def __init__(self) -> None:
        self.asgi_calls = 0
        self.fast_calls = 0
        self.events: list[str] = []
        self.fail_startup = False

    def fast_path(self, method: str, path: bytes, query: bytes, body: bytes) -> Any:
        if path.startswith(b"/fast/"):
            self.fast_calls += 1
            if path == b"/fast/missing":
                raise KeyNotFoundError("no such key")
            return 200, [(b"content-type", b"text/plain")], path[6:] + b"?" + query + body
        if path.startswith(b"/io/"):
            self.fast_calls += 1
            return self._io(path[4:])
        return None

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
        if path.startswith("/slow/"):
            await asyncio.sleep(float(path[6:]))
        body = await read_body(receive)
        answer = orjson.dumps({"method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode(),
                               "query": scope["query_string"].decode(), "body": body.decode()})
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer[:5], "more_body": True})
        await send({"type": "http.response.body", "body": answer[5:]})


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def url(app: App) -> Iterator[str]:
    with serve_in_thread(HttpServer(app, port=0, max_body_bytes=1000)) as base:
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
            assert response.headers["content-length"] == str(len(response.content))
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
    serving = asyncio.create_task(server.serve())
    while not server.port:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        slow = asyncio.create_task(http.get("/slow/0.3"))
        await asyncio.sleep(0.1)
        server.request_exit()
        response = await slow
    assert response.status_code == 201
    await asyncio.wait_for(serving, 5)
    assert app.events == ["startup", "shutdown"]


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
