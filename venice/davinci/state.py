"""What a Da Vinci client remembers between runs: ``davinci.json`` in its directory.

Written (atomically: a temporary file, fsync, rename) before every change of what is
hosted and at every swap, so that a restarted client can host the same store-versions
and serve the version it served, from its local checkpoints, before it has talked to
the controller or the broker. Read-only clients in other processes read it to learn
which version the writer serves::

    {"format": 1, "store": "members", "pubsub_url": "kafka://127.0.0.1:9092",
     "serving": 3, "serving_incarnation": "9f2c01ab34de", "assignments": [{...}, ...]}

``assignments`` are :class:`venice.protocol.Assignment` payloads. A file that does not
parse is ignored (and logged): the client then starts as on a new directory, keeping its
files until the controller says what to host.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from venice.errors import RequestError, VeniceError
from venice.protocol import Assignment

__all__ = ["STATE_NAME", "LocalState", "read_state", "write_state"]

log = logging.getLogger("venice.davinci")

STATE_NAME = "davinci.json"
FORMAT = 1
MAX_STATE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class LocalState:
    store: str
    pubsub_url: str | None
    serving: int | None
    serving_incarnation: str
    assignments: tuple[Assignment, ...]

    def serving_assignment(self) -> Assignment | None:
        for assignment in self.assignments:
            if assignment.version == self.serving and assignment.incarnation == self.serving_incarnation:
                return assignment
        return None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "store": self.store,
                "pubsub_url": self.pubsub_url,
                "serving": self.serving,
                "serving_incarnation": self.serving_incarnation,
                "assignments": [a.to_json() for a in self.assignments],
            }
        )

    @classmethod
    def from_bytes(cls, content: bytes) -> LocalState:
        """RequestError naming what is wrong with a state file."""
        if len(content) > MAX_STATE_BYTES:
            raise RequestError(f"{STATE_NAME} is larger than {MAX_STATE_BYTES} bytes")
        try:
            body: Any = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"{STATE_NAME} is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise RequestError(f"{STATE_NAME} is not format {FORMAT}")
        store, url, serving, incarnation = body.get("store"), body.get("pubsub_url"), body.get("serving"), body.get("serving_incarnation", "")
        if not isinstance(store, str) or not isinstance(incarnation, str):
            raise RequestError(f"{STATE_NAME}: store and serving_incarnation must be strings")
        if url is not None and not isinstance(url, str):
            raise RequestError(f"{STATE_NAME}: pubsub_url must be a string")
        if serving is not None and (isinstance(serving, bool) or not isinstance(serving, int) or serving < 1):
            raise RequestError(f"{STATE_NAME}: serving must be a version number")
        raw = body.get("assignments")
        if not isinstance(raw, list):
            raise RequestError(f"{STATE_NAME}: assignments must be a list")
        assignments = tuple(Assignment.from_json(a, f"assignments[{i}]") for i, a in enumerate(raw))
        if any(a.store != store for a in assignments):
            raise RequestError(f"{STATE_NAME}: an assignment names another store")
        return cls(store, url, serving, incarnation, assignments)


def read_state(directory: Path, store: str) -> LocalState | None:
    """The state in ``directory``, or ``None`` when there is none usable (logged)."""
    path = directory / STATE_NAME
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s; starting afresh", path, exc)
        return None
    try:
        state = LocalState.from_bytes(content)
    except VeniceError as exc:
        log.warning("ignoring %s: %s", path, exc.message)
        return None
    if state.store != store:
        log.warning("ignoring %s: it is of store %r, not %r", path, state.store, store)
        return None
    return state


def write_state(directory: Path, state: LocalState) -> None:
    """Replace the state file atomically; it reaches the disk before the rename."""
    path = directory / STATE_NAME
    tmp = path.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        out.write(state.to_bytes())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
