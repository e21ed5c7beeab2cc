"""A change consumer rests on a replica that answers at once with nothing to read.

A replica that is not consuming real-time writes (a backup, or a version its server has
not yet heard was rolled back) answers a change-log page at once instead of long-polling.
The consumer must not turn that into a busy loop of requests.
"""

from __future__ import annotations

import asyncio

from venice.changes import AsyncChangeConsumer
from venice.protocol import ChangeLogPage


class CountingConsumer(AsyncChangeConsumer):
    def __init__(self, page: ChangeLogPage) -> None:
        super().__init__("http://127.0.0.1:9", "members")
        self.answer = page
        self.fetches = 0

    async def _fetch(self, version: int, partition: int, start: int | None, wait_s: float) -> ChangeLogPage:
        self.fetches += 1
        return self.answer


async def _fetches_while_the_loop_turns(page: ChangeLogPage, turns: int = 300) -> int:
    consumer = CountingConsumer(page)
    consumer._reading = consumer._target = 3
    task = asyncio.create_task(consumer._partition(0))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.aclose()
    return consumer.fetches


async def test_a_replica_not_consuming_is_asked_again_only_after_a_rest() -> None:
    idle = ChangeLogPage(consuming=False, hybrid=True, next=5, start=0)
    # 300 turns of the event loop take far less than the rest (a second); a busy loop would
    # have asked on nearly every turn.
    assert await _fetches_while_the_loop_turns(idle) <= 2


async def test_a_consuming_replica_is_asked_again_at_once() -> None:
    # The control: a consuming replica that (in this fake) answers at once is asked again
    # at once, so the count above is the rest and not the fake's speed.
    consuming = ChangeLogPage(consuming=True, hybrid=True, next=5, start=0)
    assert await _fetches_while_the_loop_turns(consuming) > 50
