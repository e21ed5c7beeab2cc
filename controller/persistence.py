"""Durable controller metadata: one JSON document replaced atomically.

Written to a temporary file, fsynced, then renamed over the old one, so a crash at
any point leaves either the old or the new state, never a mix.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from controller.limits import DEFAULT_FORGET_AFTER_S
from controller.state import ClusterState

__all__ = ["MetadataFile"]


class MetadataFile:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "controller-state.json"

    def load(
        self, pubsub_url: str, dead_after_s: float, forget_after_s: float = DEFAULT_FORGET_AFTER_S
    ) -> ClusterState:
        if not self.path.exists():
            return ClusterState(pubsub_url, dead_after_s, forget_after_s)
        state = ClusterState.from_dict(orjson.loads(self.path.read_bytes()), dead_after_s, time.time(), forget_after_s)
        # The pub-sub the cluster runs on may be moved (e.g. a new broker address).
        state.pubsub_url = pubsub_url
        return state

    def save(self, state: ClusterState) -> bytes:
        """Write ``state`` durably; the document written. Raises (``TypeError`` when the state
        does not serialize, ``OSError`` when the disk refuses) with the old file intact."""
        data = orjson.dumps(state.to_dict(), option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        state.dirty = False
        return data
