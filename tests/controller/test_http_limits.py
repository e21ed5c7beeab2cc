"""The controller process (``venice controller``) under clients that send too much or too
little: it runs on venice/httpserver.py with a body limit suited to metadata (issue 8, item 13)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.rawhttp import connect, header, read_response, read_until_close
from venice.cluster import ManagedProcess, free_port


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ManagedProcess]:
    port = free_port()
    process = ManagedProcess(
        "controller",
        ["controller", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "controller"),
         "--embedded-log", str(tmp_path / "log"), "--head-timeout", "0.5", "--keepalive-timeout", "0.5"],
        tmp_path / "controller.log",
        f"http://127.0.0.1:{port}",
    )
    process.start()
    try:
        process.wait_healthy(60)
        yield process
    finally:
        process.stop()


def test_a_json_body_over_4_mib_is_refused_with_413(controller: ManagedProcess) -> None:
    body = orjson.dumps({"name": "big", "key_schema": "string", "value_schema": "string", "pad": "x" * (5 << 20)})
    response = httpx.post(controller.url + "/stores", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"
    assert httpx.get(controller.url + "/stores/big", timeout=5).status_code == 404  # nothing was created


def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(controller: ManagedProcess) -> None:
    with connect(controller.url) as sock:
        sock.sendall(b"POST /stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 104857600\r\n\r\n")
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and header(answer, b"connection") == b"close"


def test_a_half_sent_head_is_answered_408_and_closed(controller: ManagedProcess) -> None:
    with connect(controller.url, timeout=30) as sock:
        sock.sendall(b"POST /stores HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "REQUEST_TIMEOUT"


def test_a_half_sent_body_is_answered_408_and_closed(controller: ManagedProcess) -> None:
    with connect(controller.url, timeout=30) as sock:
        sock.sendall(b"POST /stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b'Content-Length: 100\r\n\r\n{"name": "half')
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert httpx.get(controller.url + "/stores", timeout=5).json() == {"stores": []}


def test_the_api_still_works_over_keep_alive(controller: ManagedProcess) -> None:
    with httpx.Client(base_url=controller.url, timeout=10) as http:
        created = http.post("/stores", json={"name": "ok", "key_schema": "string", "value_schema": "string"})
        assert created.status_code == 201, created.text
        assert http.get("/stores/ok").json()["name"] == "ok"
        invalid = http.post("/stores", content=b"{not json", headers={"content-type": "application/json"})
        assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "BAD_REQUEST"
        assert http.head("/health").status_code in (200, 405)


def test_sigterm_answers_a_long_poll_in_flight_and_exits_cleanly(controller: ManagedProcess) -> None:
    generation = httpx.get(controller.url + "/health", timeout=5).json()["generation"]
    with connect(controller.url, timeout=30) as sock:
        sock.sendall(b"GET /routing?generation=%d&wait_s=25 HTTP/1.1\r\nHost: x\r\n\r\n" % generation)
        # A request on another connection, answered after the long poll's bytes were sent:
        # by then the server has the long poll in hand.
        assert httpx.get(controller.url + "/health", timeout=5).status_code == 200
        controller.signal(signal.SIGTERM)
        head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 304 ")
    assert controller.popen is not None
    assert controller.popen.wait(30) == 0


def test_a_heartbeat_over_the_metadata_limit_still_arrives(controller: ManagedProcess) -> None:
    """A heartbeat lists every replica of a server and may take up to 64 MiB (the app's own
    bound): the 4 MiB metadata limit must not refuse it, or a big server would be taken for
    dead. Other routes keep the 4 MiB limit, and a heartbeat announced over 64 MiB is 413."""
    padded = orjson.dumps({"url": "http://127.0.0.1:7001", "replicas": []}) + b" " * (5 << 20)
    answer = httpx.post(controller.url + "/servers/big-server/heartbeat", content=padded,
                        headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["assignment"] == []
    with connect(controller.url) as sock:
        sock.sendall(b"POST /servers/big-server/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % ((64 << 20) + 1))
        refused = read_until_close(sock)
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "BODY_TOO_LARGE"
    store = httpx.post(controller.url + "/stores", content=b'{"name": "x"}' + b" " * (5 << 20),
                       headers={"content-type": "application/json"}, timeout=30)
    assert store.status_code == 413
