"""The router: routing-table cache, key -> partition -> replica, failover, batch scatter-gather.

Start one with ``router.run(RouterConfig(controller_url=...))``; embed the ASGI app with
``build_app(config)``.
"""

from router.app import RouterApp
from router.main import RouterConfig, build_app, build_server, run

__all__ = ["RouterApp", "RouterConfig", "build_app", "build_server", "run"]
