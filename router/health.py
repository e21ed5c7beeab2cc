"""Replica health, hedge timing and the retry budget: the router's failover policy.

I/O-free and clock-injected, so every rule is unit-tested without a network.

* :class:`ReplicaHealth` keeps, per replica URL, requests in flight, an EWMA of latency
  and when it last failed. :meth:`ReplicaHealth.order` puts recently failed replicas
  last and prefers less loaded, faster ones, coarsely (buckets), so that replicas in
  the same state still share load in rotation.
* :meth:`ReplicaHealth.hedge_after_s` derives the hedging delay from observed latency
  (a multiple of the recent p95, within bounds): a replica slower than that gets
  company.
* :class:`RetryBudget` caps retries and hedges to a fraction of requests (plus a small
  floor), so that when every replica is slow the router does not multiply the load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ReplicaHealth", "RetryBudget"]

Clock = Callable[[], float]


@dataclass
class _Stats:
    in_flight: int = 0
    ewma_s: float = 0.0
    failed_at: float = -math.inf
    slowness: int = 0
    """Coarse bucket of ``ewma_s``: 0-2 ms, 2-6 ms, 6-14 ms, ... (kept in step with it)."""

    def set_ewma(self, ewma_s: float) -> None:
        self.ewma_s = ewma_s
        self.slowness = int(math.log2(1 + ewma_s * 1000 / 2))


class ReplicaHealth:
    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        failure_penalty_s: float = 2.0,
        ewma_weight: float = 0.2,
        min_hedge_s: float = 0.01,
        max_hedge_s: float = 0.25,
        hedge_factor: float = 3.0,
    ) -> None:
        self._clock = clock
        self._penalty_s = failure_penalty_s
        self._weight = ewma_weight
        self._min_hedge_s, self._max_hedge_s, self._hedge_factor = min_hedge_s, max_hedge_s, hedge_factor
        self._stats: dict[str, _Stats] = {}
        self._samples: list[float] = []
        self._next_sample = 0
        self._hedge_s = max_hedge_s  # until enough latency has been seen

    def _get(self, url: str) -> _Stats:
        stats = self._stats.get(url)
        if stats is None:
            stats = self._stats[url] = _Stats()
        return stats

    # -- outcomes ------------------------------------------------------------------
    def started(self, url: str) -> float:
        self._get(url).in_flight += 1
        return self._clock()

    def succeeded(self, url: str, started_at: float) -> None:
        """An answer (a value or a definitive "not found")."""
        stats = self._get(url)
        stats.in_flight -= 1
        latency = self._clock() - started_at
        stats.set_ewma(latency if stats.ewma_s == 0.0 else stats.ewma_s + self._weight * (latency - stats.ewma_s))
        self._sample(latency)

    def failed(self, url: str) -> None:
        """Refused, timed out, 5xx: avoided for ``failure_penalty_s``."""
        stats = self._get(url)
        stats.in_flight -= 1
        stats.failed_at = self._clock()

    def abandoned(self, url: str, started_at: float) -> None:
        """Cancelled because another replica answered first: it was at least this slow."""
        stats = self._get(url)
        stats.in_flight -= 1
        waited = self._clock() - started_at
        stats.set_ewma(max(stats.ewma_s, stats.ewma_s + self._weight * (waited - stats.ewma_s)))

    # -- decisions -----------------------------------------------------------------
    def order(self, replicas: Sequence[str], spread: int) -> list[str]:
        """``replicas`` best first; equally good ones in rotation by ``spread``."""
        if not replicas:
            return []
        start = spread % len(replicas)
        rotated = list(replicas[start:]) + list(replicas[:start])
        now = self._clock()
        return sorted(rotated, key=lambda url: self._rank(url, now))

    def _rank(self, url: str, now: float) -> tuple[int, int, int]:
        stats = self._stats.get(url)
        if stats is None:
            return (0, 0, 0)
        recently_failed = 1 if now - stats.failed_at < self._penalty_s else 0
        # Coarse buckets: a replica must be clearly busier or slower to lose its turn.
        return (recently_failed, stats.in_flight // 4, stats.slowness)

    def hedge_after_s(self) -> float:
        return self._hedge_s

    def _sample(self, latency: float) -> None:
        """Keep the last 512 latencies; recompute the hedge delay every 64 (not per read)."""
        if len(self._samples) < 512:
            self._samples.append(latency)
        else:
            self._samples[self._next_sample % 512] = latency
        self._next_sample += 1
        if self._next_sample % 64 == 0:
            p95 = sorted(self._samples)[int(len(self._samples) * 0.95)]
            self._hedge_s = min(self._max_hedge_s, max(self._min_hedge_s, p95 * self._hedge_factor))


class RetryBudget:
    """Tokens for retries and hedges: ``ratio`` per request, ``floor_per_s`` over time,
    at most ``burst`` saved up."""

    def __init__(
        self, *, ratio: float = 0.2, floor_per_s: float = 20.0, burst: float = 100.0, clock: Clock = time.monotonic
    ) -> None:
        self._ratio, self._floor_per_s, self._burst = ratio, floor_per_s, burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def record_request(self) -> None:
        self._tokens = min(self._burst, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._floor_per_s)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
