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


class TestGetOnBytes:
    """The GET fast path on the path's bytes (cached readers, reused read transactions)
    answers exactly what the decoding path (``_get_answer`` over decoded segments) answers,
    for good and hostile paths, and sees data written after its first read."""

    @pytest.fixture
    def app(self, tmp_path: Path) -> Iterator[tuple[StorageApp, object]]:
        from venice.ingestion.records import Checkpoint, encode_stored
        from venice.ingestion.storage import VersionStorage

        with refused_url() as controller:
            service = StorageService(ServerConfig(tmp_path / "s", controller, server_id="s"))
            storage = VersionStorage(tmp_path / "v", 2, [0, 1])
            storage.apply(0, [(b"k", encode_stored(3, b"value-k")), (b"\xff\x00", encode_stored(7, b""))], Checkpoint(1))
            service.host._ready = {("s", 1, 0): storage, ("s/x", 1, 1): storage, ("é", 2, 0): storage}
            yield StorageApp(service), storage
            storage.close()

    @staticmethod
    def answer(call: object, *args: object) -> tuple[object, ...]:
        from venice.errors import VeniceError
        from venice.httpserver import header_list

        try:
            status, headers, body = call(*args)  # type: ignore[operator]
            return status, sorted(header_list(headers)), body
        except VeniceError as exc:
            return exc.code, exc.message

    def decoding_path(self, app: StorageApp, rest: bytes) -> tuple[object, ...]:
        """The read path as it was before the bytes path: every segment percent-decoded
        and UTF-8 decoded, then ints, the storage's ``get`` and the stored value split."""
        from urllib.parse import unquote_to_bytes

        from venice.errors import KeyNotFoundError, RequestError
        from venice.ingestion import decode_stored
        from venice.protocol import decode_key_segment

        def get(parts: list[str]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            store, version, partition, key_text = parts
            try:
                version_n, partition_n = int(version), int(partition)
            except ValueError as exc:
                raise RequestError(f"malformed read path: {exc}") from exc
            raw = app.service.host.ready(store, version_n, partition_n).get(partition_n, decode_key_segment(key_text))
            if raw is None:
                raise KeyNotFoundError(f"key not found in {store} v{version_n}")
            schema_id, value = decode_stored(raw)
            return 200, [(b"content-type", b"application/octet-stream"), (b"x-venice-schema-id", b"%d" % schema_id)], value

        parts = [(unquote_to_bytes(p) if b"%" in p else p).decode("utf-8", "replace") for p in rest.split(b"/")]
        return self.answer(get, parts)

    def test_same_answers_as_the_decoding_path(self, app: tuple[StorageApp, object]) -> None:
        server, _ = app
        good = base64.urlsafe_b64encode(b"k").rstrip(b"=")
        odd = base64.urlsafe_b64encode(b"\xff\x00").rstrip(b"=")
        paths = [
            b"s/1/0/" + good, b"s/01/00/" + good, b"s/1/0/" + good + b"=", b"s/1/0/" + good + b"==",
            b"s/1/0/" + odd, b"s/1/0/" + odd.replace(b"_", b"%5F"), b"s%2Fx/1/1/" + good, b"%C3%A9/2/0/" + good,
            "é".encode() + b"/2/0/" + good, b"s/1/0/" + b"a2%", b"s/1/0/" + "ké".encode(), b"s/1/0/!!!!", b"s/1/0/a",
            b"s/1/0/", b"s/1/1/" + good, b"s/2/0/" + good, b"s/one/0/" + good, b"s/1/ 0/" + good, b"s/1/0_0/" + good,
            b"s/1/-0/" + good, b"/1/0/" + good, b"s/1/0/" + b"%00", b"s/99999999999999999999999/0/" + good,
        ]
        for rest in paths:
            for _ in range(2):  # a miss, then the cached reader
                assert self.answer(server.reads._get_bytes, rest) == self.decoding_path(server, rest), rest
        assert self.answer(server.reads._get_bytes, b"s/1/0/" + good)[0] == 200
        assert self.answer(server.reads._get_bytes, b"s/1/0/!!!")[0] == "BAD_REQUEST"  # not the empty key

    def test_each_read_counts_once(self, app: tuple[StorageApp, object]) -> None:
        """The metrics' read counters move by exactly one per read, on the first read of a
        partition (reader lookup) and on the cached reader alike; refusals go to the
        refused counter with the store-version only when it is hosted."""
        server, storage = app
        good = base64.urlsafe_b64encode(b"k").rstrip(b"=")
        missing = base64.urlsafe_b64encode(b"nope").rstrip(b"=")
        for n in range(1, 4):
            assert server.fast_path("GET", b"/v1/s/1/0/" + good, b"", b"")[2] == b"value-k"  # type: ignore[index]
            assert (storage.hits, storage.misses) == (n, n - 1)  # type: ignore[attr-defined]
            assert self.answer(server.fast_path, "GET", b"/v1/s/1/0/" + missing, b"", b"")[0] == "KEY_NOT_FOUND"
            assert (storage.hits, storage.misses) == (n, n)  # type: ignore[attr-defined]
        frames = struct.pack(">II", 0, 1) + b"k" + struct.pack(">II", 0, 4) + b"nope"
        server.fast_path("POST", b"/v1/batch/s/1", b"", frames)
        assert (storage.batches, storage.batch_keys) == (1, 2)  # type: ignore[attr-defined]
        assert self.answer(server.fast_path, "GET", b"/v1/s/1/7/" + good, b"", b"")[0] == "REPLICA_NOT_READY"
        assert self.answer(server.fast_path, "GET", b"/v1/zz/x/0/" + good, b"", b"")[0] == "BAD_REQUEST"
        assert self.answer(server.fast_path, "POST", b"/v1/batch/s/1", b"", b"abc")[0] == "BAD_REQUEST"
        assert server.metrics.refused.values == {
            ("_other", "_other", "single", "REPLICA_NOT_READY"): 1,
            ("_other", "_other", "single", "BAD_REQUEST"): 1,
            ("_other", "_other", "batch", "BAD_REQUEST"): 1,
        }

    def test_sees_writes_made_after_its_first_read(self, app: tuple[StorageApp, object]) -> None:
        from venice.ingestion.records import Checkpoint, encode_stored

        server, storage = app
        key = base64.urlsafe_b64encode(b"new").rstrip(b"=")
        assert self.answer(server.reads._get_bytes, b"s/1/0/" + key)[0] == "KEY_NOT_FOUND"
        for n in range(5):
            storage.apply(0, [(b"new", encode_stored(1, b"v%d" % n))], Checkpoint(2 + n))  # type: ignore[attr-defined]
            assert server.reads._get_bytes(b"s/1/0/" + key)[2] == b"v%d" % n

    def test_a_partition_no_longer_ready_is_refused_at_once(self, app: tuple[StorageApp, object]) -> None:
        server, storage = app
        good = base64.urlsafe_b64encode(b"k").rstrip(b"=")
        assert server.reads._get_bytes(b"s/1/0/" + good)[2] == b"value-k"
        server.service.host._ready = {("s", 1, 1): storage}  # partition 0 moved away
        assert self.answer(server.reads._get_bytes, b"s/1/0/" + good)[0] == "REPLICA_NOT_READY"

    def test_many_ready_set_changes_hold_one_read_transaction_per_partition(self, app: tuple[StorageApp, object]) -> None:
        """The reader cache is dropped at every change of the ready set; the readers it
        finds again must be the storage's one per partition, or each drop would leak an
        open read transaction and LMDB's reader slots (126) would run out."""
        server, storage = app
        good = base64.urlsafe_b64encode(b"k").rstrip(b"=")
        for _ in range(300):
            server.service.host._ready = {("s", 1, 0): storage}
            assert server.reads._get_bytes(b"s/1/0/" + good)[2] == b"value-k"
        assert storage.env.readers().count("\n") < 10  # type: ignore[attr-defined]
