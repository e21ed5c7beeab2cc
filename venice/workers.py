"""``--workers N``: N processes answering on one port (SO_REUSEPORT).

One Python process answering HTTP uses one core at most. A router keeps no state a
client depends on (each process learns the routing table from the controller), so N
independent router processes bound to the same port with SO_REUSEPORT serve N times the
load, the kernel spreading new connections among them.

The process started by the user is worker 0: it starts workers 1..N-1 as child processes
(the same command with ``--workers 1`` and the hidden ``--reuse-port``), serves itself,
and when it stops (SIGTERM, SIGINT) it sends SIGTERM to each child by pid and waits for
it. A child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a
``kill -9`` of worker 0 leaves no orphan serving the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence

__all__ = ["MAX_WORKERS", "current_args", "default_workers", "spawn_workers", "spawn_workers_async", "worker_args"]

log = logging.getLogger("venice.workers")

MAX_WORKERS = 64
_PR_SET_PDEATHSIG = 1


def default_workers(cores: int | None = None) -> int:
    """Processes per router or storage server on a machine of ``cores`` cores (default:
    this one's), for the quickstart and the bench, which run a whole cluster on one
    machine: 1 up to 2 cores, then one per 2 cores, at most 4.

    Measured with ``python -m bench --quick`` on the 2-core machine (load ~5, a broker,
    2 servers and wrk on the same cores): 2 workers per router and server gave
    router_get 1.4-1.8k GET/s (p50 15 ms), sdk_get 220-380/s and server_get p99 ~300 ms;
    1 worker gave 5.7-6.7k GET/s (p50 4-5 ms), 2.2-3.0k/s and p99 ~20 ms. More processes
    than cores only add scheduling delays to every hop."""
    count = cores if cores is not None else (os.cpu_count() or 1)
    return 1 if count <= 2 else min(4, count // 2)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the children are still stopped by worker 0 on a clean exit


@contextlib.contextmanager
def spawn_workers(args: Sequence[str], count: int, *, stop_timeout_s: float = 10.0) -> Iterator[list[int]]:
    """Start ``count`` children running ``python -m venice *args``; yield their pids; on
    exit, SIGTERM each (by pid) and wait, SIGKILL one that does not stop in time."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "venice", *args],
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,  # only prctl, between fork and exec
                )
            )
        yield [child.pid for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %.0f s: killing it", child.pid, stop_timeout_s)
                child.kill()
                child.wait()


@contextlib.asynccontextmanager
async def spawn_workers_async(
    args: Sequence[str], count: int, *, stop_timeout_s: float = 10.0
) -> AsyncIterator[list[int]]:
    """:func:`spawn_workers` for a process whose event loop must keep running while its
    workers stop (they may still be talking to it)."""
    children: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(count):
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "venice", *args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
                )
            )
        yield [child.pid for child in children]
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), stop_timeout_s)
            except TimeoutError:
                log.warning("worker %d did not stop in %.0f s: killing it", child.pid, stop_timeout_s)
                child.kill()
                await child.wait()


def worker_args(argv: Sequence[str]) -> list[str]:
    """The command line of a child worker: this process's own arguments (after
    ``python -m venice``), ``--workers`` set to 1 and ``--reuse-port`` added."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--workers", "1", "--reuse-port"]


def current_args() -> list[str]:
    """``sys.argv`` after ``-m venice`` (the subcommand and its options)."""
    return list(sys.argv[1:])
