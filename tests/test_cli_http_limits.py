"""The HTTP limits reach the processes ``venice server`` and ``venice router`` run, by flag
and by ``VENICE_*`` variable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from router.app import DEFAULT_MAX_ANSWER_BYTES
from tests.rawhttp import connect, read_response, read_until_close
from tests.router.fakes import refused_url
from venice.cli import main
from venice.cluster import ManagedProcess, free_port


@contextmanager
def running(tmp_path: Path, part: str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    with refused_url() as nowhere:  # neither part needs its controller to serve /health
        extra = ["--data-dir", str(tmp_path / part)] if part == "server" else []
        process = ManagedProcess(part, [part, "--port", str(port), "--controller", nowhere, *extra, *args],
                                 tmp_path / f"{part}.log", f"http://127.0.0.1:{port}", env=env or {})
        process.start()
        try:
            process.wait_healthy(60)
            yield process.url
        finally:
            process.stop()


@pytest.mark.parametrize(("part", "by_env"), [("server", False), ("router", True)])
def test_the_connection_cap_is_set_by_flag_or_variable(tmp_path: Path, part: str, by_env: bool) -> None:
    if by_env:
        context = running(tmp_path, part, env={"VENICE_MAX_CONNECTIONS": "1"})
    else:
        context = running(tmp_path, part, "--max-connections", "1")
    with context as url:
        for _ in range(100):  # wait_healthy's own connection may still be closing
            with connect(url) as held:
                held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                head, _ = read_response(held)
                assert head.startswith(b"HTTP/1.1 200 ")
                with connect(url) as extra:
                    extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = read_until_close(extra)
            if answer.startswith(b"HTTP/1.1 503 "):
                break
        assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "TOO_MANY_CONNECTIONS"


def test_the_router_starts_with_an_answer_cap_and_takes_its_body_limit(tmp_path: Path) -> None:
    with running(tmp_path, "router", "--max-body-bytes", "1000", "--max-answer-bytes", "5000") as url:
        response = httpx.post(url + "/storage/any", content=b"[" * 2000, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"


@pytest.mark.parametrize("part", ["controller", "server", "router"])
def test_every_part_lists_the_limits_in_its_help(part: str) -> None:
    result = CliRunner().invoke(main, [part, "--help"])
    assert result.exit_code == 0
    for flag in ("--max-connections", "--head-timeout", "--keepalive-timeout", "--max-head-bytes",
                 "--max-url-bytes", "--max-body-bytes"):
        assert flag in result.output


def test_limits_out_of_range_are_refused_before_starting() -> None:
    result = CliRunner().invoke(main, ["router", "--max-connections", "0"])
    assert result.exit_code == 2
    assert "--max-connections" in result.output
    result = CliRunner().invoke(main, ["server", "--head-timeout", "0"])
    assert result.exit_code == 2


def test_the_cli_default_answer_cap_is_the_routers() -> None:
    result = CliRunner().invoke(main, ["router", "--help"])
    assert f"{DEFAULT_MAX_ANSWER_BYTES}" in result.output.replace("\n", " ").replace(" ", "")
