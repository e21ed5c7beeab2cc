"""What counting costs on the storage server's read path, measured in one process.

``python -m bench.metrics_cost`` builds a real LMDB store-version, makes its partition
ready in a real :class:`server.app.StorageApp`, and times ``fast_path`` (the whole
synchronous read: path parsing, the LMDB read, the answer) for single-key hits, in
alternating rounds keeping the best of each, so load from other processes hurts all
alike. The ways to count a read:

* ``shipped``: ``StorageApp`` as it is (an attribute increment on the storage object);
* ``uncounted``: the same read without any counting (the code before metrics);
* ``dict_counter``: a :class:`venice.metrics.Counter` keyed by (store, version, kind, result);
* ``prometheus_client``: prometheus-client's ``Counter.labels(...).inc()``.

It prints ns per read for each and the overhead against ``uncounted``. No network.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server.app import StorageApp
from server.service import ServerConfig, StorageService
from venice.errors import KeyNotFoundError, RequestError
from venice.ingestion import VersionStorage, decode_stored
from venice.ingestion.records import Checkpoint
from venice.metrics import Counter
from venice.protocol import decode_key_segment, encode_key_segment

KEYS = 10_000
READS = 100_000
ROUNDS = 7

Count = Callable[[str, int, str, str], None]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class CountedBy(StorageApp):
    """The storage server's single-key read as before metrics, plus ``count`` (or nothing)."""

    def __init__(self, service: StorageService, count: Count | None) -> None:
        super().__init__(service)
        self._count = count

    def _get_answer(self, parts: list[str]) -> Answer:
        store, version, partition, key_text = parts
        try:
            version_n, partition_n = int(version), int(partition)
        except ValueError as exc:
            raise RequestError(f"malformed read path: {exc}") from exc
        raw = self._ready(store, version_n, partition_n).get(partition_n, decode_key_segment(key_text))
        if raw is None:
            if self._count is not None:
                self._count(store, version_n, "single", "miss")
            raise KeyNotFoundError(f"key not found in {store} v{version_n}")
        if self._count is not None:
            self._count(store, version_n, "single", "hit")
        schema_id, value = decode_stored(raw)
        return 200, [(b"content-type", b"application/octet-stream"), (b"venice-schema-id", b"%d" % schema_id)], value


def _time(app: StorageApp, paths: list[bytes]) -> float:
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

        apps = {
            "uncounted": CountedBy(service, None),
            "shipped": StorageApp(service),
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
