"""Nearline writes, measured: how soon a write is readable, and how fast writes are applied.

Both run against a hybrid store of their own (``nearline``: ``string`` keys and values,
4 partitions, R=2, an empty first version), after the read figures, so the real-time
consumers of the storage servers are idle while reads are timed.

* **visible** (``nearline_visible_p99_ms``): one :class:`venice.AsyncProducer` puts new
  keys at a steady ``rate`` (5,000 writes/s) for ``seconds``. Every ``probe_every``-th
  write is a probe: from just before its ``put()`` until the first ``GET`` through the
  router that returns its value (polled every ``poll_s``; a probe not visible within
  ``give_up_s`` counts as an error). p50/p99/p99.9 over the probes.
* **apply** (``nearline_vs_redis_set``): ``count`` puts as fast as one AsyncProducer
  sends them, then one marker write per partition. A partition is applied in log order,
  so once both replicas (each storage server, read directly) return every marker, every
  write is applied on both: writes/s = ``count`` / the time from the first put to then.
  The Redis side is ``redis-benchmark -c32 SET key:__rand_int__ <100 bytes>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import orjson

from bench.results import Run

__all__ = ["NEARLINE_STORE", "apply_run", "percentile", "router_put_lines", "visible_run"]

NEARLINE_STORE = "nearline"
_VALUE_PAD = "x" * 100


def _value(tag: str, i: int) -> str:
    """100 ASCII bytes, distinct per (tag, i)."""
    return (f"{tag}:{i}:" + _VALUE_PAD)[:100]


def router_put_lines(count: int, tag: str = "http") -> list[str]:
    """``PUT /storage/nearline/<key> "<100-byte value>"`` request lines for wrk, each key once."""
    return [f"PUT /storage/{NEARLINE_STORE}/{tag}-{i} " + orjson.dumps(_value(tag, i)).decode() for i in range(count)]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ascending ``sorted_values``; None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


@dataclass
class _Probes:
    latencies: list[float]
    errors: int = 0


async def _probe(http: httpx.AsyncClient, path: str, expected: str, sent_at: float, out: _Probes, *, poll_s: float, give_up_s: float) -> None:
    clock = time.perf_counter
    while True:
        try:
            answer = await http.get(path)
            if answer.status_code == 200 and answer.json() == expected:
                out.latencies.append(clock() - sent_at)
                return
        except httpx.HTTPError:
            pass
        if clock() - sent_at > give_up_s:
            out.errors += 1
            return
        await asyncio.sleep(poll_s)


async def _visible(
    controller_url: str, router_url: str, *, rate: float, seconds: float, probe_every: int, poll_s: float, give_up_s: float, round_no: int
) -> Run:
    from venice import AsyncProducer

    probes = _Probes([])
    tasks: list[asyncio.Task[None]] = []
    clock = time.perf_counter
    async with AsyncProducer(controller_url) as producer, httpx.AsyncClient(base_url=router_url, timeout=10) as http:
        await producer.put(NEARLINE_STORE, f"warm:{round_no}", "warm")  # connections and descriptions: not timed
        await producer.flush()
        started = clock()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((clock() - started) * rate) + 1)
            while sent < due:
                key = f"vis:{round_no}:{sent}"
                value = _value("vis", sent)
                if sent % probe_every == 0:
                    at = clock()
                    await producer.put(NEARLINE_STORE, key, value)
                    path = f"/storage/{NEARLINE_STORE}/{quote(key, safe=':')}"
                    tasks.append(asyncio.create_task(_probe(http, path, value, at, probes, poll_s=poll_s, give_up_s=give_up_s)))
                else:
                    await producer.put(NEARLINE_STORE, key, value)
                sent += 1
            await asyncio.sleep(0.001)
        elapsed = clock() - started
        await asyncio.gather(*tasks)
        await producer.flush()
    latencies = sorted(probes.latencies)

    def ms(p: float) -> float | None:
        found = percentile(latencies, p)
        return None if found is None else found * 1000

    return Run(
        metric="nearline_visible", side="venice",
        generator=f"one AsyncProducer at {rate:g} writes/s; every {probe_every}th write polled through the router every {poll_s * 1000:g} ms",
        operations=sent, seconds=elapsed, errors=probes.errors, p50_ms=ms(50), p99_ms=ms(99), p999_ms=ms(99.9),
        round=round_no, extra={"probes": len(latencies), "target_rate": rate},
    )  # fmt: skip


def visible_run(controller_url: str, router_url: str, *, rate: float = 5000.0, seconds: float = 5.0, probe_every: int = 50,
                poll_s: float = 0.002, give_up_s: float = 10.0, round_no: int = 0) -> Run:  # fmt: skip
    """One timed run of the visibility figure (see the module doc)."""
    return asyncio.run(
        _visible(controller_url, router_url, rate=rate, seconds=seconds, probe_every=probe_every, poll_s=poll_s,
                 give_up_s=give_up_s, round_no=round_no)
    )


async def _apply(controller_url: str, server_urls: list[str], *, count: int, round_no: int, give_up_s: float) -> Run:
    from venice import AsyncProducer
    from venice.controller_client import AsyncControllerClient
    from venice.protocol import replica_get_path

    async with AsyncControllerClient(controller_url) as controller:
        version = (await controller.get_store(NEARLINE_STORE))["current_version"]
    clock = time.perf_counter
    async with AsyncProducer(controller_url) as producer:
        writer = await producer.store_writer(NEARLINE_STORE)
        await producer.put(NEARLINE_STORE, f"warm:{round_no}", "warm")
        await producer.flush()
        markers = _markers(writer.partitions, lambda k: writer.partition_of(writer.encode_key(k)), round_no)
        started = clock()
        for i in range(count):
            await producer.put(NEARLINE_STORE, f"app:{round_no}:{i}", _value("app", i))
        for key in markers.values():
            await producer.put(NEARLINE_STORE, key, _value("marker", round_no))
        await producer.flush()
        sent_s = clock() - started
    paths = [replica_get_path(NEARLINE_STORE, version, p, writer.encode_key(k)) for p, k in markers.items()]
    expected = writer.value_schema().codec.encode(_value("marker", round_no))
    async with httpx.AsyncClient(timeout=10) as http:
        for base in server_urls:
            for path in paths:
                while True:
                    answer = await http.get(base + path)
                    if answer.status_code == 200 and answer.content == expected:
                        break
                    if clock() - started > give_up_s:
                        raise RuntimeError(f"{base}{path} did not show the marker within {give_up_s:g} s ({answer.status_code})")
                    await asyncio.sleep(0.002)
    elapsed = clock() - started
    return Run(
        metric="nearline_apply", side="venice",
        generator="one AsyncProducer as fast as it sends; until both replicas applied every write",
        operations=count, seconds=elapsed, round=round_no, extra={"produce_s": round(sent_s, 3)},
    )  # fmt: skip


def _markers(partitions: int, partition_of: Callable[[str], int], round_no: int) -> dict[int, str]:
    """One key per partition, for marker writes."""
    found: dict[int, str] = {}
    j = 0
    while len(found) < partitions:
        key = f"marker:{round_no}:{j}"
        found.setdefault(partition_of(key), key)
        j += 1
    return found


def apply_run(controller_url: str, server_urls: list[str], *, count: int, round_no: int = 0, give_up_s: float = 600.0) -> Run:
    """One timed run of the applied-throughput figure (see the module doc)."""
    return asyncio.run(_apply(controller_url, server_urls, count=count, round_no=round_no, give_up_s=give_up_s))
