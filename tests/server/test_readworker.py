"""A read worker answers reads of partitions in its view of the hosting manifest, and
relays everything else, including reads of partitions not in its view yet, to the
ingesting process (here a real StorageApp on venice.httpserver): never a 503 of its own."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
from pathlib import Path

import httpx

from server.app import StorageApp
from server.readworker import ReadWorkerApp
from server.service import ServerConfig, StorageService
from tests.router.fakes import refused_url, serve_in_thread
from venice.httpserver import HttpServer
from venice.ingestion.manifest import HostedEntry, render_manifest, write_manifest

_WRITER = """
import sys
from pathlib import Path
from venice.ingestion.records import Checkpoint, encode_stored
from venice.ingestion.storage import VersionStorage
storage = VersionStorage(Path(sys.argv[1]), 2, [0, 1])
storage.apply(0, [(b"k", encode_stored(5, b"hello"))], Checkpoint(1))
storage.apply(1, [(b"j", encode_stored(5, b"other"))], Checkpoint(1))
storage.close()
"""


def test_reads_in_view_are_answered_others_relayed(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    with refused_url() as controller:
        main = StorageApp(StorageService(ServerConfig(data_dir, controller, server_id="s-main")))
        with serve_in_thread(HttpServer(main, port=0)) as main_url:
            # a version the ingesting process wrote (another process: LMDB opens a file once
            # per process) and listed as ready, partition 0 only
            subprocess.run([sys.executable, "-c", _WRITER, str(data_dir / "versions" / "st_v1-x")], check=True)
            write_manifest(data_dir, render_manifest([HostedEntry("st", 1, "x", "st_v1", "st_v1-x", 2, (0,), "string", {})]))
            worker = ReadWorkerApp(data_dir, main_url, poll_s=None)
            with serve_in_thread(HttpServer(worker, port=0)) as worker_url, httpx.Client(base_url=worker_url) as client:
                key = base64.urlsafe_b64encode(b"k").decode().rstrip("=")
                answer = client.get(f"/v1/st/1/0/{key}")
                assert (answer.status_code, answer.content, answer.headers["x-venice-schema-id"]) == (200, b"hello", "5")
                frames = struct.pack(">II", 0, 1) + b"k"
                assert client.post("/v1/batch/st/1", content=frames).status_code == 200
                # not in the worker's view (partition 1): relayed; the main process does
                # not host it either, so its answer (503 REPLICA_NOT_READY) comes back
                other = base64.urlsafe_b64encode(b"j").decode().rstrip("=")
                relayed = client.get(f"/v1/st/1/1/{other}")
                assert relayed.status_code == 503
                assert "is not ready here" in relayed.json()["error"]["message"]  # the ingesting host's wording
                assert client.get("/health").json() == {"status": "ok", "server_id": "s-main"}
                assert client.get("/admin/replicas").json() == {"server_id": "s-main", "replicas": []}
                assert client.get("/nowhere").json()["error"]["code"] == "NOT_FOUND"
                # hostile requests the worker relays get exactly the ingesting process's answer
                with httpx.Client(base_url=main_url) as direct:
                    for method, path, body in [
                        ("POST", "/v1/compute/st/1", b"\x00" * 5000),
                        ("POST", "/v1/compute/st/x", b"{}"),
                        ("GET", "/v1/changes/st/1?partition=-1&from=zz", b""),
                        ("GET", "/v1/changes/st%2F..%2Fx/1?partition=0", b""),
                        ("DELETE", "/v1/st/1/0/" + key, b""),
                        ("GET", "/admin/replicas?" + "x" * 3000, b""),
                        ("PUT", "/health", b"y" * 100_000),
                    ]:
                        via_worker = client.request(method, path, content=body)
                        straight = direct.request(method, path, content=body)
                        assert (via_worker.status_code, via_worker.content) == (straight.status_code, straight.content), path
