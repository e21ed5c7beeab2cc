"""``venice router --workers N``: N router processes on one port (SO_REUSEPORT), stopped
together, and no orphan left when the first one is killed. Real processes, checked
through /proc (which processes hold a listening socket on the port), not timings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.router.fakes import refused_url
from venice.cli import main as cli
from venice.cluster import free_port, wait_for
from venice.workers import worker_args


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def _listeners(port: int) -> set[int]:
    """Pids of processes holding a socket that listens on ``port``."""
    inodes = _listening_inodes(port)
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.add(int(pid))
                break
    return found


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with refused_url() as controller, open(tmp_path / "router.log", "wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "venice", "router", "--port", str(port), "--controller", controller, "--workers", "3"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield popen, port
        finally:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                popen.wait(30)


def test_three_processes_listen_on_the_port_and_stop_together(router: tuple[subprocess.Popen[bytes], int]) -> None:
    popen, port = router
    wait_for(lambda: len(_listeners(port)) == 3, 60, "three router processes listening")
    children = _children(popen.pid)
    assert _listeners(port) == {popen.pid, *children}
    assert len(children) == 2
    for _ in range(20):  # new connections, wherever the kernel puts them, are answered
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/health", timeout=10).json() == {"status": "ok"}
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(30) == 0
    assert all(_gone(child) for child in children)
    assert _listeners(port) == set()


def test_killing_the_first_leaves_no_orphan(router: tuple[subprocess.Popen[bytes], int]) -> None:
    popen, port = router
    wait_for(lambda: len(_listeners(port)) == 3, 60, "three router processes listening")
    children = _children(popen.pid)
    popen.kill()
    popen.wait()
    wait_for(lambda: all(_gone(child) for child in children), 30, "the workers to follow their parent")
    wait_for(lambda: _listeners(port) == set(), 30, "the port to be free")


def test_worker_command_lines() -> None:
    assert worker_args(["router", "--port", "7", "--workers", "4"]) == ["router", "--port", "7", "--workers", "1", "--reuse-port"]
    assert worker_args(["router", "--workers=4", "--deadline", "1"]) == ["router", "--deadline", "1", "--workers", "1", "--reuse-port"]


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "0 is not in the range 1<=x<=64"),
    (["--workers", "65"], "65 is not in the range"),
    (["--workers", "two"], "'two' is not a valid integer"),
    (["--workers", "2", "--port", "0"], "--workers needs a fixed --port"),
])
def test_bad_worker_counts_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["router", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "0 is not in the range 1<=x<=64"),
    (["--workers", "-3"], "-3 is not in the range"),
    (["--workers", "2", "--port", "0"], "--workers needs a fixed --port"),
])
def test_bad_server_worker_counts_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_default_worker_counts() -> None:
    from venice.workers import default_workers

    assert [default_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [1, 1, 1, 2, 4, 4]
