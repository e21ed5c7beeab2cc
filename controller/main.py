"""Start a controller: typed config -> app -> uvicorn with graceful shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from controller.app import Controller, create_app
from controller.limits import DEFAULT_FORGET_AFTER_S
from controller.persistence import MetadataFile
from venice.pubsub import connect

__all__ = ["ControllerConfig", "run"]

DEFAULT_PORT = 5050


@dataclass(frozen=True)
class ControllerConfig:
    data_dir: Path
    """Where the metadata file lives."""
    pubsub_url: str
    """``kafka://HOST:PORT`` or ``embedded:///DIR``; handed to servers and push jobs."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    dead_after_s: float = 15.0
    """A server silent this long is no longer given new replicas."""
    forget_after_s: float = DEFAULT_FORGET_AFTER_S
    """A server silent this long is forgotten: it no longer counts as a member."""


def run(config: ControllerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    controller = Controller(
        MetadataFile(config.data_dir), connect(config.pubsub_url), config.dead_after_s, config.forget_after_s
    )
    app = create_app(controller)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
