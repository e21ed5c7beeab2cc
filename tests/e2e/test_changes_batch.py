"""Change capture of a batch-only store on a real cluster (real Kafka broker): there is
no change log, so only version swaps come, and a rollback is one too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import create_store, make_records, push, write_jsonl
from venice.cluster import LocalCluster

pytestmark = pytest.mark.kafka


@pytest.fixture
def cluster(kafka_broker: Any, tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "c", servers=1, pubsub_url=kafka_broker.url) as cluster:
        yield cluster


def test_batch_only_stores_give_version_swaps_only(cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(cluster.controller_url, "batchy", partitions=2, replication_factor=1)
    with pytest.raises(venice.NoCurrentVersionError):
        venice.ChangeConsumer(cluster.controller_url, "batchy")
    assert push(cluster.controller_url, "batchy", write_jsonl(tmp_path / "1.jsonl", make_records(20, seed=1))).returncode == 0
    with venice.ChangeConsumer(cluster.controller_url, "batchy") as consumer:
        assert consumer.poll(timeout=1.0) is None
        assert push(cluster.controller_url, "batchy", write_jsonl(tmp_path / "2.jsonl", make_records(20, seed=2))).returncode == 0
        swap = consumer.poll(timeout=60)
        assert isinstance(swap, venice.VersionSwap) and (swap.old, swap.new) == (1, 2)
        assert httpx.post(f"{cluster.controller_url}/stores/batchy/rollback", timeout=10).status_code == 200
        back = consumer.poll(timeout=60)
        assert isinstance(back, venice.VersionSwap) and (back.old, back.new) == (2, 1)
        assert consumer.poll(timeout=1.0) is None
        position = consumer.position
    with venice.ChangeConsumer(cluster.controller_url, "batchy", since=position) as resumed:
        assert resumed.poll(timeout=1.0) is None
