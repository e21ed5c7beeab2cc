"""Read-only embedded clients: serve what another process's Da Vinci client ingests.

Several processes on one host may read one client directory: exactly one ingests into
it (a :class:`~venice.davinci.DaVinciClient`, holding ``writer.lock``), the others open
it with ``read_only=True``. A :class:`SharedReader` polls two files the writer keeps:

* ``hosting.json``, the ingestion host's manifest, through
  :class:`~venice.ingestion.HostingView`, which opens the LMDB environments it lists
  read-only (LMDB allows any number of reader processes beside one writer; readers never
  block it or each other);
* ``davinci.json``, which names the version the writer serves.

It serves that version once the manifest lists every one of its partitions ready, so
it swaps when the writer does (a poll later). The writer writes ``davinci.json`` at a
swap before it drops the old version, and the view keeps an environment open a few
seconds after the manifest stops listing it, so a read in flight is never cut short.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from venice.davinci.plan import Target
from venice.davinci.state import read_state
from venice.davinci.view import Served
from venice.errors import VeniceError
from venice.ingestion import HostingView

__all__ = ["SharedReader"]

log = logging.getLogger("venice.davinci")


class SharedReader:
    """The read-only counterpart of :class:`venice.davinci.follower.Follower`."""

    def __init__(self, store: str, directory: Path, *, publish: Callable[[Served | None], None], poll_s: float = 0.1) -> None:
        self.store = store
        self.directory = directory
        self._publish = publish
        self._poll_s = poll_s
        self.error: VeniceError | None = None
        self.target: Target | None = None
        """Unknown to a reader: it serves what the writer serves."""
        self.served: Served | None = None
        self.caught_up = False
        """A reader is caught up once it serves what the writer serves."""
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._view = HostingView(directory, poll_s=None)
        self._thread = threading.Thread(target=self._run, name=f"davinci-reader-{store}", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        served = self.served
        if served is not None:
            served.close()
        self._view.close()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.refresh()
            except Exception:
                log.exception("read-only Da Vinci refresh failed")

    def refresh(self) -> None:
        """Follow the writer: serve the version ``davinci.json`` names once it is ready."""
        self._view.refresh()
        state = read_state(self.directory, self.store)
        if state is None or state.serving is None:
            return
        served = self.served
        if served is not None and (served.version, served.incarnation) == (state.serving, state.serving_incarnation):
            return
        entry = self._view.entries.get((self.store, state.serving))
        assignment = state.serving_assignment()
        if entry is None or assignment is None or entry.incarnation != state.serving_incarnation:
            return
        if not set(assignment.partitions) <= set(entry.ready):
            return
        storage = self._view.ready(self.store, entry.version, assignment.partitions[0])
        schemas = dict(entry.value_schemas or assignment.value_schemas)
        new = Served(
            self.store,
            entry.version,
            entry.incarnation,
            entry.partitions_total,
            dict.fromkeys(assignment.partitions, storage),
            entry.key_schema if entry.key_schema is not None else assignment.key_schema,
            lambda: self._schemas(entry.version, schemas),
        )
        self._publish(new)
        with self.changed:
            self.served = new
            self.caught_up = True
            self.changed.notify_all()
        if served is not None:
            served.close()
        log.info("%s: read-only client now serves v%d", self.store, entry.version)

    def _schemas(self, version: int, fallback: dict[int, object]) -> dict[int, object]:
        """The newest value schemas the writer published for ``version``."""
        self._view.refresh()
        entry = self._view.entries.get((self.store, version))
        return dict(entry.value_schemas) if entry is not None and entry.value_schemas else fallback
