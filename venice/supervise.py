"""Background loops that survive their own bugs.

A long-running part (the controller's failover and janitor loops, a server's heartbeat)
runs one step at a time under :func:`supervised`: a step that raises is logged with its
traceback and the loop goes on after a short backoff (doubling up to a cap, reset by the
next good step), instead of the task dying silently and the part carrying on without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["supervised"]

Sleep = Callable[[float], Awaitable[None]]


async def supervised(
    name: str,
    step: Callable[[], Awaitable[None]],
    interval_s: float,
    *,
    log: logging.Logger,
    backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Run ``step`` every ``interval_s`` until cancelled; a crash is logged and retried
    after ``backoff_s`` (doubling up to ``max_backoff_s`` while it keeps crashing)."""
    backoff = backoff_s
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s crashed; restarting it in %.1f s", name, backoff)
            await sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
            continue
        backoff = backoff_s
        await sleep(interval_s)
