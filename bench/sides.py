"""The two systems under test, each started on loopback and stopped by its own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.data import STORE
from venice.cluster import LocalCluster, free_port, wait_for
from venice.controller_client import ControllerClient

__all__ = ["FloorSide", "RedisSide", "VeniceSide", "child_pids", "process_memory"]


def _terminate(popen: subprocess.Popen[Any] | None) -> None:
    """SIGTERM a child we started (by its pid), SIGKILL it if it is still there after 15 s."""
    if popen is not None and popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the other workers of a ``--workers`` process)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def process_memory(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` of a process, in bytes (Linux)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[name] = int(rest.split()[0]) * 1024
    return out


class RedisSide:
    """One ``redis-server`` without persistence, in its own directory."""

    def __init__(self, work_dir: Path, tools: dict[str, str]) -> None:
        self.dir = work_dir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tools = tools
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisSide:
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            [
                self.tools["redis-server"], "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        wait_for(lambda: self.cli("PING") == "PONG", 20, "redis-server to answer PING")
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [self.tools["redis-cli"], "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=60,
        )
        return result.stdout.strip()

    def load(self, resp_file: Path) -> float:
        """``redis-cli --pipe < resp_file``; the seconds it took."""
        started = time.perf_counter()
        with resp_file.open("rb") as source:
            result = subprocess.run(
                [self.tools["redis-cli"], "-h", "127.0.0.1", "-p", str(self.port), "--pipe"],
                stdin=source, capture_output=True, text=True, timeout=1800,
            )
        seconds = time.perf_counter() - started
        if result.returncode != 0 or "errors: 0" not in result.stdout:
            raise RuntimeError(f"redis-cli --pipe failed: {result.stdout[-1000:]} {result.stderr[-1000:]}")
        return seconds

    def info_memory(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.cli("INFO", "memory").splitlines():
            name, _, rest = line.partition(":")
            if name in ("used_memory", "used_memory_rss", "used_memory_dataset"):
                out[name] = int(rest)
        return out

    def stop(self) -> None:
        _terminate(self.popen)


class VeniceSide:
    """Controller, 2 storage servers and a router on Kafka (from deploy/kafka) or the embedded log."""

    def __init__(
        self,
        work_dir: Path,
        *,
        backend: str,
        servers: int = 2,
        partitions: int = 4,
        router_workers: int | None = None,
        server_workers: int | None = None,
    ) -> None:
        self.dir = work_dir / "venice"
        self.router_workers = router_workers
        self.server_workers = server_workers
        """Processes per storage server (``venice server --workers``); ``None``: default_workers()."""
        """Router processes (``venice router --workers``); ``None``: venice.workers.default_workers()."""
        self.backend = backend
        self.partitions = partitions
        self.servers = servers
        self.broker: Any = None
        self.cluster: LocalCluster | None = None
        self.version: int | None = None

    def start(self) -> VeniceSide:
        pubsub_url = None
        if self.backend == "kafka":
            from venice.testing.kafka import KafkaBroker, kafka_unavailable_reason

            reason = kafka_unavailable_reason()
            if reason:
                raise RuntimeError(f"cannot start Kafka: {reason} (use --backend embedded)")
            self.broker = KafkaBroker(self.dir / "kafka").start()
            pubsub_url = self.broker.url
        from venice.workers import default_workers

        self.router_workers = self.router_workers or default_workers()
        self.server_workers = self.server_workers or default_workers()
        self.cluster = LocalCluster(
            self.dir / "cluster", servers=self.servers, pubsub_url=pubsub_url, router_workers=self.router_workers,
            server_workers=self.server_workers,
        )
        self.cluster.start()
        return self

    @property
    def controller_url(self) -> str:
        assert self.cluster is not None
        return self.cluster.controller_url

    @property
    def router_url(self) -> str:
        assert self.cluster is not None
        return self.cluster.router_url

    def server_url(self, index: int = 0) -> str:
        assert self.cluster is not None
        return self.cluster.servers[index].url

    def server_pid(self, index: int = 0) -> int:
        assert self.cluster is not None
        return self.cluster.servers[index].pid

    def router_pid(self) -> int:
        assert self.cluster is not None
        return self.cluster.router.pid

    def create_store(self, replication_factor: int = 2, *, store: str = STORE, value_schema: Any = "string") -> None:
        with ControllerClient(self.controller_url) as controller:
            controller.create_store({
                "name": store, "key_schema": "string", "value_schema": value_schema,
                "partitions": self.partitions, "replication_factor": replication_factor,
            })

    def create_nearline_store(self, replication_factor: int = 2) -> None:
        """The hybrid store of the nearline figures (bench/nearline.py), with an empty first version."""
        from bench.nearline import NEARLINE_STORE

        response = httpx.post(
            f"{self.controller_url}/stores",
            json={
                "name": NEARLINE_STORE, "key_schema": "string", "value_schema": "string",
                "partitions": self.partitions, "replication_factor": replication_factor,
                "hybrid": {"rewind_seconds": 3600, "offset_lag": 1000},
            },
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating the hybrid store failed: {response.status_code} {response.text}")
        result = subprocess.run(
            [sys.executable, "-m", "venice", "push", "--controller", self.controller_url, "--store", NEARLINE_STORE,
             "--empty", "--no-progress"],
            capture_output=True, text=True, timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the empty push of {NEARLINE_STORE} failed: {result.stderr[-2000:]}")
        wait_for(
            lambda: httpx.get(f"{self.controller_url}/stores/{NEARLINE_STORE}", timeout=10).json().get("current_version"),
            60, "the nearline store's first version",
        )

    def push_command(self, jsonl: Path, timeout_s: float = 3600, *, store: str = STORE) -> list[str]:
        return [sys.executable, "-m", "venice", "push", "--controller", self.controller_url, "--store", store,
                "--input", str(jsonl), "--key-field", "key", "--no-progress", "--timeout", str(timeout_s)]

    def push(self, jsonl: Path, timeout_s: float = 3600, *, store: str = STORE) -> tuple[float, str]:
        """``venice push`` of the file, to ONLINE; (wall seconds, its summary line).
        Remembers the version of the string store (the one the read figures use)."""
        started = time.perf_counter()
        result = subprocess.run(
            self.push_command(jsonl, timeout_s, store=store),
            capture_output=True, text=True, timeout=timeout_s + 60, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"venice push failed: {result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        if store == STORE:
            with ControllerClient(self.controller_url, timeout_s=10) as controller:
                described = controller.get_store(STORE)
            self.version = int(described["current_version"])
        return seconds, result.stdout.strip().splitlines()[-1]

    def wait_router_serves(self, key: str, timeout_s: float = 30, *, store: str = STORE) -> None:
        wait_for(
            lambda: httpx.get(f"{self.router_url}/storage/{store}/{key}", timeout=5).status_code == 200,
            timeout_s, "router to serve the pushed version",
        )

    def lmdb_bytes(self, index: int = 0) -> int:
        """Bytes of the LMDB data files of one server."""
        root = self.dir / "cluster" / f"server-{index}"
        return sum(p.stat().st_size for p in root.rglob("data.mdb"))

    def stop(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop()


class FloorSide:
    """``python -m bench.floor``: the trivial uvicorn app that bounds every HTTP figure."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "floor.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> FloorSide:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        log.close()
        wait_for(lambda: httpx.get(self.url, timeout=1).status_code == 200, 30, "the uvicorn floor app")
        return self

    def stop(self) -> None:
        _terminate(self.popen)
