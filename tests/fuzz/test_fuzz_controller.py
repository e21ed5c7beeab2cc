"""Schemathesis on the controller's own OpenAPI document (FastAPI), against a real
controller process with a token file and a cluster secret: generated and mutated requests
to every operation, with an admin token (so they reach the handlers) and without one. No
answer is a 5xx, every answer conforms to the document (status code, content type, body
schema), and the process stays up. The example budget is fixed (derandomized)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis

from tests.fuzz.engine import fuzz
from venice.auth import Role, TokensFile, new_secret
from venice.cluster import ManagedProcess, free_port


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz-controller")
    tokens = TokensFile(tmp / "tokens.json")
    admin, _ = tokens.create(Role.ADMIN)
    secret = new_secret()
    port = free_port()
    process = ManagedProcess(
        "controller",
        ["controller", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp / "data"),
         "--pubsub-url", f"embedded://{tmp / 'log'}", "--tokens-file", str(tokens.path)],
        tmp / "controller.log",
        f"http://127.0.0.1:{port}",
        env={"VENICE_CLUSTER_SECRET": secret},
    )
    process.start()
    try:
        process.wait_healthy()
        # Something for the generated requests to find.
        httpx.post(f"{process.url}/stores", json={"name": "s", "key_schema": "long", "value_schema": "string"},
                   headers={"authorization": f"Bearer {admin}"}, timeout=10).raise_for_status()
        yield process, admin, secret
    finally:
        process.stop()


CLUSTER_ONLY = ("POST /servers/{server_id}/heartbeat", "GET /auth/tokens", "GET /routing")


@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
def test_controller_api(controller: tuple[ManagedProcess, str, str], negative: bool) -> None:
    process, admin, secret = controller
    api = schemathesis.openapi.from_url(f"{process.url}/openapi.json")
    ran = fuzz(api, process.url, lambda label: {"authorization": f"Bearer {secret if label in CLUSTER_ONLY else admin}"}, negative=negative)
    assert "POST /servers/{server_id}/heartbeat" in ran and "PATCH /stores/{name}" in ran and len(ran) >= (12 if negative else 20)
    assert process.alive()
