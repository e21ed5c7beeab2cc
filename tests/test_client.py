"""The SDK (venice.client) against the real router in front of fake servers."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.router.fakes import BIG_LONG_KEYS, TAG_RECORDS, SampleCluster, member, refused_url, sample_cluster
from venice.client import AsyncClient, Client, encode_key
from venice.errors import (
    DeadlineExceededError,
    InvalidKeyError,
    NoCurrentVersionError,
    NoReplicaError,
    StoreNotFoundError,
    TransportError,
    VersionNotFoundError,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SampleCluster]:
    with sample_cluster() as running:
        yield running


@pytest.fixture
def client(cluster: SampleCluster) -> Iterator[Client]:
    with Client(cluster.router_url) as sdk:
        yield sdk


def json_member(key: int, version: int = 2) -> dict[str, Any]:
    value = member(key, version)
    return {**value, "avatar": base64.b64encode(value["avatar"]).decode()}


class TestEncodeKey:
    """Keys become one path segment that the router parses with the store's key schema."""

    def test_numbers_and_booleans_are_text(self) -> None:
        assert encode_key(42) == "42"
        assert encode_key(-(2**63)) == "-9223372036854775808"
        assert encode_key(1.5) == "1.5"
        assert encode_key(True) == "true"

    def test_strings_are_quoted_slash_included(self) -> None:
        assert encode_key("a/b c") == "a%2Fb%20c"
        assert encode_key("") == ""

    def test_records_are_json(self) -> None:
        assert encode_key({"a": 1}) == "%7B%22a%22%3A1%7D"

    def test_unsupported_type(self) -> None:
        with pytest.raises(InvalidKeyError):
            encode_key(object())


class TestClient:
    def test_get_returns_the_value(self, client: Client) -> None:
        assert client.get("members", 42) == json_member(42)
        assert client.get("members", BIG_LONG_KEYS[2]) == json_member(BIG_LONG_KEYS[2])

    def test_get_string_and_record_keys(self, client: Client) -> None:
        for key, value in TAG_RECORDS.items():
            assert client.get("tags", key) == value
        assert client.get("pairs", {"a": 2, "b": "y/z"}) == 20

    def test_missing_key_is_none(self, client: Client) -> None:
        assert client.get("members", 123456) is None

    def test_version(self, client: Client) -> None:
        assert client.get("members", 3, version=1) == json_member(3, 1)
        with pytest.raises(VersionNotFoundError):
            client.get("members", 3, version=9)

    def test_batch_get_aligns_values_with_keys(self, client: Client) -> None:
        assert client.batch_get("members", [2, 123456, 1]) == [json_member(2), None, json_member(1)]
        assert client.batch_get("members", []) == []

    def test_typed_errors(self, client: Client) -> None:
        with pytest.raises(StoreNotFoundError):
            client.get("nope", 1)
        with pytest.raises(NoCurrentVersionError):
            client.get("fresh", "x")
        with pytest.raises(InvalidKeyError):
            client.get("members", "abc")
        with pytest.raises(InvalidKeyError):
            client.batch_get("members", ["abc"])
        with pytest.raises(NoReplicaError):
            client.get("down", "k")

    def test_unreachable_router_is_a_transport_error(self) -> None:
        with refused_url() as url, Client(url) as sdk:
            with pytest.raises(TransportError) as caught:
                sdk.get("members", 1)
        assert isinstance(caught.value.__cause__, httpx.ConnectError)

    def test_client_timeout_is_deadline_exceeded(self, cluster: SampleCluster) -> None:
        with Client(cluster.router_url, timeout=0.2) as sdk:
            with pytest.raises(DeadlineExceededError) as caught:
                sdk.get("stuck", "k")
        assert isinstance(caught.value.__cause__, httpx.TimeoutException)

    def test_context_manager_closes(self, cluster: SampleCluster) -> None:
        with Client(cluster.router_url) as sdk:
            assert sdk.get("members", 1) == json_member(1)
        assert sdk._http.is_closed


class TestAsyncClient:
    async def test_get_batch_get_and_missing(self, cluster: SampleCluster) -> None:
        async with AsyncClient(cluster.router_url) as sdk:
            assert await sdk.get("members", 7) == json_member(7)
            assert await sdk.get("members", 123456) is None
            assert await sdk.get("tags", "a/b c") == "slash and space"
            assert await sdk.batch_get("members", [123456, 7]) == [None, json_member(7)]
        assert sdk._http.is_closed

    async def test_typed_errors(self, cluster: SampleCluster) -> None:
        async with AsyncClient(cluster.router_url) as sdk:
            with pytest.raises(StoreNotFoundError):
                await sdk.batch_get("nope", [1])
            with pytest.raises(NoCurrentVersionError):
                await sdk.get("fresh", "x")
            with pytest.raises(NoReplicaError):
                await sdk.batch_get("down", ["k"])

    async def test_transport_errors(self, cluster: SampleCluster) -> None:
        with refused_url() as url:
            async with AsyncClient(url) as sdk:
                with pytest.raises(TransportError):
                    await sdk.get("members", 1)
        async with AsyncClient(cluster.router_url, timeout=0.2) as sdk:
            with pytest.raises(DeadlineExceededError):
                await sdk.get("stuck", "k")


def test_importing_the_sdk_stays_light() -> None:
    """Applications embed the SDK: it must not drag in server-side code or heavy dependencies."""
    heavy = ["fastapi", "starlette", "lmdb", "uvicorn", "router", "server", "controller"]
    code = (
        "import sys, venice.client\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
