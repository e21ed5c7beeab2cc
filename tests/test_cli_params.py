"""Hostile values for the command-line flags issue 8 added or bounded: refused with a usage
error (exit 2) before anything runs or is sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from venice.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["controller", "--forget-after", "nan"],
        ["controller", "--forget-after", "inf"],
        ["controller", "--forget-after", "-5"],
        ["controller", "--forget-after", "5", "--dead-after", "10"],
        ["controller", "--dead-after", "\uff11\uff15"],
        ["controller", "--dead-after", "1e400"],
        ["store", "update", "x", "--max-value-size", "0"],
        ["store", "update", "x", "--max-value-size", str((4 << 20) + 1)],
        ["store", "update", "x", "--max-value-size", "\uff11"],
        ["store", "update", "x", "--max-value-size", "1_000"],
        ["store", "update", "x", "--max-value-size", "9" * 5000],
        ["store", "update", "x", "--push-timeout", "nan"],
        ["store", "update", "x", "--push-timeout", "0.5"],
        ["store", "update", "x", "--keep-versions", "101"],
        ["store", "create", "--name", "x", "--key-schema", "long", "--value-schema", "long", "--partitions", "1025"],
        ["store", "create", "--name", "x", "--key-schema", "long", "--value-schema", "long", "--replication-factor", "+2"],
        ["store", "create", "--name", "x", "--key-schema", "long", "--value-schema", "long", "--max-value-size", "-1"],
        ["tail", "--store", "x", "--max-events", "0"],
        ["tail", "--store", "x", "--max-events", "\uff11"],
        ["tail", "--store", "x", "--idle-timeout", "nan"],
        ["tail", "--store", "x", "--idle-timeout", "-1"],
    ],
)
def test_hostile_flag_values_are_usage_errors(args: list[str]) -> None:
    # The controller URL points nowhere: a request would fail differently (exit 1).
    result = CliRunner().invoke(main, args, env={"VENICE_CONTROLLER_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def _commands(group: object, path: list[str]) -> list[list[str]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, [*path, name])
    return found


@pytest.mark.parametrize("path", _commands(main, []), ids=lambda p: " ".join(p) or "venice")
def test_every_command_has_help(path: list[str]) -> None:
    """--help renders the typed flags' metavars (click >= 8.2 asks for them with ctx=)."""
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
