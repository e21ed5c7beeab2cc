"""The clients on a hybrid store of a real cluster (controller, storage servers, router;
the real Kafka broker): change capture across a push while nearline writes flow
(nothing missed, nothing repeated), and the Da Vinci, direct and router clients all
holding what a model of the writes says, across a push and a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.changes.tools import SCHEMA, Writer, collect, model, sequences, write
from tests.e2e.conftest import push, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster, wait_for

pytestmark = pytest.mark.kafka

P = 3


@pytest.fixture(scope="module")
def cluster(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("hybrid-clients"), servers=2, pubsub_url=kafka_broker.url) as cluster:
        yield cluster


def hybrid_store(cluster: LocalCluster, name: str) -> None:
    """Rewind of an hour: every version replays every nearline write of the test."""
    answer = httpx.post(f"{cluster.controller_url}/stores", timeout=30, json={
        "name": name, "key_schema": "long", "value_schema": SCHEMA, "partitions": P, "replication_factor": 2,
        "hybrid": {"rewind_seconds": 3600, "offset_lag": 100}, "write_compute": True})
    assert answer.status_code == 201, answer.text


def push_base(cluster: LocalCluster, store: str, base: dict[int, dict[str, Any]], path: Path) -> None:
    result = push(cluster.controller_url, store, write_jsonl(path, [{"id": k, **v} for k, v in base.items()]))
    assert result.returncode == 0, result.stderr[-2000:]


def test_change_capture_across_a_push_while_writes_flow(cluster: LocalCluster, tmp_path: Path) -> None:
    store = "hyb-feed"
    hybrid_store(cluster, store)
    push_base(cluster, store, {k: {"seq": -1, "source": "push1", "hits": 0} for k in range(40)}, tmp_path / "1.jsonl")
    wait_router_serves(cluster.router_url, store, 0)
    with venice.ChangeConsumer(cluster.controller_url, store) as consumer:
        with Writer(cluster.pubsub_url, store, P, start=1) as writer:
            wait_for(lambda: writer.next > 50, 60, "writes to flow")
            push_base(cluster, store, {k: {"seq": -2, "source": "push2", "hits": 0} for k in range(40)}, tmp_path / "2.jsonl")
            mark = writer.next
            wait_for(lambda: writer.next > mark + 60, 60, "writes after the push")
        last = writer.next - 1
        events = collect(consumer, lambda evs: len(set(sequences(evs, writer.written))) >= last
                         and any(isinstance(e, venice.VersionSwap) for e in evs), timeout_s=180)
        assert consumer.poll(timeout=2.0) is None  # nothing more, nothing twice
    swaps = [(e.old, e.new) for e in events if isinstance(e, venice.VersionSwap)]
    assert swaps == [(1, 2)]
    assert sorted(sequences(events, writer.written)) == list(range(1, last + 1))
    changes = [e for e in events if isinstance(e, venice.Change)]
    for partition in range(P):
        offsets = [c.offset for c in changes if c.partition == partition]
        assert offsets == sorted(set(offsets))
    swap_at = next(i for i, e in enumerate(events) if isinstance(e, venice.VersionSwap))
    assert {c.version for c in events[:swap_at] if isinstance(c, venice.Change)} <= {1}
    assert {c.version for c in events[swap_at:] if isinstance(c, venice.Change)} <= {2}


def test_davinci_direct_and_router_clients_agree_with_the_model(cluster: LocalCluster, tmp_path: Path) -> None:
    store = "hyb-model"
    hybrid_store(cluster, store)
    keys = list(range(30))
    base1 = {k: {"seq": -1, "source": "push1", "hits": 0} for k in keys}
    base2 = {k: {"seq": -2, "source": "push2", "hits": 7} for k in keys}
    push_base(cluster, store, base1, tmp_path / "1.jsonl")
    wait_router_serves(cluster.router_url, store, 0)
    first = [(k, {"seq": k, "source": "w1", "hits": 0}) for k in keys[::2]] + [(k, None) for k in keys[:4]] + \
        [(k, {"set": {"seq": 100 + k}, "increment": {"hits": 3}}) for k in keys[2:12]] + [(1000, {"seq": 1, "source": "new", "hits": 0})]
    second = [(k, {"set": {"seq": 200 + k}, "increment": {"hits": 1}}) for k in keys[::3]] + [(keys[5], None)]
    everyone = [*keys, 1000]

    with venice.DaVinciClient(cluster.controller_url, store, data_dir=tmp_path / "dv", start_timeout_s=120) as dv, \
            venice.Client(cluster.router_url) as router, venice.Client(cluster.router_url, direct=True) as direct:

        def agree(expected: dict[int, Any], what: str) -> None:
            want = [expected.get(k) for k in everyone]
            wait_for(lambda: dv.batch_get(everyone) == want, 90, f"Da Vinci: {what}")
            wait_for(lambda: router.batch_get(store, everyone) == want, 90, f"the router: {what}")
            wait_for(lambda: [direct.get(store, k) for k in everyone] == want, 90, f"the direct client: {what}")

        write(cluster.pubsub_url, store, P, first)
        agree(model(base1, first), "v1 with the first writes")
        push_base(cluster, store, base2, tmp_path / "2.jsonl")
        wait_for(lambda: dv.version == 2, 90, "Da Vinci to swap to v2")
        agree(model(base2, first), "v2, which replayed the first writes (rewind)")
        write(cluster.pubsub_url, store, P, second)
        agree(model(base2, first + second), "v2 with the second writes")
        assert httpx.post(f"{cluster.controller_url}/stores/{store}/rollback", timeout=10).status_code == 200
        wait_for(lambda: dv.version == 1, 90, "Da Vinci to follow the rollback")
        # v1 stopped applying writes when it became a backup; current again, it catches up.
        agree(model(base1, first + second), "v1 again, caught up")
