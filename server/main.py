"""Start a storage server: typed config -> ASGI app -> uvicorn with graceful shutdown."""

from __future__ import annotations

import logging

import uvicorn

from server.app import StorageApp
from server.service import ServerConfig, StorageService

__all__ = ["ServerConfig", "run"]


def run(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s server:{config.port} %(levelname)s %(message)s")
    uvicorn.run(
        StorageApp(StorageService(config)),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
