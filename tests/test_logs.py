"""venice.logs: one line per event, JSON for machines, text for people; hostile field values stay on one line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from venice.cli.logopts import log_format_option
from venice.logs import configure


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_have_the_fields(restore_logging: None) -> None:
    out = io.StringIO()
    configure("server:7001", "json", stream=out)
    logging.getLogger("venice.test").info(
        "end-of-push of %s", "members_v3", extra={"event": "end_of_push", "store": "members", "version": 3, "partition": 1}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("venice.test").exception("failed", extra={"store": "members", "path": object()})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "end-of-push of members_v3"
    assert (first["part"], first["level"], first["logger"]) == ("server:7001", "INFO", "venice.test")
    assert (first["event"], first["store"], first["version"], first["partition"]) == ("end_of_push", "members", 3, 1)
    assert first["ts"].endswith("Z") and first["ts"][4] == "-"
    assert "ValueError: boom" in second["exception"]
    assert second["path"].startswith("<object object")  # not a JSON type: written as text


def test_text_lines_are_readable_and_stay_one_line(restore_logging: None) -> None:
    out = io.StringIO()
    configure("controller", "text", stream=out)
    log = logging.getLogger("venice.test")
    log.warning("server %s is dead", "server-1", extra={"event": "server_dead", "server": "server-1"})
    log.info("hostile", extra={"reason": 'two\nlines "quoted" a=b'})
    log.info("plain")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("controller WARNING server server-1 is dead  event=server_dead server=server-1")
    assert lines[1].endswith('hostile  reason="two\\nlines \\"quoted\\" a=b"')
    assert lines[2].endswith("controller INFO plain")


def test_warnings_become_log_lines(restore_logging: None) -> None:
    import warnings

    out = io.StringIO()
    configure("router:7777", "json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    (entry,) = (json.loads(line) for line in out.getvalue().splitlines())
    assert entry["logger"] == "py.warnings" and "old api" in entry["message"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure("x", "xml")


def test_cli_option_refuses_other_formats(restore_logging: None) -> None:
    import click

    seen: list[str] = []

    @click.command()
    @click.option("--port", default=1)
    @log_format_option(lambda o: f"part:{o['port']}")
    def command(port: int) -> None:
        seen.append(type(logging.getLogger().handlers[0].formatter).__name__)

    runner = CliRunner()
    bad = runner.invoke(command, ["--log-format", "xml"])
    assert bad.exit_code == 2 and "'xml' is not one of 'text', 'json'" in bad.output
    assert runner.invoke(command, ["--log-format", "json"]).exit_code == 0
    assert runner.invoke(command, [], env={"VENICE_LOG_FORMAT": "text"}).exit_code == 0
    assert seen == ["JsonFormatter", "TextFormatter"]
