"""Read from the first replica that answers, within one deadline.

Replicas are tried in order. A failure that is ``retriable`` (connect error, timeout,
5xx) moves on to the next replica at once. A replica that is merely *slow* is not
abandoned: after ``hedge_after_s`` the next replica is asked as well (Venice's
"long-tail retry") and whichever answers first wins. Each attempt may use all the
remaining time, yet one hanging replica cannot eat the whole deadline while a
healthy one sits unused. Every attempt after the first (a retry after a failure or a
hedge) must be allowed by ``may_retry`` (the router's retry budget): when it says no,
a failure is final and a slow replica is waited for alone, so retries never multiply
the load of an overloaded cluster. No I/O happens here: attempts are passed in as
coroutines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from venice.errors import DeadlineExceededError, NoReplicaError, VeniceError

__all__ = ["DEFAULT_HEDGE_AFTER_S", "FailoverCounts", "FirstAttempt", "first_success"]

T = TypeVar("T")

DEFAULT_HEDGE_AFTER_S = 0.25
"""How long a replica may stay silent before the next one is asked too."""

Attempt = Callable[[str, float], Coroutine[Any, Any, T]]
"""``attempt(replica_url, timeout_s)``: one read from one replica."""


@dataclass
class FailoverCounts:
    """What :func:`first_success` did beyond the first attempt, summed over its calls
    (a reader's metrics: plain ints, one event loop, nothing locked)."""

    failovers: int = 0
    """Attempts started because the previous replicas failed (the next replica, at once)."""
    hedges: int = 0
    """Attempts started because the earlier ones were still silent after the hedge delay."""
    hedges_won: int = 0
    """Reads answered by a hedge, not by the attempts it was sent beside."""
    budget_refusals: int = 0
    """Retries or hedges the retry budget did not allow."""


@dataclass
class FirstAttempt:
    """The first replica's attempt, made before :func:`first_success` took over (the
    router's callback lane answers most reads without it): still ``running`` when the
    hedge delay passed, or failed with the retriable ``failure``."""

    running: asyncio.Future[Any] | None = None
    failure: VeniceError | None = None


async def first_success(
    replicas: Sequence[str],
    attempt: Attempt[T],
    *,
    deadline_at: float,
    hedge_after_s: float = DEFAULT_HEDGE_AFTER_S,
    what: str = "read",
    may_retry: Callable[[], bool] | None = None,
    counts: FailoverCounts | None = None,
    first: FirstAttempt | None = None,
) -> T:
    """The result of the first attempt that succeeds.

    Raises the first non-retriable error at once (e.g. a bad request), NoReplicaError
    when every replica failed (or the retry budget refused to try the next one),
    DeadlineExceededError when ``deadline_at`` (a ``loop.time()`` instant) passed first.
    ``counts``, when given, adds up the failovers, hedges and budget refusals.
    ``first``: the attempt on ``replicas[0]`` was made already (it is not made again):
    the next one is a hedge beside it when it is still running, else a failover.
    """
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Future[T]] = set()
    hedges: set[asyncio.Future[T]] = set()
    failures: list[VeniceError] = []
    next_index = 0
    budget_refused = False
    after_failure = False
    if first is not None:
        next_index = 1
        if first.running is not None:
            in_flight.add(first.running)
        else:
            after_failure = True
        if first.failure is not None:
            failures.append(first.failure)
    try:
        while True:
            remaining = deadline_at - loop.time()
            if remaining <= 0:
                raise DeadlineExceededError(f"{what}: no replica answered within the deadline", **_reasons(failures))
            if next_index < len(replicas) and not budget_refused:
                if next_index == 0 or may_retry is None or may_retry():
                    task = loop.create_task(attempt(replicas[next_index], remaining))
                    if next_index > 0 and counts is not None:
                        if in_flight and not after_failure:
                            counts.hedges += 1
                            hedges.add(task)
                        else:
                            counts.failovers += 1
                    in_flight.add(task)
                    next_index += 1
                else:
                    budget_refused = True
                    if counts is not None:
                        counts.budget_refusals += 1
            if not in_flight:
                if budget_refused:
                    raise NoReplicaError(
                        f"{what}: {len(failures)} replica(s) failed and the retry budget is spent", **_reasons(failures)
                    )
                raise NoReplicaError(f"{what}: all {len(replicas)} replica(s) failed", **_reasons(failures))
            can_hedge = next_index < len(replicas) and not budget_refused
            window = min(remaining, hedge_after_s) if can_hedge else remaining
            done, in_flight = await asyncio.wait(in_flight, timeout=window, return_when=asyncio.FIRST_COMPLETED)
            after_failure = bool(done)  # no winner below: what finished failed; else the window passed
            winner = _settle(done, failures)
            if winner is not None:
                if counts is not None and winner[1] in hedges:
                    counts.hedges_won += 1
                return winner[0]
    finally:
        for pending in in_flight:
            pending.cancel()


def _settle(done: set[asyncio.Future[T]], failures: list[VeniceError]) -> tuple[T, asyncio.Future[T]] | None:
    """The result of a successful task and the task, or ``None``; records retriable failures.

    Every finished task's exception is looked at, so none is left unretrieved.
    """
    winner: tuple[T, asyncio.Future[T]] | None = None
    fatal: BaseException | None = None
    for task in done:
        exc = task.exception()
        if exc is None:
            winner = (task.result(), task)
        elif isinstance(exc, VeniceError) and exc.retriable:
            failures.append(exc)
        elif fatal is None:
            fatal = exc
    if winner is not None:
        return winner
    if fatal is not None:
        raise fatal
    return None


def _reasons(failures: list[VeniceError]) -> dict[str, list[str]]:
    return {"replica_errors": [f"{f.code}: {f.message}" for f in failures]} if failures else {}
