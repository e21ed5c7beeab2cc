"""Read quotas: a token bucket per store, one set per router (I/O-free; the clock is given).

A store's quota is in reads per second at each router (``store update --read-quota N``);
a batch or compute request of K keys costs K. The bucket holds at most one second of
quota, so a quiet store may burst to N reads at once and then gets N per second. A request
the bucket cannot pay for takes nothing from it and is refused with
:class:`~venice.errors.QuotaExceededError` (429) saying when it would be paid for
(``Retry-After``); a request larger than a whole second of quota can never be paid for
and is refused as a 400 instead, so a client does not retry it for ever.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from venice.errors import QuotaExceededError, RequestError

__all__ = ["QuotaStats", "ReadQuotas", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``rate`` saved (one second's worth)."""

    __slots__ = ("_tokens", "_updated", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._updated = now

    def take(self, cost: float, now: float) -> float:
        """0.0 when ``cost`` tokens were taken; else the seconds until they would be there
        (nothing is taken). ``math.inf`` for a cost larger than the bucket."""
        if now > self._updated:
            self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        if cost <= self._tokens:
            self._tokens -= cost
            return 0.0
        if cost > self.rate:
            return math.inf
        return (cost - self._tokens) / self.rate


@dataclass
class QuotaStats:
    """What a store's quota did at this router (shown by the router's metrics)."""

    allowed: int = 0
    """Keys read within the quota."""
    refused: int = 0
    """Keys of the requests refused (429, or 400 for more than a second of quota)."""
    refused_requests: int = 0
    """Requests refused (429, or 400 for more than a second of quota)."""


class ReadQuotas:
    """The buckets of every store with a quota, following the routing table's quotas."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.stats: dict[str, QuotaStats] = {}

    def charge(self, store: str, quota: int | None, keys: int = 1) -> None:
        """Pay for ``keys`` reads of ``store`` under ``quota`` reads/s (``None``: free)."""
        if quota is None:
            return
        now = self._clock()
        bucket = self._buckets.get(store)
        if bucket is None or bucket.rate != quota:
            bucket = self._buckets[store] = TokenBucket(float(quota), now)
        wait_s = bucket.take(keys, now)
        stats = self.stats.get(store)
        if stats is None:
            stats = self.stats[store] = QuotaStats()
        if wait_s == 0.0:
            stats.allowed += keys
            return
        stats.refused += keys
        stats.refused_requests += 1
        if math.isinf(wait_s):
            raise RequestError(
                f"a request of {keys} keys is more than store {store!r} may read in a second at one router "
                f"(its read quota is {quota}/s): split it"
            )
        retry_after = max(1, math.ceil(wait_s))
        raise QuotaExceededError(
            f"store {store!r} is over its read quota of {quota} reads/s at this router; retry in {retry_after} s",
            retry_after_s=retry_after,
        )
