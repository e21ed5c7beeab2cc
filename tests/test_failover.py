"""first_success: failover and long-tail hedging, driven by plain coroutines (no network)."""

from __future__ import annotations

import asyncio

import pytest

from venice.errors import (
    DeadlineExceededError,
    InvalidKeyError,
    NoReplicaError,
    TransportError,
    UnavailableError,
)
from venice.failover import first_success


class Replicas:
    """Scripted replicas: name -> behaviour; records the order they were asked in."""

    def __init__(self, **behaviour: str) -> None:
        self.behaviour = behaviour
        self.asked: list[str] = []
        self.timeouts: list[float] = []

    async def attempt(self, name: str, timeout: float) -> str:
        self.asked.append(name)
        self.timeouts.append(timeout)
        kind = self.behaviour[name]
        if kind == "refuse":
            raise TransportError(f"{name} refused")
        if kind == "503":
            raise UnavailableError(f"{name} unavailable")
        if kind == "bad":
            raise InvalidKeyError("bad key")
        if kind == "hang":
            await asyncio.sleep(60)
        if kind == "slow":
            await asyncio.sleep(0.2)
        return name


def deadline_in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_first_healthy_replica_answers_alone() -> None:
    replicas = Replicas(a="ok", b="ok")
    assert await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2)) == "a"
    assert replicas.asked == ["a"]


async def test_retriable_failures_move_on_at_once() -> None:
    replicas = Replicas(a="refuse", b="503", c="ok")
    started = asyncio.get_running_loop().time()
    result = await first_success(["a", "b", "c"], replicas.attempt, deadline_at=deadline_in(2), hedge_after_s=1.0)
    assert result == "c"
    assert replicas.asked == ["a", "b", "c"]
    assert asyncio.get_running_loop().time() - started < 0.5


async def test_each_attempt_gets_the_remaining_time() -> None:
    replicas = Replicas(a="refuse", b="ok")
    await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2))
    assert all(1.5 < t <= 2 for t in replicas.timeouts)


async def test_a_hanging_replica_is_hedged_not_waited_for() -> None:
    replicas = Replicas(a="hang", b="ok")
    started = asyncio.get_running_loop().time()
    result = await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2), hedge_after_s=0.1)
    assert result == "b"
    assert 0.1 <= asyncio.get_running_loop().time() - started < 0.5


async def test_slow_first_replica_can_still_win_after_the_hedge() -> None:
    replicas = Replicas(a="slow", b="hang")
    result = await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2), hedge_after_s=0.05)
    assert result == "a"
    assert replicas.asked == ["a", "b"]


async def test_non_retriable_error_is_final() -> None:
    replicas = Replicas(a="bad", b="ok")
    with pytest.raises(InvalidKeyError):
        await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2))
    assert replicas.asked == ["a"]


async def test_all_replicas_failing_is_no_replica_with_reasons() -> None:
    replicas = Replicas(a="refuse", b="503")
    with pytest.raises(NoReplicaError) as caught:
        await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2))
    assert len(caught.value.details["replica_errors"]) == 2


async def test_no_replicas_at_all() -> None:
    with pytest.raises(NoReplicaError):
        await first_success([], Replicas().attempt, deadline_at=deadline_in(2))


async def test_deadline_bounds_the_whole_read() -> None:
    replicas = Replicas(a="hang", b="hang")
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceededError):
        await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(0.3), hedge_after_s=0.1)
    assert asyncio.get_running_loop().time() - started < 0.5


async def test_losing_attempts_are_cancelled() -> None:
    cancelled = asyncio.Event()

    async def attempt(name: str, timeout: float) -> str:
        if name == "a":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return name

    assert await first_success(["a", "b"], attempt, deadline_at=deadline_in(2), hedge_after_s=0.01) == "b"
    await asyncio.wait_for(cancelled.wait(), timeout=1)


class Budget:
    """A retry budget with ``tokens`` left."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.asked = 0

    def try_spend(self) -> bool:
        self.asked += 1
        if self.tokens > 0:
            self.tokens -= 1
            return True
        return False


async def test_a_spent_retry_budget_makes_a_failure_final() -> None:
    replicas = Replicas(a="503", b="ok")
    budget = Budget(0)
    with pytest.raises(NoReplicaError, match="retry budget"):
        await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2), may_retry=budget.try_spend)
    assert replicas.asked == ["a"]


async def test_retries_spend_the_budget() -> None:
    replicas = Replicas(a="503", b="refuse", c="ok")
    budget = Budget(5)
    assert await first_success(["a", "b", "c"], replicas.attempt, deadline_at=deadline_in(2),
                               may_retry=budget.try_spend) == "c"
    assert budget.tokens == 3


async def test_a_spent_budget_waits_for_the_slow_replica_instead_of_hedging() -> None:
    replicas = Replicas(a="slow", b="ok")
    budget = Budget(0)
    result = await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(2), hedge_after_s=0.01,
                                 may_retry=budget.try_spend)
    assert result == "a"
    assert replicas.asked == ["a"]
    assert budget.asked == 1  # asked once, then no more hedging for this read


# -- counts (the router's failover metrics) ------------------------------------------------
async def test_counts_a_failover() -> None:
    from venice.failover import FailoverCounts

    counts = FailoverCounts()
    replicas = Replicas(a="refuse", b="503", c="ok")
    assert await first_success(["a", "b", "c"], replicas.attempt, deadline_at=deadline_in(5), hedge_after_s=1.0, counts=counts) == "c"
    assert counts == FailoverCounts(failovers=2, hedges=0, hedges_won=0, budget_refusals=0)


async def test_counts_a_hedge_that_wins() -> None:
    from venice.failover import FailoverCounts

    counts = FailoverCounts()
    replicas = Replicas(a="hang", b="ok")
    assert await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(5), hedge_after_s=0.01, counts=counts) == "b"
    assert counts == FailoverCounts(failovers=0, hedges=1, hedges_won=1, budget_refusals=0)


async def test_counts_a_hedge_that_loses() -> None:
    from venice.failover import FailoverCounts

    counts = FailoverCounts()
    b_started = asyncio.Event()
    release_a = asyncio.Event()

    async def attempt(name: str, timeout: float) -> str:
        if name == "a":
            await release_a.wait()  # silent until the hedge to b is on its way, then answers first
            return "a"
        b_started.set()
        await asyncio.sleep(60)
        return "b"

    async def release_after_hedge() -> None:
        await b_started.wait()
        release_a.set()

    releaser = asyncio.create_task(release_after_hedge())
    assert await first_success(["a", "b"], attempt, deadline_at=deadline_in(5), hedge_after_s=0.01, counts=counts) == "a"
    await releaser
    assert counts == FailoverCounts(failovers=0, hedges=1, hedges_won=0, budget_refusals=0)


async def test_a_failure_beside_a_hedge_counts_as_a_failover() -> None:
    from venice.failover import FailoverCounts

    counts = FailoverCounts()
    replicas = Replicas(a="hang", b="refuse", c="ok")
    # a is silent: b is hedged and fails at once, so c is asked because of a failure.
    assert await first_success(["a", "b", "c"], replicas.attempt, deadline_at=deadline_in(5), hedge_after_s=0.01, counts=counts) == "c"
    assert replicas.asked == ["a", "b", "c"]
    assert counts == FailoverCounts(failovers=1, hedges=1, hedges_won=0, budget_refusals=0)


async def test_counts_a_budget_refusal() -> None:
    from venice.failover import FailoverCounts

    counts = FailoverCounts()
    replicas = Replicas(a="refuse", b="ok")
    with pytest.raises(NoReplicaError, match="retry budget"):
        await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(5), may_retry=lambda: False, counts=counts)
    assert counts == FailoverCounts(failovers=0, hedges=0, hedges_won=0, budget_refusals=1)


async def test_a_first_attempt_that_failed_is_not_made_again_and_the_next_is_a_failover() -> None:
    from venice.failover import FailoverCounts, FirstAttempt

    counts = FailoverCounts()
    replicas = Replicas(a="ok", b="refuse", c="ok")
    earlier = UnavailableError("a answered 503 on the callback lane")
    first = FirstAttempt(failure=earlier)
    assert await first_success(["a", "b", "c"], replicas.attempt, deadline_at=deadline_in(5), counts=counts, first=first) == "c"
    assert replicas.asked == ["b", "c"]
    assert counts == FailoverCounts(failovers=2, hedges=0, hedges_won=0, budget_refusals=0)
    with pytest.raises(NoReplicaError) as failed:
        await first_success(["a", "b"], Replicas(a="ok", b="503").attempt, deadline_at=deadline_in(5), first=first)
    assert failed.value.details["replica_errors"][0] == "UNAVAILABLE: a answered 503 on the callback lane"


async def test_a_first_attempt_still_running_is_hedged_at_once_and_may_still_win() -> None:
    from venice.failover import FailoverCounts, FirstAttempt

    loop = asyncio.get_running_loop()
    counts = FailoverCounts()
    running: asyncio.Future[str] = loop.create_future()
    replicas = Replicas(a="ok", b="slow")
    loop.call_later(0.05, running.set_result, "a-late")
    # hedge_after_s is long: b is asked at once all the same (the delay passed before first_success began).
    assert await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(5), hedge_after_s=10,
                               counts=counts, first=FirstAttempt(running=running)) == "a-late"
    assert replicas.asked == ["b"]
    assert counts == FailoverCounts(failovers=0, hedges=1, hedges_won=0, budget_refusals=0)


async def test_a_first_attempt_still_running_is_cancelled_when_the_hedge_wins() -> None:
    from venice.failover import FailoverCounts, FirstAttempt

    counts = FailoverCounts()
    running: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    replicas = Replicas(a="ok", b="ok")
    assert await first_success(["a", "b"], replicas.attempt, deadline_at=deadline_in(5),
                               counts=counts, first=FirstAttempt(running=running)) == "b"
    assert running.cancelled()
    assert counts == FailoverCounts(failovers=0, hedges=1, hedges_won=1, budget_refusals=0)
