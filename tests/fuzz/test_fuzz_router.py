"""Schemathesis on the router's OpenAPI document (router/openapi.py), against a real
cluster (controller, storage server, router) serving a pushed store: no 5xx, every answer
as documented, the router stays up. Fixed, derandomized example budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis

from router.openapi import DOCUMENT
from tests.e2e.conftest import VALUE_SCHEMA, make_records, write_jsonl
from tests.fuzz.engine import fuzz
from venice.cluster import LocalCluster
from venice.controller_client import ControllerClient
from venice.push.job import run_push


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-router")
    with LocalCluster(tmp / "cluster", servers=1) as running:
        with ControllerClient(running.controller_url) as controller:
            controller.create_store({"name": "members", "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 2})
            controller.create_store({"name": "limited", "key_schema": "string", "value_schema": "string", "partitions": 1})
            controller.update_store("limited", read_quota=5)
        run_push(running.controller_url, "members", write_jsonl(tmp / "d.jsonl", make_records(20)), key_field="id", progress=False, timeout_s=120)
        yield running


@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
def test_router_api(cluster: LocalCluster, negative: bool) -> None:
    api = schemathesis.openapi.from_dict(DOCUMENT)
    ran = fuzz(api, cluster.router_url, lambda label: {}, negative=negative)
    assert "GET /storage/{store}/{key}" in ran and "POST /storage/{store}" in ran
    assert cluster.router.alive() and all(s.alive() for s in cluster.servers)
