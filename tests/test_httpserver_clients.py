"""venice.httpserver with clients nobody on this project wrote: curl, wrk, Python's
http.client, and a Starlette app streaming Server-Sent Events through it."""

from __future__ import annotations

import asyncio
import http.client
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.router.fakes import read_body, serve_in_thread
from venice.httpserver import HttpLimits, HttpServer

LIMIT = 64 * 1024


class Echo:
    """``/fast/<text>`` on the fast path; everything else echoes method, path and body through ASGI."""

    def fast_path(self, method: str, path: bytes, query: bytes, body: bytes) -> Any:
        if path.startswith(b"/fast/"):
            return 200, [(b"content-type", b"text/plain")], path[6:]
        return None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        if scope["path"] == "/chunks":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"<%d>" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = orjson.dumps({"method": scope["method"], "path": scope["path"], "size": len(body),
                               "head": body[:20].decode("latin-1")})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_thread(HttpServer(Echo(), port=0, limits=HttpLimits(max_body_bytes=LIMIT))) as base:
        yield base


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (deploy/setup.sh installs it)")
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, timeout=60)


class TestCurl:
    def test_http2_upgrade_attempt_is_answered_over_http_1_1(self, url: str) -> None:
        fast = curl("--http2", "-i", url + "/fast/up")
        assert fast.returncode == 0, fast.stderr
        assert fast.stdout.startswith("HTTP/1.1 200 ") and fast.stdout.endswith("up")
        asgi = curl("--http2", url + "/asgi")
        assert asgi.returncode == 0, asgi.stderr
        assert orjson.loads(asgi.stdout) == {"method": "GET", "path": "/asgi", "size": 0, "head": ""}

    def test_http2_upgrade_attempt_with_a_body(self, url: str) -> None:
        posted = curl("--http2", "-d", "hello=world", url + "/form")
        assert posted.returncode == 0, posted.stderr
        assert orjson.loads(posted.stdout) == {"method": "POST", "path": "/form", "size": 11, "head": "hello=world"}

    def test_head_with_dash_capital_i(self, url: str) -> None:
        """Two HEADs on one connection, then a GET: curl warns about (and drops) any body
        a HEAD answer carries, and the GET would read it as its own."""
        result = curl("-I", url + "/fast/abc", url + "/fast/abc", "-w", "%{num_connects}\n")
        assert result.returncode == 0, result.stderr
        assert "Excess" not in result.stderr
        assert result.stdout.count("HTTP/1.1 200 OK") == 2
        assert re.findall(r"content-length: (\d+)", result.stdout) == ["3", "3"]
        assert re.findall(r"^(\d+)$", result.stdout, re.MULTILINE) == ["1", "0"]  # the second HEAD reused the connection

    def test_expect_100_continue_gets_its_interim_answer(self, url: str, tmp_path: Path) -> None:
        body = tmp_path / "body.bin"
        body.write_bytes(b"x" * 5000)
        result = curl("-v", "--expect100-timeout", "10", "-H", "Expect: 100-continue",
                      "--data-binary", f"@{body}", url + "/upload")
        assert result.returncode == 0, result.stderr
        assert "< HTTP/1.1 100 Continue" in result.stderr
        assert orjson.loads(result.stdout)["size"] == 5000

    def test_a_body_over_the_limit_is_refused_before_it_is_sent(self, url: str, tmp_path: Path) -> None:
        body = tmp_path / "big.bin"
        body.write_bytes(b"y" * (LIMIT * 4))
        result = curl("-v", "--expect100-timeout", "10", "-H", "Expect: 100-continue",
                      "--data-binary", f"@{body}", url + "/upload")
        assert "100 Continue" not in result.stderr
        assert "< HTTP/1.1 413 " in result.stderr
        assert orjson.loads(result.stdout)["error"]["code"] == "BODY_TOO_LARGE"
        assert "upload completely sent off" not in result.stderr


def test_http_client_reads_a_streamed_answer_and_keeps_the_connection(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        client.request("GET", "/chunks")
        streamed = client.getresponse()
        assert streamed.getheader("transfer-encoding") == "chunked"
        assert streamed.read() == b"<0><1><2>"
        client.request("HEAD", "/fast/xyz")
        head = client.getresponse()
        assert (head.status, head.getheader("content-length"), head.read()) == (200, "3", b"")
        client.request("POST", "/after", body=b"q" * 100)
        assert orjson.loads(client.getresponse().read())["size"] == 100
    finally:
        client.close()


def test_wrk_sees_no_errors(url: str) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (the benchmark installs it with apt-get)")
    result = subprocess.run(["wrk", "-t1", "-c8", "-d1s", url + "/fast/wrk"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    requests = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    assert requests > 0
    assert "Socket errors" not in result.stdout and "Non-2xx" not in result.stdout


class TestServerSentEvents:
    """Starlette's StreamingResponse (what the controller dashboard and ``/changes`` use)."""

    @pytest.fixture
    def events(self) -> Iterator[tuple[str, threading.Event]]:
        finished = threading.Event()

        async def stream(request: Request) -> StreamingResponse:
            async def generate() -> AsyncIterator[bytes]:
                try:
                    for i in range(10_000):
                        yield b"data: %d\n\n" % i
                        await asyncio.sleep(0.01)
                finally:
                    finished.set()

            return StreamingResponse(generate(), media_type="text/event-stream")

        app = Starlette(routes=[Route("/events", stream)])
        with serve_in_thread(HttpServer(app, port=0)) as base:
            yield base, finished

    def test_events_arrive_one_by_one_and_stop_when_the_client_leaves(self, events: tuple[str, threading.Event]) -> None:
        base, finished = events
        host, port = base.removeprefix("http://").split(":")
        client = http.client.HTTPConnection(host, int(port), timeout=10)
        client.request("GET", "/events")
        response = client.getresponse()
        assert response.getheader("content-type", "").startswith("text/event-stream")
        seen = [response.readline() for _ in range(6)]
        client.close()
        assert seen == [b"data: 0\n", b"\n", b"data: 1\n", b"\n", b"data: 2\n", b"\n"]
        assert finished.wait(10), "the generator still runs after the client left"
