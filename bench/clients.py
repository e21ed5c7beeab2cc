"""The clients that skip hops (issue 9), measured beside what they replace:

* ``sdk_direct_get``: ``venice.Client(router, direct=True).get`` in one thread vs redis-py
  ``get`` (the same keys and values as ``sdk_get``);
* ``davinci_get``: ``venice.DaVinciClient.get`` on a local copy of the bench store, one
  thread, vs redis-py ``get``;
* ``compute100``: ``Client.compute`` of 100 random keys (dot product of a 64-float
  embedding with a vector, on the storage servers) vs ``Client.batch_get`` of the same
  keys through the router and the dot product with numpy in the client: items are keys.

Every loop checks a sample of its answers (every 97th) against the known data, and
compute's answers against the client-side computation.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from bench import data
from bench.loadgen import python_loop
from bench.results import CLIENT_SIDE, Run
from venice.controller_client import ControllerClient

if TYPE_CHECKING:
    from bench.cli import Bench

__all__ = ["EMBED_STORE", "measure_compute", "measure_davinci", "measure_direct"]

EMBED_STORE = "bench-embed"
EMBED_DIM = 64
EMBED_RECORDS = 10_000
EMBED_SCHEMA = {
    "type": "record",
    "name": "Doc",
    "fields": [{"name": "title", "type": "string"}, {"name": "embedding", "type": {"type": "array", "items": "float"}}],
}


def _redis_loop(bench: Bench, metric: str, keys: list[str]) -> Callable[[int, float], Run]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=bench.redis.port)

    def ok(key: str, got: object) -> bool:
        return isinstance(got, bytes) and got.decode() == data.value(int(key[4:]))

    def loop(round_no: int, seconds: float) -> Run:
        return python_loop(client.get, keys, seconds=seconds, max_ops=5_000_000, metric=metric, side="redis",
                           generator="python loop, redis-py get", check=ok, round_no=round_no)

    return loop


def _venice_ok(key: str, got: object) -> bool:
    return got == data.value(int(key[4:]))


def measure_direct(bench: Bench, log: Callable[[str], None]) -> None:
    import venice

    keys = [data.key(i) for i in data.sample_indexes(bench.args.keys, 50_000, seed=37)]
    with venice.Client(bench.venice.router_url, direct=True) as client:
        if client.get(data.STORE, keys[0]) != data.value(int(keys[0][4:])):
            raise RuntimeError("the direct client answered a wrong value")

        def venice_loop(round_no: int, seconds: float) -> Run:
            return python_loop(lambda k: client.get(data.STORE, k), keys, seconds=seconds, max_ops=5_000_000,
                               metric="sdk_direct_get", side="venice", generator="python loop, venice.Client(direct=True).get",
                               check=_venice_ok, round_no=round_no)

        bench.measure_pair("sdk_direct_get", venice_loop, _redis_loop(bench, "sdk_direct_get", keys))


def measure_davinci(bench: Bench, log: Callable[[str], None]) -> dict[str, Any]:
    import venice

    keys = [data.key(i) for i in data.sample_indexes(bench.args.keys, 50_000, seed=41)]
    started = time.perf_counter()
    log(f"Da Vinci client: ingesting the bench store ({bench.args.keys:,} keys) into local LMDB")
    with venice.DaVinciClient(bench.venice.controller_url, data.STORE, data_dir=bench.work / "davinci") as dv:
        bootstrap_s = time.perf_counter() - started
        log(f"Da Vinci client caught up in {bootstrap_s:.1f}s (v{dv.version})")

        def venice_loop(round_no: int, seconds: float) -> Run:
            return python_loop(dv.get, keys, seconds=seconds, max_ops=20_000_000, metric="davinci_get", side="venice",
                               generator="python loop, venice.DaVinciClient.get", check=_venice_ok, round_no=round_no)

        bench.measure_pair("davinci_get", venice_loop, _redis_loop(bench, "davinci_get", keys))
    return {"bootstrap_s": round(bootstrap_s, 2), "keys": bench.args.keys}


def _load_embeddings(bench: Bench, log: Callable[[str], None]) -> dict[int, list[float]]:
    rng = random.Random(17)
    docs = {k: [rng.uniform(-1, 1) for _ in range(EMBED_DIM)] for k in range(EMBED_RECORDS)}
    path = bench.work / "embed.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": k, "title": f"doc {k}", "embedding": e}) + b"\n" for k, e in docs.items()))
    with ControllerClient(bench.venice.controller_url) as controller:
        controller.create_store({
            "name": EMBED_STORE, "key_schema": "long", "value_schema": EMBED_SCHEMA, "partitions": bench.venice.partitions,
            "replication_factor": 2})
    log(f"pushing {EMBED_RECORDS:,} records with {EMBED_DIM}-float embeddings to {EMBED_STORE}")
    pushed = subprocess.run([sys.executable, "-m", "venice", "push", "--controller", bench.venice.controller_url,
                             "--store", EMBED_STORE, "--input", str(path), "--key-field", "id", "--no-progress"],
                            capture_output=True, text=True, timeout=1800)
    if pushed.returncode != 0:
        raise RuntimeError(f"pushing {EMBED_STORE} failed: {pushed.stderr[-2000:]}")
    return docs


def measure_compute(bench: Bench, log: Callable[[str], None]) -> None:
    import venice

    docs = _load_embeddings(bench, log)
    rng = random.Random(19)
    batches = [tuple(rng.sample(range(EMBED_RECORDS), 100)) for _ in range(2000)]
    vector = np.asarray([rng.uniform(-1, 1) for _ in range(EMBED_DIM)])
    ops = [{"op": "dot_product", "field": "embedding", "vector": vector.tolist(), "as": "score"}]

    def expected(keys: tuple[int, ...]) -> np.ndarray:
        return np.asarray([np.asarray(docs[k], dtype=np.float32).astype(np.float64) @ vector for k in keys])

    with venice.Client(bench.venice.router_url) as client:
        deadline = time.monotonic() + 60
        while True:  # the router learns of the new store by long poll
            try:
                client.compute(EMBED_STORE, list(batches[0]), compute=ops)
                break
            except venice.VeniceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        def server_side(keys: tuple[int, ...]) -> np.ndarray:
            return np.asarray([row["score"] for row in client.compute(EMBED_STORE, list(keys), compute=ops)])

        def client_side(keys: tuple[int, ...]) -> np.ndarray:
            values = client.batch_get(EMBED_STORE, list(keys))
            return np.asarray([v["embedding"] for v in values], dtype=np.float64) @ vector

        def check(keys: Any, got: object) -> bool:
            return isinstance(got, np.ndarray) and bool(np.allclose(got, expected(keys), rtol=1e-9, atol=1e-9))

        def venice_loop(round_no: int, seconds: float) -> Run:
            run = python_loop(server_side, batches, seconds=seconds, max_ops=1_000_000, metric="compute100",
                              side="venice", generator="python loop, Client.compute of 100 keys (dot product on the servers)",
                              check=check, round_no=round_no)
            return _items(run, 100)

        def client_loop(round_no: int, seconds: float) -> Run:
            run = python_loop(client_side, batches, seconds=seconds, max_ops=1_000_000, metric="compute100",
                              side=CLIENT_SIDE, generator="python loop, Client.batch_get of 100 keys + numpy dot product",
                              check=check, round_no=round_no)
            return _items(run, 100)

        bench.measure_pair("compute100", venice_loop, client_loop)


def _items(run: Run, per_op: int) -> Run:
    from dataclasses import replace

    return replace(run, items_per_op=per_op)
