"""A whole cluster on one machine: controller, storage servers and router, each its own
OS process, started on free loopback ports and stopped by pid.

Used by ``venice quickstart`` and by the test suite (``venice.testing``). Each process
logs to ``DATA_DIR/logs/NAME.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from venice.controller_client import ControllerClient
from venice.tls import client_context

__all__ = ["LocalCluster", "ManagedProcess", "free_port", "wait_for"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns a truthy value; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the condition polls things that are coming up
            last_error = exc
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}" + (f" ({last_error})" if last_error else ""))


@dataclass
class ManagedProcess:
    """One ``venice ...`` child process."""

    name: str
    args: list[str]
    log_path: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)
    ca_file: Path | None = None
    """The CA its https:// certificate is verified with (health checks)."""
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop() / kill()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "venice", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Own process group: Ctrl-C in a terminal reaches the supervisor only, which
            # then stops the children in order.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        def healthy() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; log tail:\n{self.log_tail()}")
            return httpx.get(f"{self.url}/health", timeout=1.0, verify=client_context(self.ca_file)).status_code == 200

        try:
            wait_for(healthy, timeout_s, f"{self.name} at {self.url}")
        except RuntimeError as exc:
            raise RuntimeError(str(exc)) from None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        if self.popen is None:
            return
        if self.alive():
            self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.popen is not None and self.alive():
            self.popen.kill()
            self.popen.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LocalCluster:
    """Controller + ``servers`` storage servers + ``routers`` routers as child processes.

    ``router_workers``: processes per router (``venice router --workers``; the router's
    pid is its first worker's, which stops the others). ``server_workers``: processes
    per storage server (``venice server --workers``: the pid is the ingesting one's).

    ``server_args`` adds command-line options to some servers, by index (e.g. a smaller
    ``--lmdb-map-size`` for one of them).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        servers: int = 2,
        routers: int = 1,
        pubsub_url: str | None = None,
        host: str = "127.0.0.1",
        dead_after_s: float = 15.0,
        server_args: Mapping[int, Sequence[str]] | None = None,
        router_workers: int = 1,
        server_workers: int = 1,
        cluster_secret: str | None = None,
        tokens_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.router_workers = router_workers
        self.server_workers = server_workers
        self.tls = tls
        """(certificate, key) every part serves HTTPS with; ``None``: plain HTTP."""
        self.ca_file = ca_file
        """The CA bundle every part (and this launcher) verifies the others' certificates with."""
        self.scheme = "https" if tls is not None else "http"
        self.cluster_secret = cluster_secret
        """Handed to every part in its environment (never on a command line, where ps shows it)."""
        self.tokens_file = tokens_file
        self.host = host
        self.pubsub_url = pubsub_url or f"embedded://{self.data_dir / 'pubsub'}"
        self.dead_after_s = dead_after_s
        self.logs = self.data_dir / "logs"
        port = free_port(host)
        # Router ports first: the controller is told where they are (its dashboard shows them).
        router_ports = [free_port(host) for _ in range(routers)]
        self.controller = ManagedProcess(
            "controller",
            [
                "controller",
                "--host", host,
                "--port", str(port),
                "--data-dir", str(self.data_dir / "controller"),
                "--pubsub-url", self.pubsub_url,
                "--dead-after", str(dead_after_s),
                *(["--tokens-file", str(tokens_file)] if tokens_file is not None else []),
                *self._tls_args(),
                *(arg for p in router_ports for arg in ("--router", f"{self.scheme}://{host}:{p}")),
            ],
            self.logs / "controller.log",
            f"{self.scheme}://{host}:{port}",
            env=self._secret_env(),
            ca_file=ca_file,
        )
        self.servers = [self._server_process(i, (server_args or {}).get(i, ())) for i in range(servers)]
        self.routers = [self._router_process(i, p) for i, p in enumerate(router_ports)]
        self.router = self.routers[0]

    def _router_process(self, index: int, port: int) -> ManagedProcess:
        return ManagedProcess(
            "router" if index == 0 else f"router-{index}",
            ["router", "--host", self.host, "--port", str(port), "--controller", self.controller.url,
             "--workers", str(self.router_workers), *self._tls_args()],
            self.logs / ("router.log" if index == 0 else f"router-{index}.log"),
            f"{self.scheme}://{self.host}:{port}",
            env=self._secret_env(),
            ca_file=self.ca_file,
        )

    def _server_process(self, index: int, extra_args: Sequence[str] = ()) -> ManagedProcess:
        port = free_port(self.host)
        return ManagedProcess(
            f"server-{index}",
            [
                "server",
                "--host", self.host,
                "--port", str(port),
                "--data-dir", str(self.data_dir / f"server-{index}"),
                "--controller", self.controller.url,
                "--server-id", f"server-{index}",
                *(["--workers", str(self.server_workers)] if self.server_workers > 1 else []),
                *self._tls_args(),
                *extra_args,
            ],
            self.logs / f"server-{index}.log",
            f"{self.scheme}://{self.host}:{port}",
            env=self._secret_env(),
            ca_file=self.ca_file,
        )

    def _tls_args(self) -> list[str]:
        return [] if self.tls is None else ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]

    def _secret_env(self) -> dict[str, str]:
        # Always set, so a secret in the caller's own environment never leaks into an open cluster.
        env = {"VENICE_CLUSTER_SECRET": self.cluster_secret or "", "VENICE_CLUSTER_SECRET_FILE": ""}
        if self.ca_file is not None:
            env["VENICE_CA_FILE"] = str(self.ca_file)
        return env

    @property
    def controller_url(self) -> str:
        return self.controller.url

    @property
    def router_url(self) -> str:
        return self.router.url

    def processes(self) -> list[ManagedProcess]:
        return [self.controller, *self.servers, *self.routers]

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        try:
            self.controller.start()
            self.controller.wait_healthy(timeout_s)
            for process in [*self.servers, *self.routers]:
                process.start()
            for process in [*self.servers, *self.routers]:
                process.wait_healthy(timeout_s)
            self.wait_servers_alive(len(self.servers), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_servers_alive(self, count: int, timeout_s: float = 30.0) -> None:
        with ControllerClient(self.controller_url, timeout_s=2.0, ca_file=self.ca_file) as controller:

            def alive() -> bool:
                return sum(1 for s in controller.cluster()["servers"] if s["alive"]) >= count

            wait_for(alive, timeout_s, f"{count} servers registered with the controller")

    def stop(self) -> None:
        """Stop the routers first (no new reads), then servers, then the controller."""
        for process in [*self.routers, *self.servers, self.controller]:
            process.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
