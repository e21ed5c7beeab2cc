"""Keys and numbers in router reads (issue 8, item 7): one strict grammar for path keys and
``?version=``, keys beyond LMDB's size limit refused up front, record keys canonical."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.router.fakes import PAIR_RECORDS, SampleCluster, sample_cluster


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    cluster: SampleCluster
    with sample_cluster() as cluster, httpx.Client(base_url=cluster.router_url, timeout=10) as client:
        yield client


def _error_code(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["code"])


@pytest.mark.parametrize("key", ["+1", " 1 ", "1 ", "\u0661", "1_0", "\uff11", "1.0", "0x1", "", "-", "1\n", "1e3"])
def test_long_keys_are_ascii_digits_only(http: httpx.Client, key: str) -> None:
    assert _error_code(http.get(f"/storage/members/{quote(key, safe='')}")) == "INVALID_KEY"


def test_plain_and_negative_long_keys_still_read(http: httpx.Client) -> None:
    assert http.get("/storage/members/1").status_code == 200
    assert http.get("/storage/members/01").json() == http.get("/storage/members/1").json()
    assert _error_code(http.get(f"/storage/members/-{2**63 + 1}")) == "INVALID_KEY"


@pytest.mark.parametrize("version", ["\uff11", "+1", " 1", "1_0", "\u0661", "1.0", "0x1", "9" * 40])
def test_version_parameter_is_ascii_digits_only(http: httpx.Client, version: str) -> None:
    assert _error_code(http.get("/storage/members/3", params={"version": version})) == "BAD_REQUEST"
    assert _error_code(http.post("/storage/members", params={"version": version}, json={"keys": [3]})) == "BAD_REQUEST"


def test_keys_longer_than_lmdb_takes_are_refused(http: httpx.Client) -> None:
    # A string key of 509 characters serializes to 511 bytes (2-byte length): the limit.
    assert _error_code(http.get(f"/storage/tags/{'k' * 509}"), 404) == "KEY_NOT_FOUND"
    response = http.get(f"/storage/tags/{'k' * 510}")
    assert _error_code(response) == "INVALID_KEY" and "at most 511 bytes" in response.json()["error"]["message"]
    batch = http.post("/storage/tags", json={"keys": ["k", "k" * 5000]})
    assert _error_code(batch) == "INVALID_KEY"


def test_record_keys_are_found_whatever_the_field_order(http: httpx.Client) -> None:
    (a, b), value = next(iter(PAIR_RECORDS.items()))
    for text in (orjson.dumps({"a": a, "b": b}), orjson.dumps({"b": b, "a": a})):
        assert http.get(f"/storage/pairs/{quote(text, safe='')}").json() == value
    results = http.post("/storage/pairs", json={"keys": [{"a": a, "b": b}, {"b": b, "a": a}]}).json()["results"]
    assert [r["value"] for r in results] == [value, value]
