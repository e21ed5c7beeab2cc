"""The background half of an embedded client: follow the store, ingest, swap.

A :class:`Follower` owns one thread with its own event loop, on which an
:class:`~venice.ingestion.IngestionHost` ingests into the client's directory exactly as
a storage server's does. The loop:

1. at start, hosts what the client hosted before (``davinci.json``) and serves the
   version it served, from local checkpoints, before asking anyone anything;
2. follows the controller: the store description (``GET /stores/{store}``) whenever the
   routing table moves (long poll of ``GET /routing``) and every few seconds, turned into
   assignments by :func:`venice.davinci.plan.plan_hosting` and handed to the host;
3. swaps in the controller's current version once every subscribed partition of it is
   READY here, closing the view of the old one (:class:`venice.davinci.view.Served`)
   before the host may drop its files.

Failures to reach the controller or the broker are retried with backoff; reads keep
being served from what is held. Errors a retry cannot fix (the store does not exist, a
subscribed partition it does not have) are kept in :attr:`Follower.error` for
``start()`` to raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from venice.controller_client import AsyncControllerClient
from venice.davinci.plan import Target, plan_hosting
from venice.davinci.state import LocalState, read_state, write_state
from venice.davinci.view import Served
from venice.errors import InternalError, NoCurrentVersionError, RequestError, StoreNotFoundError, VeniceError
from venice.ingestion import DEFAULT_MAP_SIZE, HostedVersion, IngestionHost
from venice.protocol import Assignment, ReplicaStatus, StoreDescription
from venice.pubsub import PubSub, connect

__all__ = ["Follower"]

log = logging.getLogger("venice.davinci")

DESCRIBE_EVERY_S = 2.0
"""How often the store description is fetched when the routing table has not moved."""
LONG_POLL_S = 10.0
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class Follower:
    """Ingests ``store`` into ``directory`` on a background thread; see the module docstring."""

    def __init__(
        self,
        controller_url: str,
        store: str,
        directory: Path,
        *,
        partitions: Sequence[int] | None,
        publish: Callable[[Served | None], None],
        map_size: int = DEFAULT_MAP_SIZE,
        controller_timeout_s: float = 10.0,
    ) -> None:
        self.controller_url = controller_url
        self.store = store
        self.directory = directory
        self.partitions = None if partitions is None else tuple(partitions)
        self._publish = publish
        self._map_size = map_size
        self._controller_timeout_s = controller_timeout_s
        self.error: VeniceError | None = None
        """A problem retrying cannot fix, for ``start()`` to raise (cleared once it goes away)."""
        self.target: Target | None = None
        self.served: Served | None = None
        self.caught_up = False
        """Serving the controller's current version, every subscribed partition READY."""
        self.changed = threading.Condition()
        """Notified whenever :attr:`served`, :attr:`target` or :attr:`error` change."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name=f"davinci-{store}", daemon=True)
        self._resumed = threading.Event()
        self._serving_assignment: Assignment | None = None
        self._assignments: tuple[Assignment, ...] = ()
        self._pubsub_url: str | None = None
        self.host: IngestionHost | None = None

    # -- thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._resumed.wait()

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # a bug must reach start(), not vanish with the thread
            log.exception("the Da Vinci follower of %s stopped", self.store)
            self._set(error=InternalError(f"the Da Vinci background thread failed: {type(exc).__name__}: {exc}"))
        finally:
            self._resumed.set()

    def _set(self, **changes: Any) -> None:
        with self.changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.changed.notify_all()

    # -- the loop ---------------------------------------------------------------------------------
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._describe = asyncio.Event()
        self._local = asyncio.Event()
        self.host = IngestionHost(
            self.directory, schema_refresh=self._value_schemas, map_size=self._map_size, on_change=self._local.set
        )
        self.controller = AsyncControllerClient(self.controller_url, timeout_s=self._controller_timeout_s)
        watcher: asyncio.Task[None] | None = None
        try:
            await self._resume()
            self._resumed.set()
            watcher = asyncio.create_task(self._watch_routing(), name=f"davinci-routing-{self.store}")
            await self._follow()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            served = self.served
            if served is not None:
                served.close()
            self._set(served=None)
            self._publish(None)
            await self.host.close()
            await self.controller.aclose()
            if self.host.pubsub is not None:
                await self.host.pubsub.close()

    async def _resume(self) -> None:
        """Host what was hosted before and serve the version served before, at once."""
        state = read_state(self.directory, self.store)
        if state is None or state.pubsub_url is None:
            return
        self._pubsub_url = state.pubsub_url
        self.host_pubsub(connect(state.pubsub_url))
        self._assignments = state.assignments
        assert self.host is not None
        await self.host.reconcile(state.assignments)
        serving = state.serving_assignment()
        if serving is None:
            return
        hosted = self.host.hosted.get((self.store, serving.version, serving.incarnation))
        chosen = set(self.partitions if self.partitions is not None else serving.partitions)
        if hosted is None or not chosen <= set(serving.partitions):
            return
        states = hosted.ingestion.partitions
        # What it holds: every subscribed partition past end-of-push and not failed.
        if all(p in states and states[p].checkpoint.end_of_push and states[p].status is not ReplicaStatus.ERROR for p in chosen):
            self._serve(hosted, serving, sorted(chosen))
            log.info("%s: serving v%d from local data while catching up", self.store, serving.version)

    def host_pubsub(self, pubsub: PubSub) -> None:
        assert self.host is not None
        self.host.pubsub = pubsub

    async def _follow(self) -> None:
        assert self._stop is not None
        failures = 0
        last_describe = -DESCRIBE_EVERY_S
        while not self._stop.is_set():
            now = time.monotonic()
            if self._describe.is_set() or now - last_describe >= DESCRIBE_EVERY_S:
                self._describe.clear()
                last_describe = now
                try:
                    await self._step()
                    failures = 0
                except VeniceError as exc:
                    delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                    failures += 1
                    if failures == 1 or failures % 10 == 0:
                        log.warning("%s: cannot follow the controller (%s); retrying in %.1f s", self.store, exc.message, delay)
                    last_describe = time.monotonic() - DESCRIBE_EVERY_S + delay
            self._local.clear()
            self._maybe_swap()
            waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._describe, self._local)]
            try:
                timeout = max(0.0, last_describe + DESCRIBE_EVERY_S - time.monotonic())
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def _step(self) -> None:
        """Fetch the description, plan, remember the plan, host it."""
        try:
            description = StoreDescription.from_json(await self.controller.get_store(self.store))
        except StoreNotFoundError as exc:
            self._set(error=exc)
            return
        except RequestError as exc:  # a description that does not parse
            raise InternalError(f"the controller's description of {self.store!r} is malformed: {exc.message}") from exc
        if self.host is not None and self.host.pubsub is None:
            cluster = await self.controller.cluster()
            url = cluster.get("pubsub_url")
            if not isinstance(url, str):
                raise InternalError("the controller's /cluster answer names no pubsub_url")
            self._pubsub_url = url
            self.host_pubsub(connect(url))
        try:
            plan = plan_hosting(description, self.partitions, self._serving_assignment)
        except RequestError as exc:
            self._set(error=exc)
            return
        if plan.target is None and self.served is None:
            self._set(error=NoCurrentVersionError(f"store {self.store!r} has no current version: push data first"), target=None)
        else:
            self._set(error=None, target=plan.target)
        self._assignments = plan.assignments
        self._save()
        assert self.host is not None
        await self.host.reconcile(plan.assignments)

    def _save(self) -> None:
        serving = self._serving_assignment
        state = LocalState(
            self.store,
            self._pubsub_url,
            None if serving is None else serving.version,
            "" if serving is None else serving.incarnation,
            self._assignments,
        )
        try:
            write_state(self.directory, state)
        except OSError as exc:
            log.error("cannot write the Da Vinci state in %s: %s", self.directory, exc)

    def _maybe_swap(self) -> None:
        """Serve the target once it is complete here; caught up once it is served and ready."""
        target, host = self.target, self.host
        hosted = None if target is None or host is None else host.hosted.get((self.store, target.version, target.incarnation))
        caught_up = False
        if target is not None and hosted is not None:
            ready = all(hosted.ingestion.is_ready(p) for p in hosted.assignment.partitions)
            served = self.served
            if served is not None and (served.version, served.incarnation) == (target.version, target.incarnation):
                caught_up = ready
            elif ready:
                self._serve(hosted, hosted.assignment, hosted.assignment.partitions)
                self._save()
                self._describe.set()  # the old version may go now: plan again
                log.info("%s: now serving v%d", self.store, target.version)
                caught_up = True
        if caught_up != self.caught_up:
            self._set(caught_up=caught_up)

    def _serve(self, hosted: HostedVersion, assignment: Assignment, partitions: Sequence[int]) -> None:
        ingestion = hosted.ingestion
        new = Served(
            self.store,
            assignment.version,
            assignment.incarnation,
            assignment.partitions_total,
            {p: hosted.storage for p in partitions},
            assignment.key_schema,
            lambda: ingestion.schemas.schemas.schemas(),
        )
        old = self.served
        self._publish(new)
        self._serving_assignment = assignment
        self._set(served=new)
        if old is not None:
            old.close()  # before the host can drop its files: no read of it runs after this

    async def _watch_routing(self) -> None:
        """Long-poll the routing table; every move is a reason to look at the store again."""
        generation: int | None = None
        failures = 0
        while True:
            try:
                table = await self.controller.routing(generation, wait_s=LONG_POLL_S)
                failures = 0
            except VeniceError:
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            if table is not None:
                generation = table.generation
                self._describe.set()

    async def _value_schemas(self, store: str, incarnation: str) -> Mapping[int, Any]:
        """The host's schema source, as a storage server's: the controller's description."""
        description = StoreDescription.from_json(await self.controller.get_store(store))
        if incarnation and description.incarnation and description.incarnation != incarnation:
            raise StoreNotFoundError(f"store {store!r} was deleted and created again")
        return dict(description.value_schemas)
