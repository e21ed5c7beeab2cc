"""router.upstream, the router's keep-alive HTTP/1.1 client, against real loopback servers.

uvicorn serves the well-behaved cases (it is what storage servers run); small raw
asyncio servers play the misbehaving ones: closing a kept-alive connection just as it
is reused, answering half, never answering, answering garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
import uvloop

from router.upstream import (
    AnswerTooLarge,
    ConnectFailed,
    ConnectionLost,
    HostPool,
    ProtocolError,
    UpstreamClient,
    UpstreamTimeout,
)
from tests.router.fakes import read_body, refused_url, serve_in_thread


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on the standard loop and on uvloop, which the router runs on."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


async def echo_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
    """``GET /x`` -> ``x``; ``POST`` echoes the body; ``/slow`` waits 0.3 s; ``/close`` asks to close."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(0.3)
    headers = [(b"x-path", path.encode()), (b"x-method", scope["method"].encode())]
    if path == "/close":
        headers.append((b"connection", b"close"))
    answer = body if scope["method"] == "POST" else path[1:].encode()
    status = 404 if path == "/missing" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    config = uvicorn.Config(echo_app, lifespan="off", log_level="warning", access_log=False,
                            timeout_keep_alive=0.3, timeout_graceful_shutdown=0.5)
    with serve_in_thread(config) as url:
        yield url


@contextlib.asynccontextmanager
async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback TCP server running ``handler(reader, writer, connection_number)``."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await handler(reader, writer, len(connections) - 1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_get_reads_status_headers_and_body(echo_url: str) -> None:
    pool = HostPool(echo_url)
    try:
        response = await pool.request("GET", "/hello", timeout=5)
        assert response.status == 200
        assert response.body == b"hello"
        assert response.header(b"x-path") == b"/hello"
        assert response.header(b"x-method") == b"GET"
        missing = await pool.request("GET", "/missing", timeout=5)
        assert missing.status == 404
    finally:
        await pool.aclose()


async def test_post_sends_body_and_headers(echo_url: str) -> None:
    pool = HostPool(echo_url)
    try:
        body = bytes(range(256)) * 1000  # larger than one socket read
        response = await pool.request("POST", "/batch", body, timeout=5, headers={"content-type": "application/octet-stream"})
        assert response.status == 200
        assert response.body == body
        assert response.header(b"x-method") == b"POST"
    finally:
        await pool.aclose()


async def test_sequential_requests_reuse_one_connection(echo_url: str) -> None:
    pool = HostPool(echo_url)
    try:
        for i in range(20):
            assert (await pool.request("GET", f"/k{i}", timeout=5)).body == f"k{i}".encode()
        assert pool.opened == 1
        assert pool.idle_connections == 1
    finally:
        await pool.aclose()


async def test_concurrency_is_capped_by_max_connections(echo_url: str) -> None:
    pool = HostPool(echo_url, max_connections=3)
    try:
        answers = await asyncio.gather(*(pool.request("GET", f"/c{i}", timeout=5) for i in range(30)))
        assert [a.body for a in answers] == [f"c{i}".encode() for i in range(30)]
        assert pool.opened == 3
        assert pool.idle_connections == 3
    finally:
        await pool.aclose()


async def test_server_closing_idle_connections_is_survived(echo_url: str) -> None:
    """uvicorn here closes keep-alive connections idle for 0.3 s."""
    pool = HostPool(echo_url)
    try:
        assert (await pool.request("GET", "/a", timeout=5)).body == b"a"
        await asyncio.sleep(0.6)
        assert pool.idle_connections == 0  # the close was noticed, the connection dropped
        assert (await pool.request("GET", "/b", timeout=5)).body == b"b"
        assert pool.opened == 2
    finally:
        await pool.aclose()


async def test_connection_close_answer_is_not_reused(echo_url: str) -> None:
    pool = HostPool(echo_url)
    try:
        assert (await pool.request("GET", "/close", timeout=5)).body == b"close"
        assert pool.idle_connections == 0
        assert (await pool.request("GET", "/again", timeout=5)).body == b"again"
        assert pool.opened == 2
    finally:
        await pool.aclose()


async def test_closed_at_reuse_is_retried_once_on_a_new_connection() -> None:
    """The server answers once, then closes the kept-alive connection when the next request comes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the reuse: hang up without answering

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            assert (await pool.request("GET", "/1", timeout=5)).body == b"ok"
            assert (await pool.request("GET", "/2", timeout=5)).body == b"ok"
            assert len(connections) == 2
        finally:
            await pool.aclose()


async def test_fresh_connection_closed_before_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            with pytest.raises(ConnectionLost):
                await pool.request("GET", "/", timeout=5)
            assert len(connections) == 1  # a new connection is not retried
        finally:
            await pool.aclose()


async def test_half_an_answer_then_close_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            await pool.request("GET", "/1", timeout=5)
            with pytest.raises(ConnectionLost):
                await pool.request("GET", "/2", timeout=5)
            assert len(connections) == 1
        finally:
            await pool.aclose()


async def test_timeout_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await read_request(reader)
            if number > 0:
                writer.write(OK)  # later connections answer
            else:
                await asyncio.sleep(30)

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                await pool.request("GET", "/", timeout=0.2)
            assert 0.15 < loop.time() - started < 1.0
            assert pool.idle_connections == 0
            assert (await pool.request("GET", "/", timeout=5)).body == b"ok"
            assert len(connections) == 2
        finally:
            await pool.aclose()


async def test_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.2)
            writer.write(OK)

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            task = asyncio.ensure_future(pool.request("GET", "/", timeout=5))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.idle_connections == 0
            assert (await pool.request("GET", "/", timeout=5)).body == b"ok"  # its late answer is not read here
            assert len(connections) == 2
        finally:
            await pool.aclose()


async def test_refused_connection() -> None:
    with refused_url() as url:
        pool = HostPool(url)
        with pytest.raises(ConnectFailed):
            await pool.request("GET", "/", timeout=2)
        await pool.aclose()


async def test_garbage_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(handler) as (url, _):
        pool = HostPool(url)
        try:
            with pytest.raises(ProtocolError):
                await pool.request("GET", "/", timeout=5)
            assert pool.idle_connections == 0
        finally:
            await pool.aclose()


async def test_chunked_answer_and_interim_100() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            response = await pool.request("GET", "/", timeout=5)
            assert (response.status, response.body, response.header(b"x-a")) == (200, b"abcde", b"1")
            assert (await pool.request("GET", "/", timeout=5)).body == b"ok"
            assert len(connections) == 1
        finally:
            await pool.aclose()


async def test_client_keeps_one_pool_per_server(echo_url: str) -> None:
    client = UpstreamClient(max_connections=4)
    try:
        assert (await client.request(echo_url, "GET", "/x", timeout=5)).body == b"x"
        assert (await client.request(echo_url + "/", "GET", "/y", timeout=5)).body == b"y"
        assert client.pool(echo_url).opened == 1
    finally:
        await client.aclose()


async def test_closed_pool_refuses_requests(echo_url: str) -> None:
    pool = HostPool(echo_url)
    await pool.request("GET", "/a", timeout=5)
    await pool.aclose()
    assert pool.idle_connections == 0
    with pytest.raises(ConnectionLost):
        await pool.request("GET", "/b", timeout=1)


async def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        HostPool("ftp://127.0.0.1:21")


async def test_runs_on_the_parametrized_loop(event_loop_policy: asyncio.AbstractEventLoopPolicy) -> None:
    on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    assert on_uvloop == isinstance(event_loop_policy, uvloop.EventLoopPolicy)


# -- hostile or unusual answers (issue 8, item 14) ---------------------------------------------------


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the client closed the connection (EOF or reset) within 10 s."""
    try:
        return await asyncio.wait_for(reader.read(65536), 10) == b""
    except ConnectionError:
        return True


async def test_an_answer_announced_over_the_cap_is_an_error_and_closes_the_connection() -> None:
    closed: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        closed.append(await _closed_by_peer(reader))

    async with raw_server(handler) as (url, _):
        pool = HostPool(url, max_answer_bytes=4096)
        try:
            with pytest.raises(AnswerTooLarge, match="4096"):
                await pool.request("GET", "/", timeout=5)
            assert pool.idle_connections == 0
        finally:
            await pool.aclose()
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.05)
    assert closed == [True]


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_an_unannounced_answer_is_cut_at_the_cap(framing: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(100):
                writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"y" * 100_000)
        await writer.drain()
        await _closed_by_peer(reader)

    async with raw_server(handler) as (url, _):
        pool = HostPool(url, max_answer_bytes=4096)
        try:
            with pytest.raises(AnswerTooLarge):
                await pool.request("GET", "/", timeout=5)
        finally:
            await pool.aclose()


async def test_an_answer_at_the_cap_is_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n" + b"z" * 4096)
        await writer.drain()
        await read_request(reader)

    async with raw_server(handler) as (url, _):
        pool = HostPool(url, max_answer_bytes=4096)
        try:
            assert (await pool.request("GET", "/", timeout=5)).body == b"z" * 4096
        finally:
            await pool.aclose()


async def test_repeated_headers_are_kept() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-a: 1\r\nX-A: 2\r\nx-b: only\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)

    async with raw_server(handler) as (url, _):
        pool = HostPool(url)
        try:
            response = await pool.request("GET", "/", timeout=5)
            assert response.header(b"x-a") == b"1, 2"
            assert response.header(b"x-b") == b"only"
        finally:
            await pool.aclose()


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_an_answer_delimited_by_the_close_of_the_connection(version: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/" + version + b" 200 OK\r\nconnection: close\r\nx-h: 1\r\n\r\nhello, ")
        await writer.drain()
        writer.write(b"until the end")
        await writer.drain()

    async with raw_server(handler) as (url, connections):
        pool = HostPool(url)
        try:
            response = await pool.request("GET", "/", timeout=5)
            assert (response.status, response.body, response.header(b"x-h")) == (200, b"hello, until the end", b"1")
            assert pool.idle_connections == 0
            assert (await pool.request("GET", "/", timeout=5)).body == b"hello, until the end"
            assert len(connections) == 2
        finally:
            await pool.aclose()


async def test_a_close_inside_an_announced_body_is_still_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()

    async with raw_server(handler) as (url, _):
        pool = HostPool(url)
        try:
            with pytest.raises(ConnectionLost):
                await pool.request("GET", "/", timeout=5)
        finally:
            await pool.aclose()


async def test_a_request_in_flight_during_aclose_does_not_return_its_connection() -> None:
    answered: list[bool] = []
    peer_closed: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        await asyncio.sleep(0.2)
        writer.write(OK)
        await writer.drain()
        answered.append(True)
        peer_closed.append(await _closed_by_peer(reader))

    async with raw_server(handler) as (url, _):
        pool = HostPool(url)
        request = asyncio.ensure_future(pool.request("GET", "/", timeout=5))
        while not pool.opened:
            await asyncio.sleep(0.01)
        await pool.aclose()
        assert (await request).body == b"ok"  # the answer still arrives
        assert pool.idle_connections == 0
        for _ in range(200):
            if peer_closed:
                break
            await asyncio.sleep(0.05)
    assert answered == [True] and peer_closed == [True]
