"""Replica health, hedge timing and the retry budget: the failover policy of every
reader that picks replicas itself (the router, the SDK's direct client).

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
_FAILED_RANK = 1 << 50
"""Ranks a recent failure above any number of requests in flight."""


@dataclass
class _Stats:
    in_flight: int = 0
    ewma_s: float = 0.0
    failed_at: float = -math.inf
    measured_at: float = -math.inf


class ReplicaHealth:
    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        failure_penalty_s: float = 2.0,
        stale_after_s: float = 2.0,
        ewma_weight: float = 0.2,
        min_hedge_s: float = 0.01,
        max_hedge_s: float = 0.25,
        hedge_factor: float = 3.0,
    ) -> None:
        self._clock = clock
        self._penalty_s = failure_penalty_s
        # A replica ranked slower gets no reads, hence no new samples: its slowness is
        # forgotten after this long, so it is tried again (else one slow answer, e.g. a
        # connection set-up, would starve it for good).
        self._stale_after_s = stale_after_s
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
        now = self._clock()
        latency = now - started_at
        ewma = self._current_ewma(stats, now)
        stats.ewma_s = latency if ewma == 0.0 else ewma + self._weight * (latency - ewma)
        stats.measured_at = now
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
        now = self._clock()
        ewma = self._current_ewma(stats, now)
        stats.ewma_s = max(ewma, ewma + self._weight * (now - started_at - ewma))
        stats.measured_at = now

    def unsent(self, url: str) -> None:
        """The request never reached the replica (its idle connection had just closed):
        nothing learned, only no longer in flight."""
        self._get(url).in_flight -= 1

    def _current_ewma(self, stats: _Stats | None, now: float) -> float:
        """The latency estimate, or 0 (unknown) when older than ``stale_after_s``."""
        if stats is None or now - stats.measured_at >= self._stale_after_s:
            return 0.0
        return stats.ewma_s

    # -- decisions -----------------------------------------------------------------
    def order(self, replicas: Sequence[str], spread: int) -> list[str]:
        """``replicas`` best first; equally good ones in rotation by ``spread``.

        Coarse on purpose, so that replicas in the same state share the load: a replica
        goes back for a recent failure, for clearly more requests in flight (a step per
        4), or for being clearly slower than the fastest one (over twice its latency
        estimate plus 1 ms). Never relative to fixed latency bands, where two replicas
        either side of a band's edge would not share at all.
        """
        count = len(replicas)
        if count <= 1:
            return list(replicas)
        start = spread % count
        rotated = list(replicas[start:]) + list(replicas[:start])
        now = self._clock()
        stale, penalty, table = self._stale_after_s, self._penalty_s, self._stats
        # One pass: each replica's stats and latency estimate (an unknown or stale one is 0
        # and slows nobody down), and the fastest estimate.
        found: list[tuple[_Stats | None, float]] = []
        fastest = math.inf
        for url in rotated:
            s = table.get(url)
            ewma = 0.0 if s is None or now - s.measured_at >= stale else s.ewma_s
            if 0.0 < ewma < fastest:
                fastest = ewma
            found.append((s, ewma))
        slow_above = 2 * fastest + 0.001
        # (recently failed, in flight // 4, clearly slower) as one integer, compared the same way.
        ranks: list[int] = []
        plain = True
        for s, ewma in found:
            rank = 0 if s is None else (_FAILED_RANK if now - s.failed_at < penalty else 0) + (s.in_flight // 4) * 2 + (ewma > slow_above)
            plain = plain and rank == 0
            ranks.append(rank)
        if plain:
            return rotated  # all alike: the rotation is the order
        order = sorted(range(count), key=ranks.__getitem__)  # stable: equals keep their rotation
        return [rotated[i] for i in order]

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
