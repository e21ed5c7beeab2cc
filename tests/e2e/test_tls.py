"""A whole cluster on TLS (issue 11): controller, storage servers and router serve HTTPS
with a certificate of a throwaway CA made here with the openssl command line; every part
verifies the others against that CA (heartbeats, routing, the router's reads of the
servers), a push and the SDK go over HTTPS, and a client that does not trust the CA, or
speaks plain HTTP, gets nothing."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import venice
from tests.e2e.conftest import VALUE_SCHEMA, make_records, write_jsonl
from venice.auth import Role, TokensFile, new_secret
from venice.cluster import LocalCluster, wait_for
from venice.controller_client import ControllerClient
from venice.errors import TransportError, VeniceError
from venice.push.job import run_push

STORE = "tls-members"


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1 and localhost, its key)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=venice test CA", "-keyout", str(ca_key), "-out", str(ca_cert))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca_cert, cert, key


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path, str, list[dict[str, object]]]]:
    tmp = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca(tmp)
    tokens = TokensFile(tmp / "tokens.json")
    admin, _ = tokens.create(Role.ADMIN)
    records = make_records(30)
    with LocalCluster(
        tmp / "cluster", servers=2, cluster_secret=new_secret(), tokens_file=tokens.path, tls=(cert, key), ca_file=ca
    ) as cluster:
        with ControllerClient(cluster.controller_url, token=admin, ca_file=ca) as controller:
            controller.create_store(
                {"name": STORE, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 2, "replication_factor": 2}
            )
        mp = pytest.MonkeyPatch()
        mp.setenv("VENICE_CA_FILE", str(ca))  # the push job's controller client verifies with it
        try:
            run_push(cluster.controller_url, STORE, write_jsonl(tmp / "d.jsonl", records), key_field="id",
                     progress=False, timeout_s=120, token=admin)
        finally:
            mp.undo()
        yield cluster, ca, admin, records


def test_every_part_speaks_https_and_reads_flow(tls_cluster: tuple[LocalCluster, Path, str, list[dict[str, object]]]) -> None:
    cluster, ca, admin, records = tls_cluster
    assert all(p.url.startswith("https://127.0.0.1:") for p in cluster.processes())
    with ControllerClient(cluster.controller_url, token=admin, ca_file=ca) as controller:
        servers = controller.cluster()["servers"]
        table = controller.routing()
    assert sorted(s["url"] for s in servers) == sorted(s.url for s in cluster.servers)  # registered as https://
    assert table is not None
    replica_urls = {u for urls in table.stores[STORE].versions[1].values() for u in urls}
    assert replica_urls == {s.url for s in cluster.servers}
    with venice.Client(cluster.router_url, ca_file=ca) as client:
        assert client._fast is not None  # the blocking keep-alive fast path, on TLS sockets
        for record in records[:10]:
            value = client.get(STORE, record["id"])
            assert value is not None and value["name"] == record["name"] and value["visits"] == record["visits"]
        values = client.batch_get(STORE, [r["id"] for r in records])
        assert [v["name"] if v else None for v in values] == [r["name"] for r in records]
    # The blocking direct client's sockets speak no TLS: on an https cluster its reads go through the router.
    with venice.Client(cluster.router_url, ca_file=ca, direct=True, token=admin) as direct:
        assert direct.get(STORE, records[3]["id"])["name"] == records[3]["name"]
    # The controller scrapes its https:// router (verified with the cluster's CA, with the
    # cluster secret): the overview shows it up.
    with ControllerClient(cluster.controller_url, token=admin, ca_file=ca) as controller:
        wait_for(lambda: [r["up"] for r in controller.overview()["routers"]] == [True], 60, "the controller to scrape its router over TLS")


def test_a_client_that_does_not_trust_the_ca_gets_nothing(
    tls_cluster: tuple[LocalCluster, Path, str, list[dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _, admin, records = tls_cluster
    monkeypatch.delenv("VENICE_CA_FILE", raising=False)
    with venice.Client(cluster.router_url) as client, pytest.raises(TransportError) as info:
        client.get(STORE, records[0]["id"])
    assert "CERTIFICATE_VERIFY_FAILED" in repr(info.value.__cause__)
    with ControllerClient(cluster.controller_url, token=admin) as controller, pytest.raises(VeniceError):
        controller.list_stores()


def test_plain_http_to_a_tls_port_is_refused(tls_cluster: tuple[LocalCluster, Path, str, list[dict[str, object]]]) -> None:
    cluster, _, _, _ = tls_cluster
    for process in (cluster.router, cluster.servers[0], cluster.controller):
        with pytest.raises(httpx.HTTPError):
            httpx.get(process.url.replace("https://", "http://") + "/health", timeout=5)


def test_old_protocol_versions_are_refused(tls_cluster: tuple[LocalCluster, Path, str, list[dict[str, object]]]) -> None:
    cluster, ca, _, _ = tls_cluster
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(httpx.HTTPError):
        httpx.get(cluster.router_url + "/health", verify=context, timeout=5)
    assert httpx.get(cluster.router_url + "/health", verify=ssl.create_default_context(cafile=str(ca)), timeout=5).status_code == 200
