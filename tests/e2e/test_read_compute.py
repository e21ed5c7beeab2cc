"""Read compute on a real cluster on the real Kafka broker: ``POST /compute/{store}`` on
the router (executed by the storage servers), ``Client.compute`` through the router and
direct, ``AsyncClient.compute`` and ``DaVinciClient.compute``, each checked against numpy
run over the pushed records; and hostile requests."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import venice
from tests.e2e.conftest import wait_router_serves, write_jsonl
from venice.cluster import LocalCluster

pytestmark = pytest.mark.kafka

DIM = 64
SCHEMA = {
    "type": "record",
    "name": "Doc",
    "fields": [
        {"name": "title", "type": "string"},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "score", "type": "double"},
    ],
}


def f32(x: float) -> float:
    """What a float field holds after the trip through Avro ``float``."""
    return float(np.float32(x))


@pytest.fixture(scope="module")
def cluster(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[int, dict[str, Any]]]]:
    rng = random.Random(99)
    docs = {
        k: {"title": f"doc {k}", "embedding": [rng.uniform(-1, 1) for _ in range(DIM)], "tags": ["t"] * rng.randrange(6),
            "score": rng.uniform(0, 5)}
        for k in rng.sample(range(10**9), 300)
    }
    work = tmp_path_factory.mktemp("compute")
    with LocalCluster(work / "c", servers=2, pubsub_url=kafka_broker.url) as cluster:
        answer = httpx.post(f"{cluster.controller_url}/stores", json={
            "name": "docs", "key_schema": "long", "value_schema": SCHEMA, "partitions": 4, "replication_factor": 2}, timeout=10)
        assert answer.status_code == 201, answer.text
        path = write_jsonl(work / "docs.jsonl", [{"id": k, **v} for k, v in docs.items()])
        result = subprocess.run([sys.executable, "-m", "venice", "push", "--controller", cluster.controller_url, "--store", "docs",
                                 "--input", str(path), "--key-field", "id", "--no-progress"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        wait_router_serves(cluster.router_url, "docs", next(iter(docs)))
        yield cluster, docs


def expected(docs: dict[int, dict[str, Any]], keys: list[int], vector: list[float]) -> list[Any]:
    """numpy over the pushed records: the independent answer."""
    v = np.asarray(vector)
    out: list[Any] = []
    for key in keys:
        doc = docs.get(key)
        if doc is None:
            out.append(None)
            continue
        e = np.asarray([f32(x) for x in doc["embedding"]])
        out.append({
            "title": doc["title"],
            "dot": float(e @ v),
            "cos": float(e @ v / (np.linalg.norm(e) * np.linalg.norm(v))),
            "had": (e * v).tolist(),
            "n": len(doc["tags"]),
        })
    return out


def ops(vector: list[float]) -> list[dict[str, Any]]:
    return [
        {"op": "dot_product", "field": "embedding", "vector": vector, "as": "dot"},
        {"op": "cosine_similarity", "field": "embedding", "vector": vector, "as": "cos"},
        {"op": "hadamard_product", "field": "embedding", "vector": vector, "as": "had"},
        {"op": "count", "field": "tags", "as": "n"},
    ]


def same(got: list[Any], want: list[Any]) -> bool:
    def close(a: Any, b: Any) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12))
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        return bool(a == b)

    return len(got) == len(want) and all(close(g, w) for g, w in zip(got, want, strict=True))


def test_router_endpoint_and_every_client(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]], tmp_path: Path) -> None:
    running, docs = cluster
    rng = random.Random(1)
    vector = [rng.uniform(-1, 1) for _ in range(DIM)]
    keys = [*list(docs)[:120], 7, list(docs)[3]]
    want = expected(docs, keys, vector)

    answer = httpx.post(f"{running.router_url}/compute/docs", json={"keys": keys, "project": ["title"], "compute": ops(vector)}, timeout=30)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["key"] for r in results] == keys
    assert [r["found"] for r in results] == [w is not None for w in want]
    assert same([r.get("value") for r in results], want)

    for direct in (False, True):
        with venice.Client(running.router_url, direct=direct) as client:
            assert same(client.compute("docs", keys, project=["title"], compute=ops(vector)), want)
            assert client.compute("docs", [], project=["title"]) == []
    with venice.DaVinciClient(running.controller_url, "docs", data_dir=tmp_path / "dv") as dv:
        assert same(dv.compute(keys, project=["title"], compute=ops(vector)), want)
        with pytest.raises(venice.RequestError, match="'embedding'"):
            dv.compute(keys[:3], compute=[{"op": "dot_product", "field": "embedding", "vector": [1.0], "as": "d"}])


async def test_async_clients(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]]) -> None:
    running, docs = cluster
    vector = [0.5] * DIM
    keys = list(docs)[:40]
    for direct in (False, True):
        async with venice.AsyncClient(running.router_url, direct=direct) as client:
            assert same(await client.compute("docs", keys, project=["title"], compute=ops(vector)), expected(docs, keys, vector))


@pytest.mark.parametrize("direct", [False, True])
def test_schema_mismatches_are_400_naming_the_field(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]], direct: bool) -> None:
    running, docs = cluster
    keys = list(docs)[:10]
    with venice.Client(running.router_url, direct=direct) as client:
        with pytest.raises(venice.RequestError, match="'embedding'") as caught:
            client.compute("docs", keys, compute=[{"op": "dot_product", "field": "embedding", "vector": [1.0] * (DIM - 1), "as": "d"}])
        assert caught.value.details.get("field") == "embedding"
        with pytest.raises(venice.RequestError, match="'title'"):
            client.compute("docs", keys, compute=[{"op": "cosine_similarity", "field": "title", "vector": [1.0], "as": "c"}])
        with pytest.raises(venice.RequestError, match="'nope'"):
            client.compute("docs", keys, project=["nope"])
        with pytest.raises(venice.RequestError, match="'score'"):
            client.compute("docs", keys, compute=[{"op": "count", "field": "score", "as": "n"}])


@pytest.mark.parametrize(
    "body",
    [
        b"", b"{", b"[]", b'{"keys": 5, "project": ["title"]}', b'{"project": ["title"]}',
        b'{"keys": [1], "project": ["title"], "extra": true}',
        b'{"keys": [1], "compute": [{"op": "dot_product", "field": "embedding", "vector": [NaN], "as": "d"}]}',
        b'{"keys": [1], "compute": [{"op": "dot_product", "field": "embedding", "vector": [1e999], "as": "d"}]}',
        b'{"keys": [1], "compute": [{"op": "dot_product", "field": "embedding", "vector": ["1"], "as": "d"}]}',
        b'{"keys": [1], "compute": [{"op": "dot_product", "field": "embedding", "vector": [[1]], "as": "d"}]}',
        b'{"keys": [1], "compute": [{"op": "explode", "field": "embedding", "as": "d"}]}',
        b'{"keys": ["x"], "project": ["title"]}',
        orjson.dumps({"keys": [1], "compute": [{"op": "dot_product", "field": "embedding", "vector": [1.0] * 70_000, "as": "d"}]}),
        orjson.dumps({"keys": list(range(10_001)), "project": ["title"]}),
        orjson.dumps({"keys": list(range(10_000)), "compute": [{"op": "dot_product", "field": "embedding", "vector": [1.0] * 6000, "as": "d"}]}),
        orjson.dumps({"keys": list(range(2000)), "compute": [{"op": "hadamard_product", "field": "embedding", "vector": [1.0] * 3000, "as": "h"}]}),
        b'{"keys": [1], "project": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b"\xff\xfe{}",
    ],
)
def test_hostile_requests_are_400(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]], body: bytes) -> None:
    running, _ = cluster
    answer = httpx.post(f"{running.router_url}/compute/docs", content=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] in ("BAD_REQUEST", "INVALID_KEY")


def test_other_methods_and_stores(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]]) -> None:
    running, _ = cluster
    assert httpx.get(f"{running.router_url}/compute/docs", timeout=10).status_code == 405
    missing = httpx.post(f"{running.router_url}/compute/none", json={"keys": [1], "project": ["x"]}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "STORE_NOT_FOUND"
    server = running.servers[0].url
    # The storage server's own endpoint refuses a malformed body (direct callers are hostile too).
    assert httpx.post(f"{server}/v1/compute/docs/1", content=b"\x00\x00\x10\x00{}", timeout=10).status_code == 400
    assert httpx.post(f"{server}/v1/compute/docs/x", content=b"", timeout=10).status_code == 400


def test_a_compute_answer_over_the_routers_answer_limit_is_413(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]]) -> None:
    """Read compute shares the router's answer limit with batches: the results' bytes,
    a key asked for twice counting twice, decided before the answer is built."""
    from router.main import RouterConfig, build_server
    from tests.router.fakes import serve_in_thread

    running, docs = cluster
    key = next(iter(docs))
    spec = {"compute": [{"op": "hadamard_product", "field": "embedding", "vector": [1.0] * DIM, "as": "h"}]}
    limit = 20_000
    config = RouterConfig(port=0, controller_url=running.controller_url, max_answer_bytes=limit, graceful_shutdown_s=0.5)
    with serve_in_thread(build_server(config)) as url:
        wait_router_serves(url, "docs", key)
        one = httpx.post(f"{url}/compute/docs", json={"keys": [key], **spec}, timeout=30)
        assert one.status_code == 200, one.text
        [result] = one.json()["results"]
        assert result["value"]["h"] == pytest.approx([f32(x) for x in docs[key]["embedding"]])
        size = len(orjson.dumps(result["value"]))
        fits = max(1, limit // (2 * size))
        assert httpx.post(f"{url}/compute/docs", json={"keys": [key] * fits, **spec}, timeout=30).status_code == 200
        over = httpx.post(f"{url}/compute/docs", json={"keys": [key] * (2 * limit // size + 1), **spec}, timeout=30)
        assert over.status_code == 413, over.text[:300]
        assert over.json()["error"]["code"] == "ANSWER_TOO_LARGE"


def test_compute_requests_are_counted_once_by_store(cluster: tuple[LocalCluster, dict[int, dict[str, Any]]]) -> None:
    """The router's request counter moves by exactly one per compute request, under the
    compute endpoint (it once also counted each as ("", "other"))."""
    from tests.e2e.scrape import scrape, total, value

    running, docs = cluster
    before = scrape(running.router_url)
    ok = httpx.post(f"{running.router_url}/compute/docs", json={"keys": list(docs)[:3], "project": ["title"]}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert httpx.post(f"{running.router_url}/compute/docs", content=b"{", timeout=10).status_code == 400
    assert httpx.get(f"{running.router_url}/compute/docs", timeout=10).status_code == 405
    after = scrape(running.router_url)

    def moved(**labels: str) -> float:
        return value(after, "venice_router_requests_total", **labels) - value(before, "venice_router_requests_total", **labels)

    assert moved(store="docs", endpoint="compute", status="200") == 1
    assert moved(store="docs", endpoint="compute", status="400") == 1
    assert moved(store="_other", endpoint="compute", status="405") == 1
    assert total(after, "venice_router_requests_total", endpoint="compute") - total(before, "venice_router_requests_total", endpoint="compute") == 3
    assert total(after, "venice_router_requests_total", endpoint="other") == total(before, "venice_router_requests_total", endpoint="other")
