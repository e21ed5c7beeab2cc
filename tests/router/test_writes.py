"""The router's HTTP writes (PUT / DELETE / PATCH /storage/{store}/{key}) through a real
router on loopback, against a stand-in controller and the embedded log.

What the router puts on the real-time topic is read back with a plain consumer and
checked with fastavro and mmh3."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import RouterApp
from router.main import RouterConfig, build_app, build_server
from tests.rawhttp import read_until_close
from tests.router.fakes import MEMBER_SCHEMA, FakeController, refused_url, serve_in_thread, store_description, store_entry
from tests.test_producer import COUNTER, avro, create_topic, partition_of, read_topic, unavro
from venice.cluster import wait_for
from venice.httpserver import HttpLimits


@dataclass
class Router:
    url: str
    app: RouterApp
    controller: FakeController
    pubsub_url: str

    def add_store(
        self, name: str, key: Any, schemas: dict[int, Any], partitions: int = 3, *, topic: bool = True, **options: Any
    ) -> None:
        """A store in the routing table and on the controller (with its real-time topic when
        hybrid, unless ``topic=False``); again for a store there already: its new settings."""
        known = name in self.controller.descriptions
        self.controller.descriptions[name] = store_description(name, key, schemas, partitions, **options)
        hybrid, write_compute = options.get("hybrid", True), options.get("write_compute", False)
        entry = store_entry(key, schemas, partitions, None, {}, hybrid=hybrid, write_compute=write_compute, store=name)
        self.controller.set_store(name, entry)
        if hybrid and topic and self.pubsub_url.startswith("embedded") and not known:
            create_topic(self.pubsub_url, f"{name}_rt", partitions)

    def records(self, store: str, count: int) -> list[Any]:
        return read_topic(self.pubsub_url, f"{store}_rt", count)


@contextlib.contextmanager
def _router(pubsub_url: str, **config: Any) -> Iterator[Router]:
    """A real router (``RouterConfig`` settings ``config``, its HTTP limits included) on
    loopback in a thread, with a stand-in controller that names ``pubsub_url``."""
    controller = FakeController(pubsub_url=pubsub_url)
    with serve_in_thread(controller) as controller_url:
        settings = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5, **config)
        app = build_app(settings)
        with serve_in_thread(build_server(settings, app)) as url:
            yield Router(url, app, controller, pubsub_url)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    with _router(f"embedded://{tmp_path / 'log'}") as running:
        yield running


def wait_known(router: Router, store: str) -> None:
    """Until the router's routing table has ``store`` (it long-polls the controller)."""
    for _ in range(500):
        if store in router.app.cache.table.stores:
            return
        time.sleep(0.01)
    raise AssertionError(f"the router never learned of {store}")


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_put_delete_patch(router: Router) -> None:
    router.add_store("counters", "long", {1: COUNTER}, write_compute=True)
    wait_known(router, "counters")
    with httpx.Client(base_url=router.url) as http:
        put = http.put("/storage/counters/-5", content=b'{"hits": 2, "tags": ["a"]}')
        assert (put.status_code, put.json()) == (202, {"status": "accepted"})
        patch = http.patch("/storage/counters/-5", content=b'{"increment": {"hits": 3}}')
        assert patch.status_code == 202, patch.text
        delete = http.delete("/storage/counters/9")
        assert delete.status_code == 202, delete.text
    found = router.records("counters", 3)
    five = [m for m in found if m.key == avro("long", -5)]
    assert five[0].partition == partition_of(avro("long", -5), 3)
    assert unavro(COUNTER, five[0].value) == {"hits": 2, "tags": ["a"]}
    assert dict(five[1].headers) == {"schema-id": b"1", "venice-op": b"update"}
    assert [m.value for m in found if m.key == avro("long", 9)] == [None]


def test_values_with_bytes_and_url_encoded_keys(router: Router) -> None:
    router.add_store("members", "string", {1: MEMBER_SCHEMA})
    wait_known(router, "members")
    value = {"name": "Ann", "age": 41, "avatar": base64.b64encode(b"\x00\xff").decode()}
    response = httpx.put(f"{router.url}/storage/members/a%2Fb%20c", content=orjson.dumps(value))
    assert response.status_code == 202, response.text
    [record] = router.records("members", 1)
    assert record.key == avro("string", "a/b c")
    assert unavro(MEMBER_SCHEMA, record.value) == {"name": "Ann", "age": 41, "avatar": b"\x00\xff"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/storage/counters/1", b"", 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b"{nope", 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 1} {"hits": 2}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 1, "tags": ["\xff\xfe"]}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b"NaN", 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b"null", 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'"a string"', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b"[" * 1025 + b"]" * 1025, 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"tags": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": true}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 1.5}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 9223372036854775808}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 18446744073709551616}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"tags": [null]}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": "x"}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 1, "more": 2}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/1", b'{"hits": 1, "tags": ["' + b"x" * 100 + b'"]}', 400, "INVALID_VALUE"),
        ("PUT", "/storage/counters/+1", b'{"hits": 1}', 400, "INVALID_KEY"),
        ("PUT", "/storage/counters/1.5", b'{"hits": 1}', 400, "INVALID_KEY"),
        ("PUT", "/storage/counters/", b'{"hits": 1}', 400, "INVALID_KEY"),
        ("PUT", "/storage/counters/9223372036854775808", b'{"hits": 1}', 400, "INVALID_KEY"),
        ("PUT", "/storage/counters/%FF", b'{"hits": 1}', 400, "INVALID_KEY"),
        ("DELETE", "/storage/counters/x", b"", 400, "INVALID_KEY"),
        ("PUT", "/storage/counters/1?schema_id=9", b'{"hits": 1}', 400, "INVALID_SCHEMA"),
        ("PUT", "/storage/counters/1?schema_id=x", b'{"hits": 1}', 400, "BAD_REQUEST"),
        ("PUT", "/storage/counters/1?schema_id=0", b'{"hits": 1}', 400, "BAD_REQUEST"),
        ("PUT", "/storage/counters/1?schema_id=99999999999", b'{"hits": 1}', 400, "BAD_REQUEST"),
        ("PATCH", "/storage/counters/1", b'{"increment": {"tags": 1}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"explode": {"hits": 1}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b"[]", 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b"", 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b"{}", 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"set": {"hits": "x"}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"set": {"nope": 1}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"increment": {"hits": 1.5}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"increment": {"hits": 9223372036854775808}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1", b'{"set": {"tags": ["' + b"x" * 100 + b'"]}}', 400, "INVALID_VALUE"),
        ("PATCH", "/storage/counters/1?schema_id=9", b'{"set": {"hits": 1}}', 400, "INVALID_SCHEMA"),
        ("PATCH", "/storage/plain/1", b'{"increment": {"hits": 1}}', 400, "WRITE_COMPUTE_DISABLED"),
        ("PUT", "/storage/batch/1", b'{"hits": 1}', 409, "NOT_HYBRID"),
        ("PATCH", "/storage/batch/1", b'{"set": {"hits": 1}}', 409, "NOT_HYBRID"),
        ("DELETE", "/storage/batch/1", b"", 409, "NOT_HYBRID"),
        ("PUT", "/storage/absent/1", b'{"hits": 1}', 404, "STORE_NOT_FOUND"),
        ("DELETE", "/storage/absent/1", b"", 404, "STORE_NOT_FOUND"),
        ("PUT", "/storage/%FF/1", b'{"hits": 1}', 400, "BAD_REQUEST"),
        ("POST", "/storage/counters/1", b'{"hits": 1}', 405, "BAD_REQUEST"),
    ],
)
def test_bad_writes_are_refused_and_nothing_is_sent(
    router: Router, method: str, path: str, body: bytes, status: int, code: str
) -> None:
    router.add_store("counters", "long", {1: COUNTER}, write_compute=True, max_value_bytes=64)
    router.add_store("plain", "long", {1: COUNTER})
    router.add_store("batch", "long", {1: COUNTER}, hybrid=False)
    for store in ("counters", "plain", "batch"):
        wait_known(router, store)
    response = httpx.request(method, router.url + path, content=body)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert router.records("counters", 0) == [] and router.records("plain", 0) == []


def test_unknown_and_batch_only_stores_cost_the_controller_nothing(router: Router) -> None:
    router.add_store("counters", "long", {1: COUNTER})
    router.add_store("batch", "long", {1: COUNTER}, hybrid=False)
    wait_known(router, "counters")
    wait_known(router, "batch")
    with httpx.Client(base_url=router.url) as http:
        for i in range(50):
            assert http.put(f"/storage/made-up-{i}/1", content=b"1").status_code == 404
            assert http.delete("/storage/batch/1").status_code == 409
    assert router.controller.describes == 0


def test_settings_changed_on_the_controller_reach_the_writes(router: Router) -> None:
    """The routing table shows write compute turned on and a new schema; the router
    fetches the store's description again instead of refusing with the old one."""
    router.add_store("counters", "long", {1: COUNTER})
    wait_known(router, "counters")
    with httpx.Client(base_url=router.url) as http:
        refused = http.patch("/storage/counters/1", content=b'{"increment": {"hits": 1}}')
        assert error_code(refused) == "WRITE_COMPUTE_DISABLED"
        v2 = {**COUNTER, "fields": [*COUNTER["fields"], {"name": "note", "type": "string", "default": ""}]}
        router.add_store("counters", "long", {1: COUNTER, 2: v2}, write_compute=True)

        def accepted() -> bool:
            return http.patch("/storage/counters/1?schema_id=2", content=b'{"set": {"note": "hi"}}').status_code == 202

        wait_for(accepted, 30, "the router to take the new settings")
    found = router.records("counters", 1)
    assert dict(found[-1].headers) == {"schema-id": b"2", "venice-op": b"update"}


BODY_LIMIT = 16 * 1024 * 1024
"""The router's body limit by default (docs/failure-model.md, HTTP limits)."""


def test_a_body_over_the_limit_is_413_and_the_router_goes_on(router: Router) -> None:
    """Writes take bodies up to the router's body limit (16 MiB); one byte more is 413
    BODY_TOO_LARGE (a client that sends it anyway still reads the answer), nothing is
    sent, and the next write is served."""
    router.add_store("counters", "long", {1: COUNTER}, max_value_bytes=BODY_LIMIT)
    wait_known(router, "counters")
    with httpx.Client(base_url=router.url, timeout=120) as http:
        response = http.put("/storage/counters/1", content=b" " * (BODY_LIMIT + 1))
        assert (response.status_code, error_code(response)) == (413, "BODY_TOO_LARGE")
        assert f"over the limit of {BODY_LIMIT} bytes" in response.json()["error"]["message"]
        # Exactly at the limit: read and decoded (a string of 16 MiB less the framing).
        at_limit = b'{"hits": 1, "tags": ["' + b"x" * (BODY_LIMIT - 50) + b'"]}'
        at_limit += b" " * (BODY_LIMIT - len(at_limit))
        assert len(at_limit) == BODY_LIMIT
        assert http.put("/storage/counters/2", content=at_limit).status_code == 202
    [record] = router.records("counters", 1)
    assert record.key == avro("long", 2)
    assert unavro(COUNTER, record.value) == {"hits": 1, "tags": ["x" * (BODY_LIMIT - 50)]}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_announced_body_over_the_limit_is_413_before_it_is_sent(router: Router, method: str) -> None:
    """The refusal comes from Content-Length alone: the client gets its 413 without
    sending a byte of the body, and the connection is closed."""
    router.add_store("counters", "long", {1: COUNTER}, write_compute=True)
    wait_known(router, "counters")
    host, port = router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"{method} /storage/counters/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY_LIMIT + 1}\r\n\r\n".encode())
        answer = read_until_close(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "BODY_TOO_LARGE"
    assert httpx.put(f"{router.url}/storage/counters/2", content=b'{"hits": 1}', timeout=30).status_code == 202
    [record] = router.records("counters", 1)
    assert (record.key, unavro(COUNTER, record.value)["hits"]) == (avro("long", 2), 1)


def test_keys_up_to_511_bytes(router: Router) -> None:
    """A key is at most 511 bytes serialized (LMDB's limit): a string of 509 characters is
    511 bytes in Avro (two bytes of length), one more character is refused."""
    router.add_store("names", "string", {1: COUNTER})
    wait_known(router, "names")
    assert len(avro("string", "k" * 509)) == 511
    with httpx.Client(base_url=router.url) as http:
        too_long = http.put("/storage/names/" + "k" * 510, content=b'{"hits": 1}')
        assert (too_long.status_code, error_code(too_long)) == (400, "INVALID_KEY")
        assert http.put("/storage/names/" + "k" * 509, content=b'{"hits": 2}').status_code == 202
    [record] = router.records("names", 1)
    assert (record.key, unavro(COUNTER, record.value)["hits"]) == (avro("string", "k" * 509), 2)


def test_a_real_time_topic_not_created_yet_is_503_until_it_is(router: Router) -> None:
    """The controller creates a hybrid store's real-time topic in the background: until it
    exists a write is 503 UNAVAILABLE (retriable), and then it goes through."""
    router.add_store("late", "long", {1: COUNTER}, topic=False)
    wait_known(router, "late")
    with httpx.Client(base_url=router.url, timeout=30) as http:
        early = http.put("/storage/late/1", content=b'{"hits": 1}')
        assert (early.status_code, error_code(early)) == (503, "UNAVAILABLE")
        create_topic(router.pubsub_url, "late_rt", 3)
        assert http.put("/storage/late/1", content=b'{"hits": 2}').status_code == 202
    [record] = router.records("late", 1)
    assert unavro(COUNTER, record.value) == {"hits": 2, "tags": []}


def test_concurrent_writes_are_all_durable(router: Router) -> None:
    router.add_store("counters", "string", {1: COUNTER}, 4)
    wait_known(router, "counters")

    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=router.url, limits=httpx.Limits(max_connections=50)) as http:
            answers = await asyncio.gather(
                *(http.put(f"/storage/counters/k{i}", content=orjson.dumps({"hits": i})) for i in range(100))
            )
        return [a.status_code for a in answers]

    assert asyncio.run(flood()) == [202] * 100
    found = router.records("counters", 100)
    assert {unavro("string", m.key): unavro(COUNTER, m.value)["hits"] for m in found} == {f"k{i}": i for i in range(100)}
    commit = router.app.writes.commit
    assert commit.committed == 100 and commit.rounds <= 100


def test_a_flood_beyond_the_buffer_is_503_not_memory() -> None:
    """A pub-sub that cannot be reached holds the first round; the buffer fills; the
    next write is refused at once (503 OVERLOADED), and the held ones time out (504)."""
    with refused_url() as dead:
        broker = dead.removeprefix("http://")
        with _router(f"kafka://{broker}", max_pending_writes=3, write_timeout_s=1.0) as router:
            router.add_store("counters", "long", {1: COUNTER})
            wait_known(router, "counters")

            async def flood() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
                    held = [asyncio.create_task(http.put(f"/storage/counters/{i}", content=b'{"hits": 1}')) for i in range(3)]
                    while router.app.writes.commit.pending_records < 3:
                        await asyncio.sleep(0.01)
                    refused = await http.put("/storage/counters/99", content=b'{"hits": 1}')
                    return [refused, *await asyncio.gather(*held)]

            refused, *held = asyncio.run(flood())
            assert (refused.status_code, error_code(refused)) == (503, "OVERLOADED")
            assert [(r.status_code, error_code(r)) for r in held] == [(504, "DEADLINE_EXCEEDED")] * 3
            assert "may or may not be applied" in held[0].json()["error"]["message"]


def test_a_slow_body_is_not_waited_for_forever(tmp_path: Path) -> None:
    """A client that announces a body and sends part of it, then nothing: the router
    neither writes the record nor holds the connection for ever (its HTTP server answers
    408 REQUEST_TIMEOUT and closes a connection silent inside a body for its keep-alive
    time, here 1 s)."""
    with _router(f"embedded://{tmp_path / 'log'}", http=HttpLimits(keepalive_s=1.0)) as router:
        router.add_store("counters", "long", {1: COUNTER})
        wait_known(router, "counters")
        host, port = router.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(b"PUT /storage/counters/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"hits\"")
            answer = read_until_close(sock)  # until the server closes the connection
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
        error = orjson.loads(body)["error"]
        assert error["code"] == "REQUEST_TIMEOUT" and "body not complete" in error["message"]
        assert httpx.put(f"{router.url}/storage/counters/2", content=b'{"hits": 1}').status_code == 202
        [record] = router.records("counters", 1)
        assert record.key == avro("long", 2)
