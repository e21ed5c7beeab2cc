"""Start a storage server: typed config -> ASGI app -> :class:`venice.httpserver.HttpServer`.

The first SIGTERM drains (the controller stops routing reads here, reads on their way
are still answered), then the server shuts down gracefully, finishing requests in
flight. A second signal, or SIGINT, stops at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server import workercounts
from server.app import StorageApp
from server.service import ServerConfig, StorageService
from venice.httpserver import HttpServer
from venice.tls import server_context

__all__ = ["ServerConfig", "run"]

log = logging.getLogger("venice.server")


def build_server(config: ServerConfig, *, reuse_port: bool = False) -> HttpServer:
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
        reuse_port=reuse_port,
        ssl_context=tls,
    )


def run(config: ServerConfig, *, workers: int = 1, read_worker_of: str | None = None, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT. ``workers`` > 1: this process ingests and serves, and
    ``workers - 1`` read workers (server/readworker.py) share its port;
    ``read_worker_of``: be such a worker, relaying to the ingesting process at that URL."""
    role = "server" if read_worker_of is None else "read-worker"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {role}:{config.port} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    if config.cluster_secret is None and read_worker_of is None:
        log.warning(
            "OPEN: NO CLUSTER SECRET: anyone who can reach this server can read its admin paths and every store, "
            "and the controller cannot tell it from a fake (give --cluster-secret-file or VENICE_CLUSTER_SECRET)"
        )
    if read_worker_of is not None:
        from server.readworker import ReadWorkerApp

        # A closed cluster may have private stores, which only the ingesting process
        # checks tokens for: its workers then relay every read to it.
        HttpServer(
            ReadWorkerApp(config.data_dir, read_worker_of, serve_reads=config.cluster_secret is None),
            host=config.host, port=config.port, graceful_shutdown_s=5.0, limits=config.http, reuse_port=True,
            ssl_context=server_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None,
        ).run()
    elif workers == 1:
        build_server(config, reuse_port=reuse_port).run()
    else:
        import uvloop

        uvloop.run(_serve_with_workers(config, workers))


class _WithoutLifespan:
    """The app for a second listener of the same process: its lifespan is run once, by
    the public listener."""

    def __init__(self, app: StorageApp) -> None:
        self.app = app
        self.fast_path = app.fast_path

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await self.app(scope, receive, send)


async def _serve_with_workers(config: ServerConfig, workers: int) -> None:
    """The ingesting process of a ``--workers`` server: the public port (SO_REUSEPORT,
    shared with the read workers) and a private loopback port the workers relay the
    non-read requests to; the workers are stopped (by pid) once the public side stopped."""
    from venice.workers import current_args, spawn_workers_async, worker_args

    public = build_server(config, reuse_port=True)
    assert isinstance(public.app, StorageApp)
    workercounts.clear(config.data_dir)  # an earlier run's workers'
    public.app.metrics.with_workers = True
    private = HttpServer(
        _WithoutLifespan(public.app), host="127.0.0.1", port=0, graceful_shutdown_s=5.0, limits=config.http
    )
    listening = asyncio.Event()
    private_task = asyncio.create_task(private.serve(ready=lambda port: listening.set()))
    started = asyncio.create_task(listening.wait())
    await asyncio.wait({private_task, started}, return_when=asyncio.FIRST_COMPLETED)
    if private_task.done():
        started.cancel()
        private_task.result()  # raises why it could not listen
        return
    args = [*worker_args(current_args()), "--read-worker-of", f"http://127.0.0.1:{private.port}"]
    try:
        async with spawn_workers_async(args, workers - 1):
            await public.serve(install_signal_handlers=True)
    finally:
        private.request_exit()
        await private_task
