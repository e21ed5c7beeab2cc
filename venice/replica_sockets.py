"""Blocking reads from storage servers for the synchronous direct client: keep-alive
HTTP/1.1 on plain sockets, with the failover policy of every reader that picks replicas.

Why not httpx: it costs ~200 µs of CPU per call, more than a storage server takes to
answer. This module does only what reading a replica needs: one request at a time per
socket, sockets kept alive and reused per server, answers framed by ``content-length``
(storage servers always send it).

:func:`run_calls` runs one or more *calls* at once (a single get is one call; a batch
is one call per group of partitions), each trying its replicas in order within one
deadline: a failure that is ``retriable`` moves on to the next replica at once, a replica
silent for the hedge delay gets company (the next replica is asked too; the first answer
wins), and every attempt after a call's first is paid from the retry budget. This is
:func:`venice.failover.first_success` for blocking sockets, multiplexed with
``select``; the policy objects (:class:`~venice.replica_health.ReplicaHealth`,
:class:`~venice.replica_health.RetryBudget`) are the router's.

Errors come out as :mod:`venice.errors`: connect failures and broken answers are
:class:`~venice.errors.TransportError` (retriable), an error answer is the typed error
its JSON body names (a 5xx is always retriable).
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from venice.errors import (
    DeadlineExceededError,
    NoReplicaError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)
from venice.replica_health import ReplicaHealth, RetryBudget

__all__ = ["Answer", "Call", "ReplicaSockets", "get_hit", "replica_error", "run_calls"]

T = TypeVar("T")

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024
MAX_IDLE_PER_SERVER = 16
SEND_TIMEOUT_S = 2.0
RECV_BYTES = 262144


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    head: bytes
    """The header lines, lower-cased, each after ``\\r\\n`` (looked up, not parsed)."""
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower-case), or ``None``."""
        head = self.head
        start = head.find(b"\r\n" + name + b":")
        if start < 0:
            return None
        start += len(name) + 3
        end = head.find(b"\r\n", start)
        return head[start : end if end >= 0 else len(head)].strip()


def replica_error(url: str, answer: Answer) -> VeniceError:
    """The typed error of a replica's non-200 answer; any 5xx is retriable."""
    error = error_from_response(answer.status, answer.body)
    if answer.status >= 500 and not error.retriable:
        return UnavailableError(f"replica {url} answered {answer.status}: {error.message}")
    return error


class _Stale(Exception):
    """A kept-alive socket turned out closed before any answer byte arrived."""


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class _Conn:
    """A blocking socket and the receive timeout the kernel has for it (set only on change)."""

    __slots__ = ("rcv_timeout", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rcv_timeout = 0.0  # none

    def recv_within(self, timeout: float) -> bytes | None:
        """Bytes received within ``timeout`` (ms resolution), ``None`` when none arrived."""
        timeout = max(0.001, round(timeout, 3))
        if timeout != self.rcv_timeout:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
            self.rcv_timeout = timeout
        try:
            return self.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return None


class _Pool:
    """Idle keep-alive sockets to one server."""

    def __init__(self, url: str, authorization: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise TransportError(f"replica {url}: only http:// replicas are read directly")
        self.url = url
        self.address = (parts.hostname, parts.port or 80)
        auth = b"" if authorization is None else b"Authorization: " + authorization.encode("latin-1") + b"\r\n"
        self.head = b" HTTP/1.1\r\nHost: " + parts.netloc.encode("idna") + b"\r\n" + auth
        self.idle: list[_Conn] = []
        self.lock = threading.Lock()

    def get_request(self, path: str) -> bytes:
        return b"GET " + path.encode("ascii") + self.head + b"\r\n"

    def request(self, method: bytes, path: str, body: bytes | None) -> bytes:
        target = method + b" " + path.encode("ascii") + self.head
        if body is None:
            return target + b"\r\n"
        return target + b"content-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % len(body) + body

    def take(self) -> _Conn | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give_back(self, conn: _Conn) -> None:
        with self.lock:
            if len(self.idle) < MAX_IDLE_PER_SERVER:
                self.idle.append(conn)
                return
        conn.sock.close()

    def connect(self, timeout: float) -> _Conn:
        try:
            sock = socket.create_connection(self.address, timeout=max(timeout, 0.001))
        except TimeoutError as exc:
            raise TransportError(f"replica {self.url}: connect timed out") from exc
        except OSError as exc:
            raise TransportError(f"cannot connect to replica {self.url}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking, with kernel timeouts: a Python-level timeout would add a poll() to every
        # send and receive. Sends give up after SEND_TIMEOUT_S (a server that reads nothing).
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(SEND_TIMEOUT_S))
        return _Conn(sock)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.sock.close()


class _Attempt:
    """One request to one replica, its answer read as it arrives."""

    __slots__ = ("buf", "conn", "head", "head_end", "length", "pool", "reused", "started", "status", "url")

    def __init__(self, pool: _Pool, request: bytes | None, timeout: float, started: float, conn: _Conn | None = None) -> None:
        """Send ``request`` on a pooled or new socket; ``request=None``: ``conn`` already
        carries it (sent by :func:`get_hit`), the answer is yet to be read."""
        self.pool, self.url, self.started = pool, pool.url, started
        self.reused = conn is not None
        self.buf = b""
        self.head_end = -1
        self.length = 0
        self.status = 0
        self.head = b""
        if request is None:
            assert conn is not None
            self.conn = conn
            return
        conn = pool.take()
        self.reused = conn is not None
        if conn is None:
            conn = pool.connect(timeout)
        self.conn = conn
        try:
            conn.sock.sendall(request)
        except OSError as exc:
            conn.sock.close()
            if self.reused:
                raise _Stale from exc
            raise TransportError(f"replica {self.url}: {exc}") from exc

    def fileno(self) -> int:
        return self.conn.sock.fileno()

    def abandon(self) -> None:
        """Its answer may still come: the socket cannot carry another request."""
        self.conn.sock.close()

    def read(self, wait_s: float = 0.0) -> Answer | None:
        """Read what arrives within ``wait_s`` (at once when the socket is known readable);
        the answer once complete, else ``None``."""
        try:
            data = self.conn.recv_within(wait_s) if wait_s > 0 else self.conn.sock.recv(RECV_BYTES)
        except OSError as exc:
            self.conn.sock.close()
            if self.reused and not self.buf:
                raise _Stale from exc
            raise TransportError(f"replica {self.url}: {exc}") from exc
        if data is None:
            return None
        if not data:
            self.conn.sock.close()
            if self.reused and not self.buf:
                raise _Stale
            raise TransportError(f"replica {self.url} closed the connection inside an answer")
        return self.feed(data)

    def feed(self, data: bytes) -> Answer | None:
        """Take bytes of the answer; the answer once complete."""
        self.buf = data if not self.buf else self.buf + data
        if self.head_end < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self.conn.sock.close()
                    raise TransportError(f"replica {self.url} sent an answer head over {MAX_HEAD_BYTES} bytes")
                return None
            self._head(self.buf[:end])
            self.head_end = end + 4
        have = len(self.buf) - self.head_end
        if have < self.length:
            return None
        body = self.buf[self.head_end :] if have == self.length else self.buf[self.head_end : self.head_end + self.length]
        answer = Answer(self.status, self.head, body)
        if have == self.length and answer.header(b"connection") != b"close":
            self.pool.give_back(self.conn)
        else:
            self.conn.sock.close()
        return answer

    def _head(self, head: bytes) -> None:
        if head[:7] != b"HTTP/1." or head[8:9] != b" " or not head[9:12].isdigit():
            self.conn.sock.close()
            raise TransportError(f"replica {self.url} sent a malformed answer head {head[:80]!r}")
        self.status = int(head[9:12])
        line_end = head.find(b"\r\n")
        self.head = head[line_end:].lower() if line_end >= 0 else b""
        length = Answer(0, self.head, b"").header(b"content-length")
        try:
            self.length = int(length) if length is not None else 0
        except ValueError:
            self.length = -1
        if not 0 <= self.length <= MAX_BODY_BYTES:
            self.conn.sock.close()
            raise TransportError(f"replica {self.url} announced a body of {length!r} bytes")


@dataclass(eq=False)
class Call(Generic[T]):
    """One read: ``method path [body]`` to each of ``replicas`` in turn until one answers;
    ``interpret(url, answer)`` turns an answer into the result or raises its error."""

    replicas: Sequence[str]
    method: bytes
    path: str
    body: bytes | None
    interpret: Callable[[str, Answer], T]
    what: str = "read"
    result: T | None = None
    error: VeniceError | None = None
    done: bool = False
    next_index: int = 0
    hedge_at: float = 0.0
    budget_refused: bool = False
    in_flight: list[_Attempt] = field(default_factory=list)
    failures: list[VeniceError] = field(default_factory=list)


class ReplicaSockets:
    """Keep-alive sockets per storage server, and the health and budget of their replicas.
    Thread-safe: calls from many threads share pools and policy."""

    def __init__(self, *, health: ReplicaHealth | None = None, budget: RetryBudget | None = None,
                 hedge_after_s: float | None = None, authorization: str | None = None) -> None:
        self.authorization = authorization
        """``Bearer <token>`` sent to every server (reads of private stores need it)."""
        self.health = health if health is not None else ReplicaHealth()
        self.budget = budget if budget is not None else RetryBudget()
        self.hedge_after_s = hedge_after_s
        self.policy = threading.Lock()
        """Guards :attr:`health` and :attr:`budget` (plain objects, shared by threads)."""
        self._pools: dict[str, _Pool] = {}
        self._pools_lock = threading.Lock()

    def order(self, replicas: Sequence[str], spread: int) -> list[str]:
        with self.policy:
            return self.health.order(replicas, spread)

    def pool(self, url: str) -> _Pool:
        pool = self._pools.get(url)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(url)
                if pool is None:
                    pool = self._pools[url] = _Pool(url, self.authorization)
        return pool

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


_KEY_NOT_FOUND = b'"KEY_NOT_FOUND"'
_PLAIN_200 = re.compile(
    rb"HTTP/1\.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-venice-schema-id: (\d{1,9})\r\ncontent-length: (\d{1,9})\r\n\r\n"
)
"""A storage server's single-get answer as server/app.py writes it (any other layout is read
by the general parse, more slowly)."""


def get_hit(
    sockets: ReplicaSockets,
    replicas: Sequence[str],
    spread: int,
    path: str,
    interpret: Callable[[str, Answer], T],
    deadline_at: float,
    what: str,
) -> T:
    """A single get: :func:`run_calls` for one call, with its happy path written out flat, because a
    synchronous reader's throughput is this function's CPU time. The first replica in
    health order answers 200 or 404 within the hedge delay, on a kept-alive socket, in
    one receive: that answer is read here; anything else goes to the general path with
    the request where it stands. ``interpret`` reads any answer the general path gets."""
    health, policy = sockets.health, sockets.policy
    with policy:
        ordered = health.order(replicas, spread)
        sockets.budget.record_request()
        hedge_s = sockets.hedge_after_s if sockets.hedge_after_s is not None else health.hedge_after_s()
        url = ordered[0]
        started = health.started(url)
    pool = sockets._pools.get(url) or sockets.pool(url)
    with pool.lock:
        conn = pool.idle.pop() if pool.idle else None
    if conn is None:  # no socket to reuse: connect in the general path
        with policy:
            health.abandoned(url, started)
        return _finish_in_general_path(sockets, Call(ordered, b"GET", path, None, interpret, what=what), deadline_at, hedge_s)
    try:
        conn.sock.sendall(pool.get_request(path))
        data = conn.recv_within(hedge_s)
    except OSError:
        data = b""
    if not data:  # closed while idle (or reset): the request is sent again on a new socket
        conn.sock.close()
        with policy:
            health.abandoned(url, started)
        return _finish_in_general_path(sockets, Call(ordered, b"GET", path, None, interpret, what=what), deadline_at, hedge_s)
    plain = _PLAIN_200.match(data)
    if plain is not None and int(plain[2]) == len(data) - plain.end():
        # A storage server's usual answer, whole, in its usual layout: read with one match.
        pool.give_back(conn)
        with policy:
            health.succeeded(url, started)
        return (int(plain[1]), data[plain.end() :])  # type: ignore[return-value]
    end = data.find(b"\r\n\r\n")
    status = data[9:12]
    if end > 0 and data[:9] == b"HTTP/1.1 " and (status == b"200" or status == b"404"):
        head = data[data.find(b"\r\n") : end].lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0 and b"\r\nconnection:" not in head:
            stop = head.find(b"\r\n", at + 17)
            length = head[at + 17 : stop if stop >= 0 else len(head)].strip()
            body = data[end + 4 :]
            if length.isdigit() and int(length) == len(body):
                pool.give_back(conn)
                if status == b"200":
                    at = head.find(b"\r\nx-venice-schema-id:")
                    if at >= 0:
                        stop = head.find(b"\r\n", at + 21)
                        schema_id = head[at + 21 : stop if stop >= 0 else len(head)].strip()
                        if schema_id.isdigit():
                            with policy:
                                health.succeeded(url, started)
                            return (int(schema_id), body)  # type: ignore[return-value]
                elif _KEY_NOT_FOUND in body:
                    with policy:
                        health.succeeded(url, started)
                    return None  # type: ignore[return-value]
                call = Call(ordered, b"GET", path, None, interpret, what=what, next_index=1)
                return _finish_answer(sockets, call, url, started, Answer(int(status), head, body), deadline_at, hedge_s)
    # Anything less plain: the general path reads on from what came.
    call = Call(ordered, b"GET", path, None, interpret, what=what, next_index=1)
    attempt = _Attempt(pool, None, 0.0, started, conn)
    attempt.buf = b""
    try:
        answer = attempt.feed(data)
    except VeniceError as exc:
        _failed(sockets, call, url, exc)
        return _finish_in_general_path(sockets, call, deadline_at, hedge_s)
    if answer is None:
        call.in_flight.append(attempt)
        call.hedge_at = time.monotonic() + hedge_s
        return _finish_in_general_path(sockets, call, deadline_at, hedge_s)
    return _finish_answer(sockets, call, url, started, answer, deadline_at, hedge_s)


def _finish_answer(
    sockets: ReplicaSockets, call: Call[T], url: str, started: float, answer: Answer, deadline_at: float, hedge_s: float
) -> T:
    try:
        result = call.interpret(url, answer)
    except VeniceError as exc:
        if not exc.retriable:
            with sockets.policy:
                sockets.health.succeeded(url, started)
            raise
        _failed(sockets, call, url, exc)
        return _finish_in_general_path(sockets, call, deadline_at, hedge_s)
    with sockets.policy:
        sockets.health.succeeded(url, started)
    return result


def _finish_in_general_path(sockets: ReplicaSockets, call: Call[T], deadline_at: float, hedge_s: float) -> T:
    _run(sockets, [call], deadline_at, hedge_s)
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]


def run_calls(sockets: ReplicaSockets, calls: Sequence[Call[Any]], deadline_at: float) -> None:
    """Run ``calls`` to completion: each ends with ``result`` or ``error`` set
    (NoReplicaError when every replica failed or the budget refused a retry,
    DeadlineExceededError at ``deadline_at``, a ``time.monotonic()`` instant)."""
    health, budget, policy = sockets.health, sockets.budget, sockets.policy
    with policy:
        for _ in calls:
            budget.record_request()
        hedge_s = sockets.hedge_after_s if sockets.hedge_after_s is not None else health.hedge_after_s()
    _run(sockets, calls, deadline_at, hedge_s)


def _run(sockets: ReplicaSockets, calls: Sequence[Call[Any]], deadline_at: float, hedge_s: float) -> None:
    pending = list(calls)
    try:
        while pending:
            now = time.monotonic()
            for call in pending:
                _launch(sockets, call, now, deadline_at, hedge_s)
            pending = [c for c in pending if not c.done]
            if not pending:
                return
            now = time.monotonic()
            if now >= deadline_at:
                for call in pending:
                    _finish(call, error=DeadlineExceededError(f"{call.what}: no replica answered within the deadline", **_reasons(call)))
                return
            wake = deadline_at
            for call in pending:
                if call.next_index < len(call.replicas) and not call.budget_refused:
                    wake = min(wake, call.hedge_at)
            window = max(0.0, wake - now)
            if len(pending) == 1 and len(pending[0].in_flight) == 1:
                # One answer awaited (a single get before any hedge): a blocking receive
                # with a kernel timeout costs one system call where poll + receive cost two.
                if window > 0:
                    _read(sockets, pending[0], pending[0].in_flight[0], deadline_at, window)
                continue
            # poll, not select: a process may hold file descriptors beyond select's 1024.
            poller = select.poll()
            owner: dict[int, tuple[Call[Any], _Attempt]] = {}
            for call in pending:
                for attempt in call.in_flight:
                    fd = attempt.fileno()
                    owner[fd] = (call, attempt)
                    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            for fd, _ in poller.poll(window * 1000.0):
                call, attempt = owner[fd]
                if not call.done and attempt in call.in_flight:
                    _read(sockets, call, attempt, deadline_at)
    finally:
        for call in calls:
            _abandon_all(sockets, call)


def _launch(sockets: ReplicaSockets, call: Call[Any], now: float, deadline_at: float, hedge_s: float) -> None:
    """Start the call's next attempt when it has none in flight (first try or retry) or
    its hedge delay passed; record a call with nothing left to try as failed."""
    while not call.done:
        has_next = call.next_index < len(call.replicas) and not call.budget_refused
        if call.in_flight and not (has_next and now >= call.hedge_at):
            return
        if not has_next:
            if not call.in_flight:
                spent = " and the retry budget is spent" if call.budget_refused else ""
                _finish(call, error=NoReplicaError(
                    f"{call.what}: {len(call.failures)} replica(s) failed{spent}", **_reasons(call)))
            return
        if call.next_index > 0:
            with sockets.policy:
                allowed = sockets.budget.try_spend()
            if not allowed:
                call.budget_refused = True
                continue
        url = call.replicas[call.next_index]
        call.next_index += 1
        _start(sockets, call, url, deadline_at, retry_stale=True)
        call.hedge_at = time.monotonic() + hedge_s


def _start(sockets: ReplicaSockets, call: Call[Any], url: str, deadline_at: float, *, retry_stale: bool) -> None:
    with sockets.policy:
        started = sockets.health.started(url)
    try:
        pool = sockets.pool(url)
        request = pool.request(call.method, call.path, call.body)
        attempt = _Attempt(pool, request, deadline_at - time.monotonic(), started)
    except _Stale:
        with sockets.policy:
            sockets.health.abandoned(url, started)
        if retry_stale:  # closed by the server while idle: the request never arrived
            _start(sockets, call, url, deadline_at, retry_stale=False)
        else:
            _failed(sockets, call, url, TransportError(f"replica {url} closed the connection"))
        return
    except VeniceError as exc:
        _failed(sockets, call, url, exc)
        return
    call.in_flight.append(attempt)


def _read(sockets: ReplicaSockets, call: Call[Any], attempt: _Attempt, deadline_at: float, wait_s: float = 0.0) -> None:
    try:
        answer = attempt.read(wait_s)
    except _Stale:
        call.in_flight.remove(attempt)
        with sockets.policy:
            sockets.health.abandoned(attempt.url, attempt.started)
        _start(sockets, call, attempt.url, deadline_at, retry_stale=False)
        return
    except VeniceError as exc:
        call.in_flight.remove(attempt)
        _failed(sockets, call, attempt.url, exc)
        return
    if answer is None:
        return
    call.in_flight.remove(attempt)
    try:
        result = call.interpret(attempt.url, answer)
    except VeniceError as exc:
        if exc.retriable:
            _failed(sockets, call, attempt.url, exc)
            return
        with sockets.policy:  # a definitive answer (e.g. a bad request): the replica is fine
            sockets.health.succeeded(attempt.url, attempt.started)
        _finish(call, error=exc)
        _abandon_all(sockets, call)
        return
    with sockets.policy:
        sockets.health.succeeded(attempt.url, attempt.started)
    _finish(call, result=result)
    _abandon_all(sockets, call)  # the hedges that lost


def _failed(sockets: ReplicaSockets, call: Call[Any], url: str, exc: VeniceError) -> None:
    with sockets.policy:
        sockets.health.failed(url)
    if exc.retriable:
        call.failures.append(exc)
    else:
        _finish(call, error=exc)
        _abandon_all(sockets, call)


def _finish(call: Call[Any], *, result: Any = None, error: VeniceError | None = None) -> None:
    call.done, call.result, call.error = True, result, error


def _abandon_all(sockets: ReplicaSockets, call: Call[Any]) -> None:
    for attempt in call.in_flight:
        attempt.abandon()
        with sockets.policy:
            sockets.health.abandoned(attempt.url, attempt.started)
    call.in_flight.clear()


def _reasons(call: Call[Any]) -> dict[str, list[str]]:
    return {"replica_errors": [f"{f.code}: {f.message}" for f in call.failures]} if call.failures else {}
