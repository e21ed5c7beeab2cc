"""venice.httpserver under hostile clients: oversized heads, URLs and bodies, slow heads,
idle connections and connection floods, each with small limits over real sockets.

No test asserts a duration: deadlines are checked by waiting for the server's verdict
(bounded by the socket timeouts and pytest's timeout), never by measuring it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest

from tests.rawhttp import connect, header, read_response, read_until_close
from tests.router.fakes import read_body, serve_in_thread
from venice.httpserver import DEFAULT_LIMITS, HttpLimits, HttpServer


async def echo(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers the body it got (or the path) as ``{"echo": ...}``."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await read_body(receive)
    answer = orjson.dumps({"echo": (body or scope["path"].encode())[:100].decode()})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


def error_of(answer: bytes) -> dict[str, Any]:
    """The JSON error of a raw answer (head + body)."""
    error: dict[str, Any] = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return error


def assert_rejected(answer: bytes, status: int, code: str) -> None:
    """A final answer in the platform's error shape, and the connection closed after it."""
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert header(answer, b"connection") == b"close"
    assert header(answer, b"content-type") == b"application/json"
    assert error_of(answer)["code"] == code


@pytest.fixture
def default_url() -> Iterator[str]:
    """The server with its default limits."""
    with serve_in_thread(HttpServer(echo, port=0)) as url:
        yield url


def serve(**limits: Any) -> Any:
    return serve_in_thread(HttpServer(echo, port=0, limits=HttpLimits(**limits)))


def test_defaults_are_the_documented_ones() -> None:
    """The figures of docs/failure-model.md's Limits table."""
    assert DEFAULT_LIMITS.max_connections == 10_000
    assert DEFAULT_LIMITS.head_timeout_s == 10.0
    assert DEFAULT_LIMITS.keepalive_s == 60.0
    assert DEFAULT_LIMITS.max_head_bytes == 16384
    assert DEFAULT_LIMITS.max_url_bytes == 8192
    assert DEFAULT_LIMITS.max_body_bytes == 16777216


class TestSizes:
    def test_a_request_head_over_the_limit_gets_431_and_is_closed(self, default_url: str) -> None:
        big = b"X-Big: " + b"a" * (20 * 1024) + b"\r\n"
        with connect(default_url) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
            answer = read_until_close(sock)
        assert_rejected(answer, 431, "HEADERS_TOO_LARGE")

    def test_many_small_headers_count_as_one_head(self, default_url: str) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(500))  # ~25 KiB
        with connect(default_url) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            answer = read_until_close(sock)
        assert_rejected(answer, 431, "HEADERS_TOO_LARGE")

    def test_a_head_just_under_the_limit_is_served(self) -> None:
        with serve(max_head_bytes=4096) as url, connect(url) as sock:
            start = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: "
            pad = b"p" * (4096 - len(start) - 4)
            sock.sendall(start + pad + b"\r\n\r\n")
            head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body) == {"echo": "/ok"}

    def test_an_unfinished_huge_head_is_cut_at_the_limit(self, default_url: str) -> None:
        """One header line that never ends: the server answers 431 once it has read the
        limit and stops reading; it does not collect the rest (this once cost 265 MB and
        45 s of CPU for 200 MB, because the parser grew the value by concatenation)."""
        sock = connect(default_url, timeout=10)
        outcome: list[BaseException | None] = []

        def flood() -> None:
            try:
                sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                piece = b"a" * 65536
                for _ in range(512):  # 32 MiB if the server kept reading
                    sock.sendall(piece)
                outcome.append(None)
            except OSError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        try:
            answer = read_until_close(sock)
            sender.join(30)
        finally:
            sock.close()
        assert_rejected(answer, 431, "HEADERS_TOO_LARGE")
        assert outcome and isinstance(outcome[0], OSError), "the server kept reading the endless header"

    def test_a_url_over_the_limit_gets_414(self, default_url: str) -> None:
        with connect(default_url) as sock:
            sock.sendall(b"GET /" + b"k" * (9 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_until_close(sock)
        assert_rejected(answer, 414, "URL_TOO_LONG")

    def test_a_chunked_body_is_cut_at_the_limit(self) -> None:
        with serve(max_body_bytes=1000) as url, connect(url) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"400\r\n" + b"b" * 1024 + b"\r\n" + b"400\r\n" + b"b" * 1024 + b"\r\n0\r\n\r\n")
            answer = read_until_close(sock)
        assert_rejected(answer, 413, "BODY_TOO_LARGE")

    def test_a_chunked_body_within_the_limit_is_served(self) -> None:
        with serve(max_body_bytes=1000) as url, connect(url) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body) == {"echo": "abcde"}

    def test_a_client_sending_a_big_body_anyway_reads_its_413(self) -> None:
        """httpx writes the whole body before it reads: the server must not reset the
        connection under it, or the client sees a broken pipe instead of the answer."""
        with serve(max_body_bytes=1000) as url:
            response = httpx.post(url + "/x", content=b"z" * (4 * 1024 * 1024), timeout=10)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "BODY_TOO_LARGE"

    def test_a_path_with_its_own_body_limit(self) -> None:
        """body_limits_by_path: one route takes more than the rest, on the same connection
        (the limit is decided per request, both from Content-Length and as chunks arrive)."""
        with serve(max_body_bytes=1000, body_limits_by_path=((b"/big/", 3000),)) as url:
            with httpx.Client(base_url=url, timeout=10) as http:
                assert http.post("/big/x", content=b"b" * 2500).json() == {"echo": "b" * 100}
                assert http.post("/x", content=b"s" * 900).json() == {"echo": "s" * 100}
            refused = httpx.post(url + "/x", content=b"s" * 2500, timeout=10)
            assert refused.status_code == 413 and refused.json()["error"]["code"] == "BODY_TOO_LARGE"
            with connect(url) as sock:
                sock.sendall(b"POST /big/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + (b"400\r\n" + b"b" * 1024 + b"\r\n") * 3 + b"0\r\n\r\n")
                answer = read_until_close(sock)
            assert_rejected(answer, 413, "BODY_TOO_LARGE")

    def test_a_malformed_content_length_is_400(self) -> None:
        with serve(max_body_bytes=1000) as url, connect(url) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
            answer = read_until_close(sock)
        assert_rejected(answer, 400, "BAD_REQUEST")


class TestSlowClients:
    @pytest.mark.timeout(60)
    def test_a_head_sent_one_line_at_a_time_is_cut_at_the_deadline(self) -> None:
        """A header line every 50 ms keeps the connection busy but never finishes the
        head: the server answers 408 once the head deadline passes, and closes."""
        with serve(head_timeout_s=0.5) as url, connect(url, timeout=30) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\n")
            sock.settimeout(0.05)
            answer = b""
            for i in range(1200):  # at most ~60 s; the deadline is 0.5 s
                try:
                    sock.sendall(b"X-Line-%d: v\r\n" % i)
                except OSError:
                    break
                try:
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                break
            sock.settimeout(10)
            answer += read_until_close(sock)
        assert_rejected(answer, 408, "REQUEST_TIMEOUT")

    def test_an_idle_keep_alive_connection_is_closed(self) -> None:
        with serve(keepalive_s=0.2) as url, connect(url, timeout=30) as sock:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            buffer = bytearray()
            head, _ = read_response(sock, buffer)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert read_until_close(sock) == b""  # closed by the server, nothing more sent

    def test_a_connection_that_never_speaks_is_closed(self) -> None:
        with serve(keepalive_s=0.2) as url, connect(url, timeout=30) as sock:
            assert read_until_close(sock) == b""


class TestConnectionCap:
    def test_connections_beyond_the_cap_get_503_and_are_closed(self) -> None:
        with serve(max_connections=3) as url, ExitStack() as stack:
            held = [stack.enter_context(connect(url)) for _ in range(3)]
            for sock in held:  # all three are served (and so counted by the server)
                sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0].startswith(b"HTTP/1.1 200 ")
            with connect(url) as extra:
                extra.sendall(b"GET /extra HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_until_close(extra)
            assert_rejected(answer, 503, "TOO_MANY_CONNECTIONS")
            assert error_of(answer)["message"]
            held.pop().close()
            for _ in range(100):  # the server notices the close; then a newcomer is served
                with connect(url) as again:
                    again.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = read_until_close(again)
                if answer.startswith(b"HTTP/1.1 200 "):
                    break
                time.sleep(0.02)
            assert answer.startswith(b"HTTP/1.1 200 ")
            for sock in held:  # the held ones still work
                sock.sendall(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0].startswith(b"HTTP/1.1 200 ")

    def test_an_httpx_client_beyond_the_cap_gets_the_json_503(self) -> None:
        with serve(max_connections=1) as url, connect(url) as held:
            held.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(held)[0].startswith(b"HTTP/1.1 200 ")
            response = httpx.get(url + "/extra", timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "TOO_MANY_CONNECTIONS"
        assert response.headers["connection"] == "close"


def test_limits_are_validated() -> None:
    for bad in ({"max_connections": 0}, {"head_timeout_s": 0}, {"max_head_bytes": 10},
                {"max_url_bytes": 0}, {"max_body_bytes": -1}, {"keepalive_s": -1},
                {"body_limits_by_path": ((b"/x", -1),)}):
        with pytest.raises(ValueError):
            HttpLimits(**bad)
