"""A router's metrics (``GET /metrics``; every one is listed in docs/operations.md).

Each request is counted once it is answered, by store, endpoint and HTTP status, and
reads (single, batch, compute) are timed into a histogram: a dict update and a bucket
increment on the event loop (:mod:`venice.metrics`). Failovers, hedges and retry-budget
refusals are the reader's :class:`venice.failover.FailoverCounts`, read at scrape time,
like the routing table's generation and age.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from venice.failover import FailoverCounts
from venice.metrics import OTHER, Registry, Sample
from venice.quota import ReadQuotas
from venice.routing_cache import RoutingCache

__all__ = ["RouterMetrics"]


class RouterMetrics:
    def __init__(
        self, cache: RoutingCache, counts: FailoverCounts, connections: Callable[[], int] | None = None, *, quotas: ReadQuotas | None = None
    ) -> None:
        self.cache = cache
        self.quotas = quotas if quotas is not None else ReadQuotas()
        self.registry = registry = Registry()
        self.requests = registry.counter(
            "venice_router_requests_total",
            "Requests answered, by store, endpoint (single, batch, compute, put, patch, delete, changes, routing, health, metrics, other) and HTTP status.",
            ("store", "endpoint", "status"),
        )
        self.latency = registry.histogram(
            "venice_router_request_seconds", "Time to answer a read (failovers included) or a write, by endpoint (single, batch, compute, put, patch, delete).", ("endpoint",)
        )
        registry.counter_callback(
            "venice_router_replica_failovers_total", "Reads sent to the next replica because one failed.", (), lambda: [((), counts.failovers)]
        )
        registry.counter_callback(
            "venice_router_hedges_total", "Reads also sent to the next replica because one was slow (long-tail hedges).", (), lambda: [((), counts.hedges)]
        )
        registry.counter_callback(
            "venice_router_hedges_won_total", "Hedged reads the hedge answered first.", (), lambda: [((), counts.hedges_won)]
        )
        registry.counter_callback(
            "venice_router_retry_budget_refusals_total",
            "Failovers or hedges the retry budget did not allow (the read failed or waited instead).",
            (),
            lambda: [((), counts.budget_refusals)],
        )
        registry.gauge("venice_router_routing_generation", "Generation of the routing table in use (0: none yet).", (), self._generation)
        registry.gauge(
            "venice_router_routing_age_seconds",
            "Seconds since the controller last answered a routing poll (a new table or 'unchanged'; polls wait up to 10 s).",
            (),
            self._age,
        )
        registry.counter_callback(
            "venice_router_quota_refused_total",
            "Reads refused by the store's read quota at this router (429 QUOTA_EXCEEDED, or 400 for a batch larger than a second of quota), by store.",
            ("store",),
            lambda: self._quota_samples("refused_requests"),
        )
        registry.counter_callback(
            "venice_router_quota_refused_keys_total",
            "Keys of the reads the read quota refused (a batch or compute request of K keys counts K), by store.",
            ("store",),
            lambda: self._quota_samples("refused"),
        )
        registry.gauge("venice_router_stores", "Stores in the routing table.", (), lambda: [((), len(cache.stores()))])

    def store_label(self, store: str) -> str:
        """``store`` when the routing table has it, else ``_other``: clients choose paths
        (``""`` stays ``""``: an endpoint of no store)."""
        return store if not store or store in self.cache.stores() else OTHER

    def answered(self, store: str, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests.inc((self.store_label(store), endpoint, str(status)))
        if seconds is not None:
            self.latency.observe(seconds, (endpoint,))

    def render(self) -> bytes:
        return self.registry.render()

    def _generation(self) -> list[tuple[tuple[str, ...], float]]:
        return [((), float(self.cache.generation()))]

    def _age(self) -> list[tuple[tuple[str, ...], float]]:
        confirmed = self.cache.confirmed_at
        return [] if confirmed is None else [((), time.monotonic() - confirmed)]

    def _quota_samples(self, field: str) -> list[Sample]:
        """One sample per store of the routing table that has refused a read here: store
        labels are bounded by the table (a store deleted since drops out)."""
        stores = self.cache.stores()
        return [((store,), float(getattr(stats, field))) for store, stats in list(self.quotas.stats.items()) if store in stores and stats.refused_requests]
