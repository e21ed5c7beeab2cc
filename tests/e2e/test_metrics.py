"""``GET /metrics`` on real processes after real traffic: the figures move as they must.

Each scrape is parsed with prometheus-client's own text parser (a second implementation
of the format), and each figure is checked against what the test did: records pushed,
reads made, a server killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import create_store, make_records, push, venice_cli, write_jsonl
from tests.e2e.scrape import Samples, scrape, total, value
from venice.cluster import LocalCluster, wait_for
from venice.partitioner import partition_for
from venice.protocol import encode_batch_request, encode_key_segment
from venice.schema import AvroCodec

STORE = "metered"
PARTITIONS = 2
RECORDS = 120
DEAD_AFTER_S = 2.0

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("metrics"), servers=2, dead_after_s=DEAD_AFTER_S)
    for process in [cluster.controller, *cluster.servers]:
        process.env["VENICE_LOG_FORMAT"] = "json"
    with cluster:
        yield cluster


@pytest.fixture(scope="module")
def pushed(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    records = make_records(RECORDS)
    create_store(cluster.controller_url, STORE, partitions=PARTITIONS, replication_factor=2)
    result = push(cluster.controller_url, STORE, write_jsonl(Path(tmp_path_factory.mktemp("in")) / "in.jsonl", records))
    assert result.returncode == 0, result.stderr
    return records


def _server_read(server_url: str, key: int) -> httpx.Response:
    key_bytes = AvroCodec("long").encode(key)
    partition = partition_for(key_bytes, PARTITIONS)
    return httpx.get(f"{server_url}/v1/{STORE}/1/{partition}/{encode_key_segment(key_bytes)}", timeout=5)


def test_controller_counts_the_push(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    samples = scrape(cluster.controller_url)
    assert value(samples, "venice_controller_pushes_started_total", store=STORE) == 1
    assert value(samples, "venice_controller_pushes_ended_total", store=STORE) == 1
    assert total(samples, "venice_controller_pushes_failed_total") == 0
    assert value(samples, "venice_controller_push_duration_seconds_count") == 1
    assert value(samples, "venice_controller_stores") == 1
    assert value(samples, "venice_controller_versions", status="ONLINE") == 1
    assert value(samples, "venice_controller_current_version", store=STORE) == 1
    # 2 partitions x R=2, all READY
    assert value(samples, "venice_controller_replicas", status="READY") == PARTITIONS * 2
    assert value(samples, "venice_controller_servers", state="live") == 2
    assert value(samples, "venice_controller_version_swaps_total", store=STORE) == 1


def test_server_figures_match_the_push(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    for server in cluster.servers:
        samples = scrape(server.url)
        # R=2 on 2 servers: each holds every partition, so every record.
        assert total(samples, "venice_server_lmdb_entries", store=STORE, version="1") == RECORDS
        assert total(samples, "venice_server_ingested_records_total", store=STORE, version="1") == RECORDS
        assert total(samples, "venice_server_ingested_bytes_total", store=STORE, version="1") > 0
        assert value(samples, "venice_server_lmdb_bytes", store=STORE, version="1") >= 4096
        assert value(samples, "venice_server_hosted_versions") == 1
        for partition in range(PARTITIONS):
            labels = {"store": STORE, "version": "1", "partition": str(partition)}
            assert value(samples, "venice_server_replica_status", **labels, status="READY") == 1
            assert value(samples, "venice_server_replica_status", **labels, status="STARTED") == 0
            assert value(samples, "venice_server_offset_lag", **labels, topic="version") == 0
            assert value(samples, "venice_server_poison_pills_total", **labels) == 0


def test_a_read_moves_the_server_counters_by_one(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    url = cluster.servers[0].url
    before = scrape(url)
    key = int(pushed[0]["id"])  # type: ignore[call-overload]
    assert _server_read(url, key).status_code == 200
    assert _server_read(url, -1).status_code == 404
    # A store nobody hosts: counted, but under _other, so clients cannot grow the label set.
    assert httpx.get(f"{url}/v1/no-such-store-{key}/1/0/AA", timeout=5).status_code == 503
    codec = AvroCodec("long")
    items = [(partition_for(codec.encode(k), PARTITIONS), codec.encode(k)) for k in (key, -1, key)]
    batch = httpx.post(f"{url}/v1/batch/{STORE}/1", content=encode_batch_request(items), timeout=5)
    assert batch.status_code == 200
    after = scrape(url)
    batch_labels = {"store": STORE, "version": "1", "kind": "batch", "result": "ok"}
    assert value(after, "venice_server_reads_total", **batch_labels) - value(before, "venice_server_reads_total", **batch_labels) == 1
    assert value(after, "venice_server_batch_keys_total", store=STORE, version="1") - value(before, "venice_server_batch_keys_total", store=STORE, version="1") == 3
    hit = {"store": STORE, "version": "1", "kind": "single"}
    assert value(after, "venice_server_reads_total", **hit, result="hit") - value(before, "venice_server_reads_total", **hit, result="hit") == 1
    assert value(after, "venice_server_reads_total", **hit, result="miss") - value(before, "venice_server_reads_total", **hit, result="miss") == 1
    other = {"store": "_other", "version": "_other", "kind": "single", "result": "REPLICA_NOT_READY"}
    assert value(after, "venice_server_reads_total", **other) - value(before, "venice_server_reads_total", **other) == 1
    assert not any("no-such-store" in dict(labels).get("store", "") for _, labels in after)


def test_a_read_moves_the_router_counters_by_one(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    url = cluster.router_url
    key = pushed[1]["id"]
    assert httpx.get(f"{url}/storage/{STORE}/{key}", timeout=5).status_code == 200  # the router knows the store now
    before = scrape(url)
    assert httpx.get(f"{url}/storage/{STORE}/{key}", timeout=5).status_code == 200
    assert httpx.get(f"{url}/storage/{STORE}/-1", timeout=5).status_code == 404
    assert httpx.get(f"{url}/storage/made-up-{key}/1", timeout=5).status_code == 404
    batch = httpx.post(f"{url}/storage/{STORE}", json={"keys": [key, pushed[2]["id"], -5]}, timeout=5)
    assert batch.status_code == 200 and [r["found"] for r in batch.json()["results"]] == [True, True, False]
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("venice_router_requests_total", store=STORE, endpoint="single", status="200") == 1
    assert moved("venice_router_requests_total", store=STORE, endpoint="single", status="404") == 1
    assert moved("venice_router_requests_total", store="_other", endpoint="single", status="404") == 1
    assert moved("venice_router_requests_total", store=STORE, endpoint="batch", status="200") == 1
    # Latency: the two reads of the known store and the one of the unknown store, each timed once.
    assert moved("venice_router_request_seconds_count", endpoint="single") == 3
    assert moved("venice_router_request_seconds_count", endpoint="batch") == 1
    assert moved("venice_router_request_seconds_bucket", endpoint="single", le="+Inf") == 3
    assert not any("made-up" in dict(labels).get("store", "") for _, labels in after)
    assert value(after, "venice_router_routing_generation") == value(scrape(cluster.controller_url), "venice_controller_routing_generation")
    assert 0 <= value(after, "venice_router_routing_age_seconds") < 60
    assert value(after, "venice_router_stores") == 1


def test_the_overview_shows_the_router_read_rate(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    def routers() -> list[dict[str, object]] | None:
        httpx.get(f"{cluster.router_url}/storage/{STORE}/{pushed[0]['id']}", timeout=5)
        view = httpx.get(f"{cluster.controller_url}/overview", timeout=5).json()["routers"]
        return view if view and view[0]["reads_per_s"] else None

    (router,) = wait_for(routers, 30, "the controller to see the router's reads")
    assert router["url"] == cluster.router_url and router["up"] is True
    assert router["reads_per_s"] > 0 and router["p99_ms"] is not None


def test_a_killed_server_shows_as_dead(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    before = scrape(cluster.controller_url)
    failovers_before = value(scrape(cluster.router_url), "venice_router_replica_failovers_total")
    assert value(before, "venice_controller_server_deaths_total") == 0
    cluster.servers[1].kill()
    # Before the controller notices, the router still sends some reads to server-1: each
    # fails to connect and moves on to server-0, so every read still answers.
    for record in pushed[:20]:
        assert httpx.get(f"{cluster.router_url}/storage/{STORE}/{record['id']}", timeout=5).status_code == 200
    assert value(scrape(cluster.router_url), "venice_router_replica_failovers_total") > failovers_before

    def dead() -> Samples | None:
        samples = scrape(cluster.controller_url)
        return samples if value(samples, "venice_controller_servers", state="dead") == 1 else None

    samples = wait_for(dead, 30, "the controller to count server-1 dead")
    assert value(samples, "venice_controller_servers", state="live") == 1
    assert value(samples, "venice_controller_server_deaths_total") == 1
    assert value(samples, "venice_controller_heartbeat_age_seconds", server="server-1") > DEAD_AFTER_S
    assert value(samples, "venice_controller_heartbeat_age_seconds", server="server-0") < DEAD_AFTER_S


def _json_lines(path: Path) -> list[dict[str, object]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines
    return [orjson.loads(line) for line in lines]  # every line is one JSON object


def test_json_logs_carry_the_events_with_their_fields(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    controller = _json_lines(cluster.controller.log_path)
    opened = [e for e in controller if e.get("event") == "push_opened"]
    assert [(e["store"], e["version"], e["part"], e["level"]) for e in opened] == [(STORE, 1, "controller", "INFO")]
    ended = [e for e in controller if e.get("event") == "push_ended"]
    assert [(e["store"], e["version"]) for e in ended] == [(STORE, 1)]
    server = _json_lines(cluster.servers[0].log_path)
    eops = sorted(int(e["partition"]) for e in server if e.get("event") == "end_of_push" and e.get("store") == STORE)  # type: ignore[call-overload]
    assert eops == list(range(PARTITIONS))
    assert all(str(e["part"]).startswith("server:") for e in server)


def test_status_shows_the_cluster_on_one_screen(cluster: LocalCluster, pushed: list[dict[str, object]]) -> None:
    cluster.servers[1].kill()  # done already when the tests run in order; the status shows it dead
    wait_for(lambda: _server_state(cluster, "server-1") == "dead", 30, "server-1 dead in /overview")
    result = venice_cli("status", "--controller", cluster.controller_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "\x1b[" not in result.stdout  # no color codes in a pipe
    assert "servers: 1 live, 0 draining, 1 dead" in lines[0]
    row = {line.split()[0]: line.split() for line in lines if line.startswith(("server-", STORE))}
    assert row["server-0"][2] == "live" and row["server-1"][2] == "dead"
    assert row[STORE][1:4] == ["v1", f"{PARTITIONS},", "2"]
    assert "v1* ONLINE" in " ".join(row[STORE])

    as_json = venice_cli("status", "--controller", cluster.controller_url, "--json")
    assert as_json.returncode == 0
    view = orjson.loads(as_json.stdout)
    (store,) = view["stores"]
    (version,) = store["versions"]
    assert (store["name"], store["current_version"], version["status"], version["records"]) == (STORE, 1, "ONLINE", RECORDS)
    # server-1 is dead and its replicas dropped: every partition is served, none has its R=2 copies.
    assert version["progress"] == {
        "partitions": PARTITIONS, "ready_partitions": PARTITIONS, "replicated_partitions": 0, "records_applied": RECORDS, "push_ended": True,
    }
    assert sorted(version["replicas"]) == [str(p) for p in range(PARTITIONS)]


def test_status_without_a_controller_is_a_message(tmp_path: Path) -> None:
    from venice.cluster import free_port

    result = venice_cli("status", "--controller", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def _server_state(cluster: LocalCluster, server_id: str) -> str:
    view = httpx.get(f"{cluster.controller_url}/overview", timeout=5).json()
    return next(s["state"] for s in view["servers"] if s["server_id"] == server_id)
