"""venice.quota: token buckets on a fake clock, against counts worked out by hand."""

from __future__ import annotations

import math

import pytest

from venice.errors import QuotaExceededError, RequestError, error_body, error_from_response
from venice.quota import ReadQuotas, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(1, 0.0) == pytest.approx(0.1)  # one token comes every 1/10 s
    assert bucket.take(1, 0.05) == pytest.approx(0.05)
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(5, 10.0) == 0.0  # refill stops at one second's worth: 10
    assert bucket.take(6, 10.0) == pytest.approx(0.1)
    assert bucket.take(11, 10.0) == math.inf


def test_a_refused_take_takes_nothing() -> None:
    bucket = TokenBucket(4.0, now=0.0)
    assert bucket.take(3, 0.0) == 0.0
    assert bucket.take(2, 0.0) > 0  # only 1 left: refused whole
    assert bucket.take(1, 0.0) == 0.0


def test_quotas_per_store_with_batch_keys_counting_each() -> None:
    clock = FakeClock()
    quotas = ReadQuotas(clock)
    for _ in range(1000):
        quotas.charge("free", None)  # no quota: never refused, not counted
    quotas.charge("limited", 5, keys=3)
    quotas.charge("limited", 5, keys=2)
    with pytest.raises(QuotaExceededError) as info:
        quotas.charge("limited", 5)
    assert info.value.http_status == 429 and info.value.details == {"retry_after_s": 1}
    quotas.charge("other", 5, keys=5)  # stores have buckets of their own
    clock.now += 0.5
    quotas.charge("limited", 5, keys=2)  # 0.5 s at 5/s: 2.5 tokens
    with pytest.raises(QuotaExceededError):
        quotas.charge("limited", 5)
    limited = quotas.stats["limited"]
    assert (limited.allowed, limited.refused, limited.refused_requests) == (7, 2, 2)
    assert "free" not in quotas.stats


def test_a_batch_larger_than_a_second_of_quota_is_a_bad_request() -> None:
    quotas = ReadQuotas(FakeClock())
    with pytest.raises(RequestError, match="split it") as info:
        quotas.charge("s", 10, keys=11)
    assert not isinstance(info.value, QuotaExceededError)
    assert (quotas.stats["s"].refused_requests, quotas.stats["s"].refused, quotas.stats["s"].allowed) == (1, 11, 0)


def test_a_changed_quota_starts_a_new_bucket() -> None:
    clock = FakeClock()
    quotas = ReadQuotas(clock)
    quotas.charge("s", 1)
    with pytest.raises(QuotaExceededError):
        quotas.charge("s", 1)
    quotas.charge("s", 100, keys=100)


def test_retry_after_rounds_up_and_round_trips() -> None:
    clock = FakeClock()
    quotas = ReadQuotas(clock)
    quotas.charge("s", 2, keys=2)
    with pytest.raises(QuotaExceededError) as info:
        quotas.charge("s", 2, keys=2)  # 2 tokens at 2/s: 1 s
    assert info.value.details["retry_after_s"] == 1
    quotas2 = ReadQuotas(clock)
    quotas2.charge("t", 1)
    clock.now += 0.001
    with pytest.raises(QuotaExceededError) as info2:
        quotas2.charge("t", 1)
    assert info2.value.details["retry_after_s"] == 1  # never 0: a client would spin
    again = error_from_response(429, error_body(info.value))
    assert isinstance(again, QuotaExceededError) and again.details["retry_after_s"] == 1
