"""Start a storage server: typed config -> ASGI app -> :class:`venice.httpserver.HttpServer`.

The first SIGTERM drains (the controller stops routing reads here, reads on their way
are still answered), then the server shuts down gracefully, finishing requests in
flight. A second signal, or SIGINT, stops at once.
"""

from __future__ import annotations

import logging

from server.app import StorageApp
from server.service import ServerConfig, StorageService
from venice.httpserver import HttpServer
from venice.tls import server_context

__all__ = ["ServerConfig", "run"]

log = logging.getLogger("venice.server")


def build_server(config: ServerConfig) -> HttpServer:
    service = StorageService(config)

    async def drain() -> None:
        log.info("SIGTERM: draining")
        await service.drain()

    tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    return HttpServer(
        StorageApp(service),
        host=config.host,
        port=config.port,
        graceful_shutdown_s=5.0,
        limits=config.http,
        before_shutdown=drain,
        ssl_context=tls,
    )


def run(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s server:{config.port} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    if config.cluster_secret is None:
        log.warning(
            "OPEN: NO CLUSTER SECRET: anyone who can reach this server can read its admin paths and every store, "
            "and the controller cannot tell it from a fake (give --cluster-secret-file or VENICE_CLUSTER_SECRET)"
        )
    build_server(config).run()
