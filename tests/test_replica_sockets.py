"""venice.replica_sockets, the direct client's blocking reads, against real loopback
servers that behave (answers in pieces, big bodies, kept-alive sockets) and that do not
(refuse, hang, close kept-alive sockets, answer garbage)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from venice.direct import interpret_get
from venice.errors import DeadlineExceededError, InvalidKeyError, NoReplicaError, VeniceError
from venice.replica_health import ReplicaHealth, RetryBudget
from venice.replica_sockets import Answer, Call, ReplicaSockets, get_hit, run_calls

Handler = Callable[[socket.socket, bytes, int], bool]
"""``(connection, request head, request number on this connection)`` -> keep the connection open."""


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"x-venice-schema-id: 3\r\n") -> bytes:
    return b"HTTP/1.1 " + status.encode() + b"\r\ncontent-length: %d\r\n" % len(body) + extra + b"\r\n" + body


class RawServer:
    """A loopback server answering each request with ``handler``; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data, number = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        more = conn.recv(65536)
                    except OSError:
                        return
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests += 1
                try:
                    if not self.handler(conn, head, number):
                        return
                except OSError:
                    return
                number += 1

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@contextmanager
def servers(*handlers: Handler) -> Iterator[list[RawServer]]:
    running = [RawServer(h) for h in handlers]
    try:
        yield running
    finally:
        for server in running:
            server.close()


def ok(body: bytes = b"value") -> Handler:
    def handle(conn: socket.socket, head: bytes, number: int) -> bool:
        conn.sendall(answer(body))
        return True

    return handle


def hang(conn: socket.socket, head: bytes, number: int) -> bool:
    time.sleep(5)
    return False


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def plain() -> ReplicaSockets:
    """No hedging surprises: a fixed hedge delay, and a budget that never runs out."""
    return ReplicaSockets(hedge_after_s=0.2, budget=RetryBudget(ratio=1.0, burst=1000.0))


def get(sockets: ReplicaSockets, urls: list[str], deadline_s: float = 3.0) -> object:
    return get_hit(sockets, urls, 0, "/v1/s/1/0/AA", interpret_get, time.monotonic() + deadline_s, "test")


class TestAnswers:
    def test_plain_answer_and_keep_alive(self) -> None:
        with servers(ok(b"hello")) as [server]:
            sockets = plain()
            for _ in range(5):
                assert get(sockets, [server.url]) == (3, b"hello")
            assert server.connections == 1 and server.requests == 5
            sockets.close()

    def test_answer_in_pieces_and_big_bodies(self) -> None:
        big = bytes(range(256)) * 8192  # 2 MiB

        def pieces(conn: socket.socket, head: bytes, number: int) -> bool:
            data = answer(big)
            for start in range(0, len(data), 100_000):
                conn.sendall(data[start : start + 100_000])
                time.sleep(0.001)
            return True

        with servers(pieces) as [server]:
            sockets = plain()
            assert get(sockets, [server.url]) == (3, big)
            assert get(sockets, [server.url]) == (3, big)
            sockets.close()

    def test_missing_key_is_none_and_a_bad_request_is_raised_as_is(self) -> None:
        def missing(conn: socket.socket, head: bytes, number: int) -> bool:
            if b"/bad" in head:
                conn.sendall(answer(b'{"error": {"code": "INVALID_KEY", "message": "bad key"}}', "400 Bad Request", b""))
            else:
                conn.sendall(answer(b'{"error": {"code": "KEY_NOT_FOUND", "message": "no"}}', "404 Not Found", b""))
            return True

        with servers(missing) as [server]:
            sockets = plain()
            assert get(sockets, [server.url]) is None
            with pytest.raises(InvalidKeyError, match="bad key"):
                get_hit(sockets, [server.url], 0, "/bad", interpret_get, time.monotonic() + 3, "test")
            sockets.close()


class TestFailover:
    def test_a_kept_alive_socket_closed_by_the_server_is_retried_on_a_new_one(self) -> None:
        def once(conn: socket.socket, head: bytes, number: int) -> bool:
            conn.sendall(answer(b"v"))
            return False  # closes the connection after one answer, without saying so

        with servers(once) as [server]:
            sockets = plain()
            for _ in range(4):
                assert get(sockets, [server.url]) == (3, b"v")
            assert server.requests == 4
            sockets.close()

    def test_refused_then_healthy(self) -> None:
        with servers(ok(b"second")) as [server]:
            sockets = plain()
            assert get(sockets, [refused_url(), server.url]) == (3, b"second")
            sockets.close()

    @pytest.mark.parametrize(
        "garbage",
        [b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
         b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
         b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nab", b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 20000],
    )
    def test_garbage_answers_move_on_to_the_next_replica(self, garbage: bytes) -> None:
        def broken(conn: socket.socket, head: bytes, number: int) -> bool:
            conn.sendall(garbage)
            return False

        with servers(broken, ok(b"good")) as [bad, good]:
            sockets = plain()
            assert get(sockets, [bad.url, good.url]) == (3, b"good")
            assert bad.requests == 1 and good.requests == 1
            sockets.close()

    def test_a_silent_replica_gets_company_and_the_first_answer_wins(self) -> None:
        with servers(hang, ok(b"hedged")) as [slow, fast]:
            sockets = plain()
            assert get(sockets, [slow.url, fast.url]) == (3, b"hedged")
            assert slow.requests == 1 and fast.requests == 1
            sockets.close()

    def test_a_503_moves_on(self) -> None:
        def unavailable(conn: socket.socket, head: bytes, number: int) -> bool:
            conn.sendall(answer(b'{"error": {"code": "REPLICA_NOT_READY", "message": "not yet"}}', "503 Service Unavailable", b""))
            return True

        with servers(unavailable, ok(b"ready")) as [first, second]:
            sockets = plain()
            assert get(sockets, [first.url, second.url]) == (3, b"ready")
            sockets.close()

    def test_every_replica_failing_is_no_replica_naming_them(self) -> None:
        sockets = plain()
        with pytest.raises(NoReplicaError) as caught:
            get(sockets, [refused_url(), refused_url()])
        assert len(caught.value.details["replica_errors"]) == 2

    def test_only_silent_replicas_is_a_deadline(self) -> None:
        with servers(hang, hang) as [a, b]:
            sockets = plain()
            with pytest.raises(DeadlineExceededError):
                get(sockets, [a.url, b.url], deadline_s=0.6)
            sockets.close()

    def test_a_spent_budget_makes_a_failure_final(self) -> None:
        with servers(ok(b"never reached")) as [server]:
            sockets = ReplicaSockets(hedge_after_s=0.2, budget=RetryBudget(ratio=0.0, floor_per_s=0.0, burst=0.0))
            with pytest.raises(NoReplicaError, match="budget"):
                get(sockets, [refused_url(), server.url])
            assert server.requests == 0
            sockets.close()

    def test_failed_replicas_go_last_next_time(self) -> None:
        with servers(ok(b"a")) as [server]:
            dead = refused_url()
            sockets = ReplicaSockets(hedge_after_s=0.2, health=ReplicaHealth(), budget=RetryBudget(ratio=1.0, burst=1000.0))
            get(sockets, [dead, server.url])
            assert sockets.order([dead, server.url], 0) == [server.url, dead]
            sockets.close()


class TestScatter:
    def test_calls_run_together_and_fail_alone(self) -> None:
        def echo_path(conn: socket.socket, head: bytes, number: int) -> bool:
            path = head.split(b" ")[1]
            conn.sendall(answer(path))
            return True

        def interpret(url: str, a: Answer) -> bytes:
            if a.status != 200:
                raise VeniceError("unexpected")
            return a.body

        with servers(echo_path, hang) as [good, slow]:
            sockets = plain()
            calls = [Call([good.url], b"POST", f"/p{i}", b"x" * (i * 1000), interpret, what=f"call {i}") for i in range(5)]
            stuck = Call([slow.url], b"GET", "/stuck", None, interpret, what="stuck")
            run_calls(sockets, [*calls, stuck], time.monotonic() + 0.8)
            assert [c.result for c in calls] == [f"/p{i}".encode() for i in range(5)]
            assert isinstance(stuck.error, DeadlineExceededError)
            sockets.close()
