"""Start a storage server: typed config -> ASGI app -> uvicorn, draining on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from server.app import StorageApp
from server.service import ServerConfig, StorageService

__all__ = ["ServerConfig", "run"]

log = logging.getLogger("venice.server")


class DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM, first drains (the controller stops routing
    reads here, reads on their way are still answered), then shuts down gracefully,
    finishing requests in flight. A second signal, or SIGINT, stops at once."""

    def __init__(self, config: uvicorn.Config, service: StorageService) -> None:
        super().__init__(config)
        self.service = service
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_task is None and self.started:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._start_drain, loop)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        self._drain_task = loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        log.info("SIGTERM: draining")
        try:
            await self.service.drain()
        finally:
            self.should_exit = True


def run(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s server:{config.port} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    service = StorageService(config)
    uvicorn_config = uvicorn.Config(
        StorageApp(service),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(uvicorn_config, service).run()
