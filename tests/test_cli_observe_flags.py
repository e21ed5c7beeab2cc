"""Flags of the observability features refuse bad values with a message, before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from venice.cli import main


@pytest.mark.parametrize("url", ["not-a-url", "http://host/path", "ftp://host:1", "http://a b", "http://" + "x" * 3000])
def test_controller_router_must_be_a_base_url(url: str, tmp_path: object) -> None:
    result = CliRunner().invoke(main, ["controller", "--data-dir", str(tmp_path), "--router", url])
    assert result.exit_code == 2
    assert "--router" in result.output and "is not a base URL" in result.output


@pytest.mark.parametrize("part", ["controller", "server", "router"])
def test_log_format_is_text_or_json(part: str) -> None:
    result = CliRunner().invoke(main, [part, "--log-format", "yaml"])
    assert result.exit_code == 2
    assert "'yaml' is not one of 'text', 'json'" in result.output
