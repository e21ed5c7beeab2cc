"""Run the router: typed config -> ASGI app -> uvicorn.

uvicorn owns the signal handling: SIGTERM or SIGINT stops accepting connections,
lets requests in flight finish (up to ``graceful_shutdown_s``) and then runs the
app's lifespan shutdown, which closes the routing cache and the replica pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import uvicorn

from router.app import DEFAULT_DEADLINE_S, RouterApp
from router.cache import DEFAULT_REFRESH_INTERVAL_S

__all__ = ["DEFAULT_PORT", "RouterConfig", "build_app", "run", "uvicorn_config"]

DEFAULT_PORT = 7777
DEFAULT_CONTROLLER_URL = "http://127.0.0.1:5050"


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Settings of one router process."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    controller_url: str = DEFAULT_CONTROLLER_URL
    """Where ``GET /routing`` is served."""
    deadline_s: float = DEFAULT_DEADLINE_S
    """Time budget of one read, failover included."""
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    """How often the routing table is polled (a 304 when unchanged)."""
    hedge_after_s: float | None = None
    """A replica silent this long gets a parallel read sent to the next replica;
    ``None``: three times the recent p95 latency, between 10 and 250 ms."""
    graceful_shutdown_s: float = 5.0


def build_app(config: RouterConfig) -> RouterApp:
    return RouterApp(
        config.controller_url,
        deadline_s=config.deadline_s,
        refresh_interval_s=config.refresh_interval_s,
        hedge_after_s=config.hedge_after_s,
    )


def uvicorn_config(config: RouterConfig, app: RouterApp | None = None) -> uvicorn.Config:
    """The uvicorn settings the router runs with (also used by tests that embed a router)."""
    return uvicorn.Config(
        app if app is not None else build_app(config),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=config.graceful_shutdown_s,
    )


def run(config: RouterConfig) -> None:
    """Serve until SIGTERM/SIGINT. Blocks."""
    uvicorn.Server(uvicorn_config(config)).run()
