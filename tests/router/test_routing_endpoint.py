"""``GET /routing`` on the router: its copy of the controller's table, with the same
generations, 304s and long polls, so direct clients can follow the cluster through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from router.main import RouterConfig, build_server
from tests.router.fakes import FakeController, SampleCluster, refused_url, sample_cluster, serve_in_thread, store_entry
from venice.protocol import RoutingTable


@pytest.fixture(scope="module")
def cluster() -> Iterator[SampleCluster]:
    with sample_cluster() as running:
        yield running


@pytest.fixture
def http(cluster: SampleCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.router_url, timeout=10) as client:
        yield client


def controller_table(cluster: SampleCluster) -> RoutingTable:
    return RoutingTable.from_json(httpx.get(f"{cluster.controller_url}/routing", timeout=5).json())


def wait_router_at(http: httpx.Client, generation: int) -> None:
    deadline = time.monotonic() + 10
    while http.get("/routing").json()["generation"] != generation:
        assert time.monotonic() < deadline, "the router never loaded the controller's table"
        time.sleep(0.02)


def test_the_table_is_the_controllers(cluster: SampleCluster, http: httpx.Client) -> None:
    expected = controller_table(cluster)
    wait_router_at(http, expected.generation)
    answer = http.get("/routing")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert RoutingTable.from_json(answer.json()) == expected


def test_unchanged_is_304_and_a_change_wakes_a_long_poll(cluster: SampleCluster, http: httpx.Client) -> None:
    generation = controller_table(cluster).generation
    wait_router_at(http, generation)
    unchanged = http.get("/routing", params={"generation": generation})
    assert unchanged.status_code == 304 and unchanged.content == b""
    waited = http.get("/routing", params={"generation": generation, "wait_s": "0.2"})
    assert waited.status_code == 304
    assert http.get("/routing", params={"generation": generation - 1}).json()["generation"] == generation

    answers: list[httpx.Response] = []
    poll = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{cluster.router_url}/routing", params={"generation": generation, "wait_s": 20}, timeout=30))
    )
    poll.start()
    time.sleep(0.3)  # the long poll is waiting in the router
    cluster.controller.set_store("later", store_entry("string", {1: "string"}, 1, None, {}))
    poll.join(25)
    assert len(answers) == 1 and answers[0].status_code == 200
    table = RoutingTable.from_json(answers[0].json())
    assert table.generation == generation + 1
    assert "later" in table.stores


@pytest.mark.parametrize(
    "query",
    ["generation=abc", "generation=-1", "generation=1.5", "generation=%EF%BC%91", "generation=" + "9" * 40,
     "wait_s=x", "wait_s=nan", "wait_s=inf", "wait_s=-1", "wait_s=1e999"],
)
def test_hostile_parameters_are_400(http: httpx.Client, query: str) -> None:
    answer = http.get(f"/routing?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "BAD_REQUEST"


def test_a_huge_wait_is_capped_and_other_methods_refused(cluster: SampleCluster, http: httpx.Client) -> None:
    generation = controller_table(cluster).generation
    wait_router_at(http, generation)
    assert http.get("/routing", params={"generation": generation + 1, "wait_s": "1e9"}).status_code == 200
    for method in ("POST", "PUT", "DELETE"):
        assert http.request(method, "/routing").status_code == 405


def test_no_table_yet_is_503() -> None:
    with refused_url() as controller_url:
        config = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5)
        with serve_in_thread(build_server(config)) as router_url:
            answer = httpx.get(f"{router_url}/routing", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "UNAVAILABLE"


def test_many_long_polls_end_together_on_a_change() -> None:
    controller = FakeController()
    controller.set_store("s", store_entry("string", {1: "string"}, 1, None, {}))
    with serve_in_thread(controller) as controller_url:
        config = RouterConfig(port=0, controller_url=controller_url, graceful_shutdown_s=0.5)
        with serve_in_thread(build_server(config)) as router_url:
            generation = orjson.loads(httpx.get(f"{router_url}/routing", timeout=5).content)["generation"]
            answers: list[int] = []
            polls = [
                threading.Thread(target=lambda: answers.append(
                    httpx.get(f"{router_url}/routing", params={"generation": generation, "wait_s": 20}, timeout=30).status_code))
                for _ in range(40)
            ]
            for poll in polls:
                poll.start()
            time.sleep(0.5)
            controller.set_store("t", store_entry("string", {1: "string"}, 1, None, {}))
            for poll in polls:
                poll.join(25)
    assert answers == [200] * 40
