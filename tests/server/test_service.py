"""The storage server's answers to its ingestion host's schema questions, from a
controller that answers well, badly or not at all (a real HTTP stand-in on loopback)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.service import ServerConfig, StorageService
from tests.router.fakes import read_body, refused_url, serve_in_thread
from venice.errors import InternalError, StoreNotFoundError, UnavailableError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Describer:
    """Answers ``GET /stores/{store}`` with whatever the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        payload = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def describer() -> Iterator[tuple[Describer, str]]:
    fake = Describer()
    with serve_in_thread(fake) as url:
        yield fake, url


async def test_value_schemas_from_the_controller(tmp_path: Path, describer: tuple[Describer, str]) -> None:
    fake, url = describer
    service = StorageService(ServerConfig(tmp_path, url, server_id="s"))
    try:
        fake.body = {"name": "s", "incarnation": "abc", "value_schemas": {"1": "string", "2": {"type": "record", "name": "R", "fields": []}}}
        assert await service.value_schemas("s", "abc") == {1: "string", 2: {"type": "record", "name": "R", "fields": []}}
        assert await service.value_schemas("s", "") == {1: "string", 2: {"type": "record", "name": "R", "fields": []}}
        with pytest.raises(StoreNotFoundError, match="created again"):
            await service.value_schemas("s", "another")
        for hostile in ({"value_schemas": {"one": "string"}}, {"value_schemas": {"١": "string"}}, {"value_schemas": ["string"]}, {}, []):
            fake.body = hostile
            with pytest.raises(InternalError):
                await service.value_schemas("s", "")
        fake.body = b"not json"
        with pytest.raises(InternalError):
            await service.value_schemas("s", "")
        fake.status, fake.body = 404, {"error": {"code": "STORE_NOT_FOUND", "message": "no store s"}}
        with pytest.raises(StoreNotFoundError):
            await service.value_schemas("s", "")
    finally:
        await service.close()


async def test_an_unreachable_controller_is_a_retriable_error(tmp_path: Path) -> None:
    with refused_url() as url:
        service = StorageService(ServerConfig(tmp_path, url, server_id="s"))
        try:
            with pytest.raises(UnavailableError):
                await service.value_schemas("s", "")
        finally:
            await service.close()
