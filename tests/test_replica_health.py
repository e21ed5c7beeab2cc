"""Failover policy: replica ordering by health, hedge delay from latency, retry budget."""

from __future__ import annotations

from venice.replica_health import ReplicaHealth, RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


A, B, C = "http://a", "http://b", "http://c"


class TestReplicaHealth:
    def test_equal_replicas_share_load_in_rotation(self) -> None:
        health = ReplicaHealth(clock=FakeClock())
        firsts = {health.order([A, B, C], spread)[0] for spread in range(3)}
        assert firsts == {A, B, C}

    def test_a_failed_replica_goes_last_for_a_while(self) -> None:
        clock = FakeClock()
        health = ReplicaHealth(clock=clock, failure_penalty_s=2.0)
        health.started(A)
        health.failed(A)
        assert [health.order([A, B], s)[-1] for s in range(4)] == [A, A, A, A]
        clock.now += 2.5
        assert {health.order([A, B], s)[0] for s in range(2)} == {A, B}

    def test_a_slow_replica_is_preferred_less(self) -> None:
        clock = FakeClock()
        health = ReplicaHealth(clock=clock)
        for url, latency in ((A, 0.050), (B, 0.001)):
            for _ in range(5):
                started = health.started(url)
                clock.now += latency
                health.succeeded(url, started)
        assert [health.order([A, B], s)[0] for s in range(4)] == [B, B, B, B]

    def test_a_slow_replica_is_tried_again_once_its_estimate_is_stale(self) -> None:
        clock = FakeClock()
        health = ReplicaHealth(clock=clock, stale_after_s=2.0)
        for url, latency in ((A, 0.050), (B, 0.001)):
            started = health.started(url)
            clock.now += latency
            health.succeeded(url, started)
        for _ in range(3):  # B keeps answering fast; A gets no reads, hence no samples
            assert [health.order([A, B], s)[0] for s in range(2)] == [B, B]
            started = health.started(B)
            clock.now += 0.001
            health.succeeded(B, started)
            clock.now += 0.7
        assert {health.order([A, B], s)[0] for s in range(2)} == {A, B}

    def test_similar_latencies_share_the_load(self) -> None:
        """1.9 ms and 2.1 ms are the same speed: no replica starves the other."""
        clock = FakeClock()
        health = ReplicaHealth(clock=clock)
        for url, latency in ((A, 0.0019), (B, 0.0021)):
            started = health.started(url)
            clock.now += latency
            health.succeeded(url, started)
        assert {health.order([A, B], s)[0] for s in range(2)} == {A, B}

    def test_a_busy_replica_is_preferred_less(self) -> None:
        health = ReplicaHealth(clock=FakeClock())
        for _ in range(8):
            health.started(A)
        assert health.order([A, B], 0) == [B, A]

    def test_hedge_delay_follows_observed_latency_within_bounds(self) -> None:
        clock = FakeClock()
        health = ReplicaHealth(clock=clock, min_hedge_s=0.005, max_hedge_s=0.25, hedge_factor=3.0)
        assert health.hedge_after_s() == 0.25  # nothing observed yet
        for _ in range(128):
            started = health.started(A)
            clock.now += 0.004
            health.succeeded(A, started)
        assert abs(health.hedge_after_s() - 0.012) < 1e-6
        for _ in range(512):
            started = health.started(A)
            clock.now += 0.2
            health.succeeded(A, started)
        assert health.hedge_after_s() == 0.25


class TestRetryBudget:
    def test_retries_are_capped_to_a_share_of_requests(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=0.1, floor_per_s=0.0, burst=5.0, clock=clock)
        assert sum(budget.try_spend() for _ in range(10)) == 5  # the saved-up burst
        for _ in range(100):
            budget.record_request()
        assert sum(budget.try_spend() for _ in range(100)) == 5  # 10% of 100 capped at burst 5
        assert not budget.try_spend()

    def test_floor_refills_over_time(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=0.0, floor_per_s=2.0, burst=10.0, clock=clock)
        while budget.try_spend():
            pass
        clock.now += 1.0
        assert sum(budget.try_spend() for _ in range(5)) == 2
