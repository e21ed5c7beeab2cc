"""Supervised background loops: a crash is logged with its traceback and the loop goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from venice.supervise import supervised


class FakeSleep:
    """Records each pause instead of waiting; cancels the loop after ``limit`` pauses."""

    def __init__(self, limit: int) -> None:
        self.pauses: list[float] = []
        self.limit = limit

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if len(self.pauses) >= self.limit:
            raise asyncio.CancelledError


async def test_a_crashing_step_is_logged_and_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = iter([RuntimeError("one"), RuntimeError("two"), RuntimeError("three"), None, None, KeyError("four"), None])
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    sleep = FakeSleep(limit=7)
    with caplog.at_level(logging.ERROR, logger="test.loop"), pytest.raises(asyncio.CancelledError):
        await supervised("janitor", step, 1.0, log=logging.getLogger("test.loop"), backoff_s=0.5, max_backoff_s=1.5, sleep=sleep)
    assert calls == 7
    # Backoff doubles while the step keeps crashing (capped), the interval after a good
    # step, and the backoff starts over after one.
    assert sleep.pauses == [0.5, 1.0, 1.5, 1.0, 1.0, 0.5, 1.0]
    crashes = [r for r in caplog.records if "janitor crashed" in r.getMessage()]
    assert len(crashes) == 4
    assert all(r.exc_info is not None for r in crashes)
    assert [str(r.exc_info[1]) for r in crashes if r.exc_info] == ["one", "two", "three", "'four'"]


async def test_cancellation_stops_the_loop_at_once() -> None:
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(supervised("idle", step, 1.0, log=logging.getLogger("test.loop")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
