"""Durable controller metadata: one JSON document replaced atomically.

Written to a temporary file, fsynced, then renamed over the old one, so a crash at
any point leaves either the old or the new state, never a mix.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from controller.state import ClusterState

__all__ = ["MetadataFile"]


class MetadataFile:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "controller-state.json"

    def load(self, pubsub_url: str, dead_after_s: float) -> ClusterState:
        if not self.path.exists():
            return ClusterState(pubsub_url, dead_after_s)
        state = ClusterState.from_dict(orjson.loads(self.path.read_bytes()), dead_after_s, time.time())
        # The pub-sub the cluster runs on may be moved (e.g. a new broker address).
        state.pubsub_url = pubsub_url
        return state

    def save(self, state: ClusterState) -> None:
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
