"""Issue 11's attacks on a whole cluster with a cluster secret and a token file (real
controller, storage servers and router processes on loopback, embedded log).

Each attack is first shown to work on an open cluster (what every cluster was before the
issue: no secret, no tokens), then refused on a secured one with 401/403 in the one error
shape, and nothing changes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import VALUE_SCHEMA, make_records, venice_cli, write_jsonl
from tests.e2e.scrape import scrape
from tests.e2e.scrape import value as sample
from venice.auth import Role, TokensFile, new_secret
from venice.cluster import LocalCluster, wait_for
from venice.controller_client import ControllerClient
from venice.errors import UnauthorizedError
from venice.partitioner import partition_for
from venice.protocol import replica_get_path
from venice.push.job import run_push
from venice.schema import AvroCodec

STORE = "secured"


def _bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def _store_body(name: str) -> dict[str, Any]:
    return {"name": name, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 2, "replication_factor": 1}


def _heartbeat_body(url: str) -> dict[str, Any]:
    return {"url": url, "replicas": []}


def _setup(cluster: LocalCluster, admin: str | None, tmp_path: Path) -> list[dict[str, Any]]:
    """A store with two pushed versions (so rollback and swap have something to do)."""
    records = make_records(20)
    assert httpx.post(f"{cluster.controller_url}/stores", json=_store_body(STORE), headers=_bearer(admin), timeout=10).status_code == 201
    data = write_jsonl(tmp_path / "data.jsonl", records)
    run_push(cluster.controller_url, STORE, data, key_field="id", progress=False, timeout_s=120, token=admin)
    run_push(cluster.controller_url, STORE, data, key_field="id", progress=False, timeout_s=120, token=admin)
    return records


def _attacks(cluster: LocalCluster) -> list[tuple[str, str, dict[str, Any] | None]]:
    """What anyone who could reach the controller could do (issue 11)."""
    return [
        ("POST", "/stores", _store_body("planted")),
        ("PATCH", f"/stores/{STORE}", {"keep_versions": 5}),
        ("POST", f"/stores/{STORE}/rollback", None),
        ("POST", f"/stores/{STORE}/versions/1/swap", None),
        ("POST", f"/stores/{STORE}/versions", {"defer_swap": False}),  # the start of push --empty
        ("DELETE", f"/stores/{STORE}", None),
    ]


def _fingerprint(cluster: LocalCluster, admin: str | None) -> tuple[Any, ...]:
    with httpx.Client(base_url=cluster.controller_url, headers=_bearer(admin), timeout=10) as http:
        stores = sorted(s["name"] for s in http.get("/stores").json()["stores"])
        store = http.get(f"/stores/{STORE}").json()
        servers = sorted((s["server_id"], s["url"]) for s in http.get("/cluster").json()["servers"])
    return stores, store["current_version"], [v["version"] for v in store["versions"]], store["keep_versions"], servers


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, str], Path]]:
    tmp = tmp_path_factory.mktemp("secured")
    tokens_file = tmp / "tokens.json"
    file = TokensFile(tokens_file)
    tokens = {
        "secret": new_secret(),
        "admin": file.create(Role.ADMIN)[0],
        "writer": file.create(Role.WRITER, STORE)[0],
        "other_writer": file.create(Role.WRITER, "another")[0],
        "reader": file.create(Role.READER, STORE)[0],
        "monitor": file.create(Role.MONITOR, note="prometheus")[0],
    }
    with LocalCluster(tmp / "cluster", servers=2, cluster_secret=tokens["secret"], tokens_file=tokens_file) as cluster:
        _setup(cluster, tokens["admin"], tmp)
        yield cluster, tokens, tokens_file


def test_on_an_open_cluster_anyone_can_do_anything(tmp_path: Path) -> None:
    """Before issue 11 (and still on a cluster started without secret or tokens, which
    warns at start): every attack below succeeds without any credential."""
    with LocalCluster(tmp_path / "cluster", servers=1) as cluster:
        _setup(cluster, None, tmp_path)
        assert "OPEN: NO CLUSTER SECRET" in (cluster.logs / "controller.log").read_text()
        assert "OPEN: NO TOKEN FILE" in (cluster.logs / "controller.log").read_text()
        assert "OPEN: NO CLUSTER SECRET" in (cluster.logs / "server-0.log").read_text()
        with httpx.Client(base_url=cluster.controller_url, timeout=10) as http:
            assert http.post("/servers/fake/heartbeat", json=_heartbeat_body("http://127.0.0.1:9")).status_code == 200
            assert http.get("/routing").status_code == 200
            for method, path, body in _attacks(cluster):
                answer = http.request(method, path, json=body)
                assert answer.status_code < 300, (method, path, answer.text)
        assert httpx.get(f"{cluster.servers[0].url}/admin/replicas", timeout=5).status_code == 200
        for url in _monitored(cluster):  # metrics and the overview: open too
            assert httpx.get(url, timeout=5).status_code == 200, url


@pytest.mark.parametrize("who", [None, "reader", "writer", "other_writer", "secret", "bogus"])
def test_admin_attacks_are_refused_and_change_nothing(secured: tuple[LocalCluster, dict[str, str], Path], who: str | None) -> None:
    cluster, tokens, _ = secured
    before = _fingerprint(cluster, tokens["admin"])
    credential = {"bogus": "vt_" + "A" * 43}.get(who or "", tokens.get(who or ""))
    for method, path, body in _attacks(cluster):
        if who == "writer" and path == f"/stores/{STORE}/versions":
            continue  # a writer of the store may open a version: that is pushing
        answer = httpx.request(method, cluster.controller_url + path, json=body, headers=_bearer(credential), timeout=10)
        expected = 401 if who in (None, "bogus") else 403
        assert answer.status_code == expected, (who, method, path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == ("UNAUTHORIZED" if expected == 401 else "FORBIDDEN")
        assert set(error) <= {"code", "message", "details"}
    assert _fingerprint(cluster, tokens["admin"]) == before


def test_fake_servers_cannot_register_or_take_over_an_id(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, _ = secured
    before = _fingerprint(cluster, tokens["admin"])
    real = cluster.servers[0]
    for credential in (None, tokens["admin"], tokens["writer"], "wrong-secret-0123456789", tokens["secret"] + "x"):
        for server_id, url in (("fake", "http://127.0.0.1:9"), ("server-0", "http://127.0.0.1:9")):
            answer = httpx.post(
                f"{cluster.controller_url}/servers/{server_id}/heartbeat", json=_heartbeat_body(url), headers=_bearer(credential), timeout=10
            )
            assert answer.status_code in (401, 403), answer.text
    # Even with the secret, a registered id stays bound to its URL: 409, nothing moves.
    answer = httpx.post(
        f"{cluster.controller_url}/servers/server-0/heartbeat", json=_heartbeat_body("http://127.0.0.1:9"),
        headers=_bearer(tokens["secret"]), timeout=10,
    )
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "CONFLICT", answer.text
    assert _fingerprint(cluster, tokens["admin"]) == before
    assert ("server-0", real.url) in before[4]


def test_cluster_only_paths_need_the_secret(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, _ = secured
    server = cluster.servers[0].url
    assert httpx.get(f"{server}/admin/replicas", timeout=5).status_code == 401
    assert httpx.get(f"{server}/admin/replicas", headers=_bearer(tokens["writer"]), timeout=5).status_code == 403
    assert httpx.get(f"{server}/admin/replicas", headers=_bearer(tokens["admin"]), timeout=5).status_code == 200
    assert httpx.get(f"{server}/admin/replicas", headers=_bearer(tokens["secret"]), timeout=5).status_code == 200
    assert httpx.get(f"{cluster.controller_url}/routing", timeout=5).status_code == 401
    assert httpx.get(f"{cluster.controller_url}/routing", headers=_bearer(tokens["reader"]), timeout=5).status_code == 200
    assert httpx.get(f"{cluster.controller_url}/auth/tokens", headers=_bearer(tokens["admin"]), timeout=5).status_code == 403
    table = httpx.get(f"{cluster.controller_url}/auth/tokens", headers=_bearer(tokens["secret"]), timeout=5).json()
    assert sorted(t["role"] for t in table["tokens"]) == ["admin", "monitor", "reader", "writer", "writer"]
    assert all(set(t) == {"sha256", "role", "store"} for t in table["tokens"])
    assert not any(tok in str(table) for tok in tokens.values())
    # Reads of a public store need nothing: the router serves it to anyone.
    assert httpx.get(f"{cluster.router_url}/storage/{STORE}/{7919}", timeout=5).status_code == 200


def test_the_cli_takes_a_token(secured: tuple[LocalCluster, dict[str, str], Path], tmp_path: Path) -> None:
    cluster, tokens, tokens_file = secured
    env_before = os.environ.pop("VENICE_TOKEN", None)
    try:
        refused = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--keep-versions", "3")
        assert refused.returncode == 1 and "needs a bearer token" in refused.stderr
        done = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--keep-versions", "3", "--token", tokens["admin"])
        assert done.returncode == 0, done.stderr
        hostile = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--read-quota", "0", "--token", tokens["admin"])
        assert hostile.returncode == 2 and "0 is not in the range 1..10000000" in hostile.stderr
        # A token made now works within a second or so (the controller reads the file again).
        fresh = venice_cli("token", "create", "--tokens-file", str(tokens_file), "--role", "admin").stdout.strip()
        wait_for(
            lambda: venice_cli("store", "describe", STORE, "--controller", cluster.controller_url, "--token", fresh).returncode == 0,
            30, "a new token to be accepted",
        )
    finally:
        if env_before is not None:
            os.environ["VENICE_TOKEN"] = env_before


def test_an_admin_removes_a_server_then_it_registers_again(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, _ = secured
    refused = venice_cli("cluster", "remove-server", "server-1", "--yes", "--controller", cluster.controller_url, "--token", tokens["writer"])
    assert refused.returncode == 1 and "may not make admin requests" in refused.stderr
    gone = venice_cli("cluster", "remove-server", "server-1", "--yes", "--controller", cluster.controller_url, "--token", tokens["admin"])
    assert gone.returncode == 0 and "removed server server-1" in gone.stdout, gone.stderr
    missing = venice_cli("cluster", "remove-server", "nobody", "--yes", "--controller", cluster.controller_url, "--token", tokens["admin"])
    assert missing.returncode == 1 and "no server 'nobody'" in missing.stderr
    # The real server-1 is still running and holds the secret: its next heartbeat registers it again.
    cluster.wait_servers_alive(2, 30)
    listed = venice_cli("cluster", "servers", "--controller", cluster.controller_url)
    assert f"server-1  {cluster.servers[1].url}  alive" in listed.stdout


def test_read_quota_at_the_router(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, _ = secured
    router = cluster.router_url
    key = 7919  # make_records' first id
    with httpx.Client(timeout=10) as http:
        update = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--read-quota", "1", "--token", tokens["admin"])
        assert update.returncode == 0 and "read quota 1/s per router" in update.stdout, update.stderr
        # A batch larger than a second of quota can never be paid for: 400, not a 429 to retry for ever.
        wait_for(lambda: http.post(f"{router}/storage/{STORE}", json={"keys": [key, key * 2]}).status_code == 400, 30, "the quota to reach the router")
        # The router's metrics count what the quota refused, by store: requests and keys.
        # Nothing else reads this store at this router, so each scrape's difference is exactly ours.
        before = scrape(router, tokens["monitor"])
        too_big = http.post(f"{router}/storage/{STORE}", json={"keys": [key, key * 2, key * 3]})
        assert too_big.status_code == 400 and "split it" in too_big.json()["error"]["message"]
        after = scrape(router, tokens["monitor"])
        assert sample(after, "venice_router_quota_refused_total", store=STORE) - sample(before, "venice_router_quota_refused_total", store=STORE) == 1
        assert sample(after, "venice_router_quota_refused_keys_total", store=STORE) - sample(before, "venice_router_quota_refused_keys_total", store=STORE) == 3
        answers = [http.get(f"{router}/storage/{STORE}/{key}") for _ in range(20)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and len(refused) + sum(a.status_code == 200 for a in answers) == 20
        later = scrape(router, tokens["monitor"])
        for name in ("venice_router_quota_refused_total", "venice_router_quota_refused_keys_total"):  # single gets: 1 key each
            assert sample(later, name, store=STORE) - sample(after, name, store=STORE) == len(refused)
        assert sample(later, "venice_router_requests_total", store=STORE, endpoint="single", status="429") >= len(refused)
        for answer in refused:
            assert answer.json()["error"]["code"] == "QUOTA_EXCEEDED"
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["details"]["retry_after_s"] == int(answer.headers["retry-after"])
        cleared = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--no-read-quota", "--token", tokens["admin"])
        assert cleared.returncode == 0 and "read quota none" in cleared.stdout
        wait_for(lambda: all(http.get(f"{router}/storage/{STORE}/{key}").status_code == 200 for _ in range(5)), 30, "the quota to go")


def test_private_store_reads_need_a_reader_token_at_the_router(
    secured: tuple[LocalCluster, dict[str, str], Path], tmp_path: Path
) -> None:
    cluster, tokens, tokens_file = secured
    router, key = cluster.router_url, 7919
    made = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--private", "--token", tokens["admin"])
    assert made.returncode == 0 and "private;" in made.stdout, made.stderr
    try:
        with httpx.Client(base_url=router, timeout=10) as http:
            wait_for(lambda: http.get(f"/storage/{STORE}/{key}").status_code == 401, 30, "the store to be private at the router")
            refused = http.get(f"/storage/{STORE}/{key}")
            assert refused.json()["error"]["code"] == "UNAUTHORIZED" and refused.headers["www-authenticate"].startswith("Bearer")
            assert http.post(f"/storage/{STORE}", json={"keys": [key]}).status_code == 401
            assert http.post(f"/compute/{STORE}", json={"keys": [key], "project": ["name"]}).status_code == 401
            assert http.get(f"/changes/{STORE}").status_code == 401
            assert http.get("/routing").status_code == 401  # the table lists private stores' schemas
            assert http.get(f"/storage/{STORE}/{key}", headers=_bearer("vt_" + "B" * 43)).status_code == 401
            assert http.get(f"/storage/{STORE}/{key}", headers=_bearer(tokens["other_writer"])).status_code == 403
            for who in ("reader", "writer", "admin", "secret"):
                answer = http.get(f"/storage/{STORE}/{key}", headers=_bearer(tokens[who]))
                assert answer.status_code == 200 and answer.json()["name"] == "member-1", (who, answer.text)
                batch = http.post(f"/storage/{STORE}", json={"keys": [key, 1]}, headers=_bearer(tokens[who]))
                assert [r["found"] for r in batch.json()["results"]] == [True, False]
            # The SDK sends its token; the controller hides the store from anonymous listings.
            with venice.Client(router, token=tokens["reader"]) as client:
                assert client.get(STORE, key)["name"] == "member-1"
            with venice.Client(router, token="") as anonymous, pytest.raises(UnauthorizedError):
                anonymous.get(STORE, key)
            # Storage servers check too: a read straight from a server needs the token (or the secret).
            key_bytes = AvroCodec("long", kind="key").encode(key)
            path = replica_get_path(STORE, 1 + 1, partition_for(key_bytes, 2), key_bytes)  # v2: _setup pushed twice
            holders = [s.url for s in cluster.servers]
            # Servers learn privacy from their next heartbeat's assignment (every 0.5 s).
            wait_for(lambda: all(httpx.get(url + path, timeout=10).status_code != 200 for url in holders), 30, "servers to check")
            answers = [httpx.get(url + path, timeout=10) for url in holders]
            assert {a.status_code for a in answers} <= {401, 503} and 401 in {a.status_code for a in answers}
            with_token = [httpx.get(url + path, headers=_bearer(tokens["reader"]), timeout=10) for url in holders]
            assert 200 in {a.status_code for a in with_token}
            assert all(a.status_code in (200, 503) for a in with_token)  # 503: a server not holding the partition
            with venice.Client(router, token=tokens["reader"], direct=True) as direct:
                assert direct.get(STORE, key)["name"] == "member-1"
            tail = ["tail", "--controller", cluster.controller_url, "--store", STORE, "--idle-timeout", "1"]
            refused_tail = venice_cli(*tail, timeout_s=60)
            assert refused_tail.returncode == 1 and "bearer token" in refused_tail.stderr, refused_tail.stderr
            tailed = venice_cli(*tail, "--token", tokens["reader"], timeout_s=60)
            assert tailed.returncode == 0 and f"tailing {STORE}" in tailed.stderr, tailed.stderr
            listed = httpx.get(f"{cluster.controller_url}/stores", timeout=10).json()["stores"]
            assert STORE not in [s["name"] for s in listed]
            assert httpx.get(f"{cluster.controller_url}/stores/{STORE}", timeout=10).status_code == 401
            # A revoked token stops working within a refresh or two.
            fresh = TokensFile(tokens_file)
            new_reader, entry = fresh.create(Role.READER, STORE)
            wait_for(lambda: http.get(f"/storage/{STORE}/{key}", headers=_bearer(new_reader)).status_code == 200, 30, "a new token")
            fresh.revoke(entry.token_id)
            wait_for(lambda: http.get(f"/storage/{STORE}/{key}", headers=_bearer(new_reader)).status_code == 401, 30, "a revoked token")
    finally:
        public = venice_cli("store", "update", STORE, "--controller", cluster.controller_url, "--public", "--token", tokens["admin"])
        assert public.returncode == 0
    wait_for(lambda: httpx.get(f"{router}/storage/{STORE}/{key}", timeout=10).status_code == 200, 30, "the store to be public again")


def test_hostile_authorization_headers(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    """Oversized, malformed, non-ASCII and repeated credentials: refused as 401 (or by the
    HTTP layer's own header limits as a 4xx), never a 5xx, and nothing changes."""
    cluster, tokens, _ = secured
    before = _fingerprint(cluster, tokens["admin"])
    hostile = [
        b"Bearer " + b"A" * 8000,
        b"Bearer " + b"A" * 20_000,  # beyond the 16 KiB request head: the HTTP layer's 431
        b"Bearer " + tokens["admin"].encode() + b" extra",
        b"Basic " + tokens["admin"].encode(),
        b"bearer",
        b"Bearer \xff\xfe\xfd",
        b"Bearer " + tokens["admin"][:-1].encode(),
        b"Bearer " + tokens["secret"].upper().encode(),
    ]
    for value in hostile:
        for url, method, path in (
            (cluster.controller_url, "DELETE", f"/stores/{STORE}"),
            (cluster.controller_url, "POST", "/servers/fake/heartbeat"),
            (cluster.servers[0].url, "GET", "/admin/replicas"),
            (cluster.router_url, "GET", "/routing"),
            (cluster.controller_url, "GET", "/metrics"),
            (cluster.controller_url, "GET", "/overview"),
            (cluster.servers[0].url, "GET", "/metrics"),
            (cluster.router_url, "GET", "/metrics"),
        ):
            answer = httpx.request(method, url + path, headers=[(b"authorization", value)], json=_heartbeat_body("http://127.0.0.1:9"), timeout=10)
            assert 400 <= answer.status_code < 500, (value[:40], url, path, answer.status_code)
    # Two Authorization headers: the first decides; a valid one after a bogus one does not get in.
    answer = httpx.delete(
        f"{cluster.controller_url}/stores/{STORE}",
        headers=[(b"authorization", b"Bearer vt_bogus"), (b"authorization", f"Bearer {tokens['admin']}".encode())], timeout=10,
    )
    assert answer.status_code == 401
    assert _fingerprint(cluster, tokens["admin"]) == before


def _monitored(cluster: LocalCluster) -> list[str]:
    """Every URL of the cluster that shows metrics or the overview."""
    return [
        f"{cluster.controller_url}/metrics", f"{cluster.controller_url}/overview",
        *(f"{s.url}/metrics" for s in cluster.servers), f"{cluster.router_url}/metrics",
    ]


def test_metrics_and_the_overview_need_a_monitor_or_admin_token(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    """A closed cluster shows its metrics and overview to monitor and admin tokens and the
    cluster secret, on every part; nobody else (401 without or with an unknown credential,
    403 for other roles). The dashboard's static files hold no data and stay public."""
    cluster, tokens, _ = secured
    before = _fingerprint(cluster, tokens["admin"])
    with httpx.Client(timeout=10) as http:
        for url in _monitored(cluster):
            for who in ("monitor", "admin", "secret"):
                # Servers and routers decide with the token table they fetch from the controller.
                wait_for(lambda: http.get(url, headers=_bearer(tokens[who])).status_code == 200, 30, f"{who} to read {url}")  # noqa: B023
                answer = http.get(url, headers=_bearer(tokens[who]))
                if url.endswith("/overview"):
                    assert [s["server_id"] for s in answer.json()["servers"]] == ["server-0", "server-1"]
                else:
                    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
                    assert "# TYPE venice_" in answer.text
            for who, status, code in ((None, 401, "UNAUTHORIZED"), ("bogus", 401, "UNAUTHORIZED"), ("reader", 403, "FORBIDDEN"),
                                      ("writer", 403, "FORBIDDEN"), ("other_writer", 403, "FORBIDDEN")):
                credential = "vt_" + "B" * 43 if who == "bogus" else tokens[who] if who else None
                answer = http.get(url, headers=_bearer(credential))
                assert answer.status_code == status, (url, who, answer.text)
                assert answer.json()["error"]["code"] == code and "venice_" not in answer.text
                if status == 401:
                    assert answer.headers["www-authenticate"].startswith("Bearer"), url
        for path in ("/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
            page = http.get(cluster.controller_url + path)
            assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        # A monitor token may do nothing else: not admin, not writes, not the routing table.
        monitor = _bearer(tokens["monitor"])
        for method, path, body in _attacks(cluster):
            answer = http.request(method, cluster.controller_url + path, json=body, headers=monitor)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "FORBIDDEN", (method, path, answer.text)
        assert http.get(f"{cluster.controller_url}/routing", headers=monitor).status_code == 403
        assert http.get(f"{cluster.controller_url}/auth/tokens", headers=monitor).status_code == 403
        assert http.get(f"{cluster.router_url}/routing", headers=monitor).status_code == 403
        assert http.get(f"{cluster.servers[0].url}/admin/replicas", headers=monitor).status_code == 403
        assert http.put(f"{cluster.router_url}/storage/{STORE}/1", json={"name": "x"}, headers=monitor).status_code == 403
        assert http.post(f"{cluster.controller_url}/servers/fake/heartbeat", json=_heartbeat_body("http://127.0.0.1:9"), headers=monitor).status_code == 403
    assert _fingerprint(cluster, tokens["admin"]) == before


def test_a_revoked_monitor_token_stops_reading_metrics(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, _, tokens_file = secured
    file = TokensFile(tokens_file)
    fresh, entry = file.create(Role.MONITOR)
    urls = _monitored(cluster)
    with httpx.Client(timeout=10, headers=_bearer(fresh)) as http:
        wait_for(lambda: all(http.get(url).status_code == 200 for url in urls), 30, "a new monitor token everywhere")
        file.revoke(entry.token_id)
        wait_for(lambda: all(http.get(url).status_code == 401 for url in urls), 30, "the revoked token to be refused everywhere")
        assert all(http.get(url).json()["error"]["code"] == "UNAUTHORIZED" for url in urls)


def test_venice_status_takes_a_token(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, _ = secured
    env_before = os.environ.pop("VENICE_TOKEN", None)
    try:
        refused = venice_cli("status", "--controller", cluster.controller_url)
        assert refused.returncode == 1 and "needs a bearer token" in refused.stderr, refused.stderr
        forbidden = venice_cli("status", "--controller", cluster.controller_url, "--token", tokens["reader"])
        assert forbidden.returncode == 1 and "may not read metrics" in forbidden.stderr, forbidden.stderr
        shown = venice_cli("status", "--controller", cluster.controller_url, "--token", tokens["monitor"])
        assert shown.returncode == 0, shown.stderr
        assert "server-0" in shown.stdout and "server-1" in shown.stdout and STORE in shown.stdout
        # The controller scrapes its router with the cluster secret: the router shows as up.
        wait_for(
            lambda: venice_cli("status", "--json", "--controller", cluster.controller_url, "--token", tokens["monitor"]).stdout.count('"up": true') == 1,
            60, "the controller to scrape its closed router",
        )
        os.environ["VENICE_TOKEN"] = tokens["monitor"]
        assert venice_cli("status", "--controller", cluster.controller_url).returncode == 0
    finally:
        os.environ.pop("VENICE_TOKEN", None)
        if env_before is not None:
            os.environ["VENICE_TOKEN"] = env_before


def test_router_writes_need_a_writer_token_of_the_store(secured: tuple[LocalCluster, dict[str, str], Path]) -> None:
    cluster, tokens, tokens_file = secured
    store = "nearline"
    with ControllerClient(cluster.controller_url, token=tokens["admin"]) as controller:
        controller.create_store({
            "name": store, "key_schema": "long", "value_schema": {"type": "record", "name": "N", "fields": [{"name": "name", "type": "string", "default": ""}]},
            "partitions": 2, "hybrid": {"rewind_seconds": 60, "offset_lag": 1000},
        })
    writer, _ = TokensFile(tokens_file).create(Role.WRITER, store)
    url = f"{cluster.router_url}/storage/{store}/1"
    with httpx.Client(timeout=30) as http:
        wait_for(lambda: http.put(url, content=b'{"name": "x"}', headers=_bearer(writer)).status_code == 202, 60, "a write with the writer token")
        for who, expected in ((None, 401), ("bogus", 401), ("reader", 403), ("writer", 403), ("other_writer", 403), ("secret", 403)):
            credential = {"bogus": "vt_" + "C" * 43}.get(who or "", tokens.get(who or ""))
            for method, body in (("PUT", b'{"name": "y"}'), ("DELETE", None), ("PATCH", b'{"name": "z"}')):
                answer = http.request(method, url, content=body, headers=_bearer(credential))
                assert answer.status_code == expected, (who, method, answer.text)
        assert http.delete(url, headers=_bearer(tokens["admin"])).status_code == 202
