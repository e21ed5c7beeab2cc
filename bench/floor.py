"""The floor under every HTTP figure: a trivial raw ASGI app on uvicorn, set up like ours.

``python -m bench.floor --port P`` answers every request with the same 100 bytes, on
uvicorn with uvloop and httptools and no access log, exactly as the storage servers
and the router run. Its throughput under the same wrk load is what uvicorn itself
costs per request on this machine: no storage server or router can beat it.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

BODY = b"v" * 100
_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"100")]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", lifespan="off",
        log_level="warning", access_log=False,
    )


if __name__ == "__main__":
    main()
