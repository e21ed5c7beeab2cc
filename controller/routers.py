"""The routers' read rate, p99 and failovers, as the dashboard and ``venice status`` show them.

The controller is told where its routers are (``venice controller --router URL``) and
scrapes each one's ``GET /metrics`` every couple of seconds. Rates and the p99 come from
the difference between a router's last two scrapes, so they describe the last interval,
not the router's whole life: :func:`figures` computes them, without I/O. A router that
does not answer shows as down, with no figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from venice.supervise import supervised
from venice.tls import client_context

__all__ = ["RouterSample", "RouterWatch", "figures", "parse_sample"]

log = logging.getLogger("venice.controller")

READ_ENDPOINTS = ("single", "batch")
SCRAPE_INTERVAL_S = 2.0
SCRAPE_TIMEOUT_S = 2.0
MAX_SCRAPE_BYTES = 4 << 20
"""A router's metrics are a few kilobytes; anything far larger is not one."""


@dataclass(frozen=True)
class RouterSample:
    """What one scrape of a router said (cumulative counts since the router started)."""

    at: float
    reads: float
    """Requests to the read endpoints (single and batch), every status."""
    failovers: float
    buckets: tuple[tuple[float, float], ...]
    """Latency of single-key reads: (upper bound, cumulative count), ``inf`` last."""


def parse_sample(text: str, at: float) -> RouterSample:
    """The figures the controller needs from a router's ``/metrics`` text (ValueError if unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    reads = failovers = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "venice_router_requests_total" and sample.labels.get("endpoint") in READ_ENDPOINTS:
                reads += sample.value
            elif sample.name == "venice_router_replica_failovers_total":
                failovers += sample.value
            elif sample.name == "venice_router_request_seconds_bucket" and sample.labels.get("endpoint") == "single":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return RouterSample(at, reads, failovers, tuple(sorted(buckets.items())))


def figures(before: RouterSample | None, after: RouterSample) -> dict[str, Any]:
    """Reads/s, failovers/s and the p99 (ms, a bucket bound) between two scrapes; ``None``
    where there is no earlier scrape, the router restarted, or nothing was read."""
    out: dict[str, Any] = {"reads_per_s": None, "failovers_per_s": None, "p99_ms": None}
    if before is None or after.at <= before.at or after.reads < before.reads:
        return out
    seconds = after.at - before.at
    out["reads_per_s"] = round((after.reads - before.reads) / seconds, 1)
    out["failovers_per_s"] = round(max(0.0, after.failovers - before.failovers) / seconds, 2)
    earlier = dict(before.buckets)
    counts = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after.buckets]
    total = counts[-1][1] if counts else 0.0
    if total > 0:
        for bound, count in counts:
            if count >= 0.99 * total:
                out["p99_ms"] = None if bound == float("inf") else round(bound * 1000, 3)
                break
    return out


class RouterWatch:
    """Scrapes the routers in the background; :meth:`view` is what ``GET /overview`` lists."""

    def __init__(
        self, urls: Sequence[str], *, token: str | None = None, ca_file: str | os.PathLike[str] | None = None
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self._headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        """The cluster secret: a closed router shows its metrics to it (or to monitor and admin tokens)."""
        self._ca_file = ca_file
        self._samples: dict[str, list[RouterSample]] = {u: [] for u in self.urls}
        self._up: dict[str, bool] = dict.fromkeys(self.urls, False)
        self._errors: dict[str, str] = {}

    def view(self) -> list[dict[str, Any]]:
        out = []
        for url in self.urls:
            samples = self._samples[url]
            entry: dict[str, Any] = {"url": url, "up": self._up[url]}
            if self._up[url] and samples:
                entry.update(figures(samples[0] if len(samples) > 1 else None, samples[-1]))
            else:
                entry.update(reads_per_s=None, failovers_per_s=None, p99_ms=None, error=self._errors.get(url))
            out.append(entry)
        return out

    async def scrape_once(self, client: httpx.AsyncClient) -> None:
        await asyncio.gather(*(self._scrape(client, url) for url in self.urls))

    async def _scrape(self, client: httpx.AsyncClient, url: str) -> None:
        try:
            async with client.stream("GET", f"{url}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_SCRAPE_BYTES:
                        raise ValueError(f"metrics larger than {MAX_SCRAPE_BYTES} bytes")
            sample = parse_sample(body.decode("utf-8", "replace"), time.monotonic())
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if self._up[url]:
                log.warning("router %s: metrics unreadable: %s", url, exc, extra={"event": "router_unreachable", "router": url})
            self._up[url], self._errors[url] = False, f"{type(exc).__name__}: {exc}"[:200]
            self._samples[url] = []
            return
        self._up[url] = True
        self._samples[url] = [*self._samples[url][-1:], sample]

    async def run(self, interval_s: float = SCRAPE_INTERVAL_S) -> None:
        if not self.urls:
            return
        async with httpx.AsyncClient(trust_env=False, verify=client_context(self._ca_file), headers=self._headers) as client:

            async def step() -> None:
                await self.scrape_once(client)

            await supervised("router scrapes", step, interval_s, log=log)
