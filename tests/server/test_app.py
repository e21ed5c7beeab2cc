"""The storage server's HTTP API answers the same through its fast path (on
venice.httpserver) and as a plain ASGI app (here under uvicorn)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.app import StorageApp
from server.service import ServerConfig, StorageService
from tests.router.fakes import refused_url, serve_in_thread
from venice.httpserver import HttpServer


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with refused_url() as controller:  # no controller: heartbeats fail quietly, nothing is hosted
        fast_app = StorageApp(StorageService(ServerConfig(tmp_path / "a", controller, server_id="s-a")))
        plain_app = StorageApp(StorageService(ServerConfig(tmp_path / "b", controller, server_id="s-b")))
        with serve_in_thread(HttpServer(fast_app, port=0)) as fast_url, serve_in_thread(plain_app) as plain_url:
            with httpx.Client(base_url=fast_url) as fast, httpx.Client(base_url=plain_url) as plain:
                yield fast, plain


def test_reads_and_errors_match(both: tuple[httpx.Client, httpx.Client]) -> None:
    fast, plain = both
    key = base64.urlsafe_b64encode(b"k").decode().rstrip("=")
    frames = struct.pack(">II", 0, 1) + b"k"
    for method, path, body, status, code in [
        ("GET", f"/v1/s/1/0/{key}", b"", 503, "REPLICA_NOT_READY"),
        ("GET", f"/v1/s%2Fx/1/0/{key}", b"", 503, "REPLICA_NOT_READY"),
        ("GET", f"/v1/s/one/0/{key}", b"", 400, "BAD_REQUEST"),
        ("POST", "/v1/batch/s/1", frames, 503, "REPLICA_NOT_READY"),
        ("POST", "/v1/batch/s/1", b"abc", 400, "BAD_REQUEST"),
        ("GET", "/v1/s/1", b"", 404, "NOT_FOUND"),
        ("GET", "/nowhere", b"", 404, "NOT_FOUND"),
    ]:
        answers = [client.request(method, path, content=body) for client in (fast, plain)]
        for answer in answers:
            assert answer.status_code == status, (path, answer.text)
            assert answer.json()["error"]["code"] == code
            assert answer.headers["content-length"] == str(len(answer.content))
    assert fast.get("/health").json() == {"status": "ok", "server_id": "s-a"}
    assert plain.get("/health").json() == {"status": "ok", "server_id": "s-b"}
    assert plain.get("/admin/replicas").json() == {"server_id": "s-b", "replicas": []}
