"""What counting costs on the storage server's read path, measured in one process.

``python -m bench.metrics_cost`` builds a real LMDB store-version, makes its partition
ready in a real :class:`server.app.StorageApp`, and times ``fast_path`` (the whole
synchronous read: path parsing, the LMDB read, the answer) for single-key hits, in
alternating rounds keeping the best of each, so load from other processes hurts all
alike. The ways to count a read:

* ``shipped``: ``StorageApp`` as it is (an attribute increment on the storage object);
* ``uncounted``: the same read without any counting (``ReadPaths._get_bytes`` less
  its counting);
* ``dict_counter``: a :class:`venice.metrics.Counter` keyed by (store, version, kind, result);
* ``prometheus_client``: prometheus-client's ``Counter.labels(...).inc()``.

It prints ns per read for each and the overhead against ``uncounted``. No network.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable
from pathlib import Path

from server.app import StorageApp
from server.reads import ReadPaths
from server.service import ServerConfig, StorageService
from venice.errors import KeyNotFoundError
from venice.ingestion import VersionStorage
from venice.ingestion.records import Checkpoint
from venice.metrics import Counter
from venice.protocol import encode_key_segment

KEYS = 10_000
READS = 100_000
ROUNDS = 7

Count = Callable[[str, int, str, str], None]
Answer = tuple[int, bytes, bytes]
_HEAD = b"content-type: application/octet-stream\r\nx-venice-schema-id: 1\r\n"


class CountedBy(ReadPaths):
    """The storage server's single-key read path (``ReadPaths._get_bytes``) with its
    counting replaced by ``count`` (or nothing)."""

    def __init__(self, service: StorageService, count: Count | None) -> None:
        host = service.host
        super().__init__(host.ready, lambda: host.ready_set)
        self._count = count

    def _get_bytes(self, rest: bytes) -> Answer:
        head, _, segment = rest.rpartition(b"/")
        ready = self._ready_set()
        if ready is not self._readers_of:
            self._readers.clear()
            self._readers_of = ready
        entry = self._readers.get(head)
        if entry is None:
            entry = self._reader_for(head)
        read, _, store, version = entry
        if segment.isascii() and b"%" not in segment:
            key = urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
        else:
            raise AssertionError("the keys of this benchmark are plain base64url")
        raw = read(key)
        if raw is None:
            if self._count is not None:
                self._count(store, version, "single", "miss")
            raise KeyNotFoundError(f"key not found in {store} v{version}")
        if self._count is not None:
            self._count(store, version, "single", "hit")
        return 200, _HEAD, raw[4:]


def _time(app: StorageApp | ReadPaths, paths: list[bytes]) -> float:
    fast_path = app.fast_path
    n = len(paths)
    started = time.perf_counter()
    for i in range(READS):
        fast_path("GET", paths[i % n], b"", b"")
    return (time.perf_counter() - started) / READS * 1e9


async def main() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        service = StorageService(ServerConfig(data_dir=data_dir, controller_url="http://127.0.0.1:9"))
        storage = VersionStorage(data_dir / "v", 1, [0])
        keys = [b"key:%08d" % i for i in range(KEYS)]
        storage.apply(0, [(k, b"\x00\x00\x00\x01" + b"v" * 100) for k in keys], Checkpoint())
        service.host._ready[("bench", 1, 0)] = storage  # what a READY partition looks like to reads
        paths = [b"/v1/bench/1/0/" + encode_key_segment(k).encode() for k in keys]

        ours = Counter("venice_server_reads_total", "reads", ("store", "version", "kind", "result"))
        prom = PromCounter("venice_server_reads", "reads", ("store", "version", "kind", "result"), registry=CollectorRegistry())

        def dict_count(store: str, version: int, kind: str, result: str) -> None:
            ours.inc((store, str(version), kind, result))

        def prom_count(store: str, version: int, kind: str, result: str) -> None:
            prom.labels(store, str(version), kind, result).inc()

        apps: dict[str, StorageApp | ReadPaths] = {
            "uncounted": CountedBy(service, None),
            "shipped": StorageApp(service).reads,  # what its fast_path calls after the private-store check
            "dict_counter": CountedBy(service, dict_count),
            "prometheus_client": CountedBy(service, prom_count),
        }
        best = dict.fromkeys(apps, float("inf"))
        for _ in range(ROUNDS):
            for name, app in apps.items():
                best[name] = min(best[name], _time(app, paths))
        assert storage.hits == ROUNDS * READS, storage.hits  # the shipped way counted every read
        base = best["uncounted"]
        for name, ns in best.items():
            print(f"{name:18s} {ns:8.0f} ns/read  {(ns - base):+6.0f} ns  ({(ns - base) / base * 100:+.1f} %)")
        await service.close()


if __name__ == "__main__":
    asyncio.run(main())
