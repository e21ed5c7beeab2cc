"""Hostile values for issue 11's flags and files: each part refuses to start with a usage
error naming the flag (exit 2), before it serves anything, and a --token that is not one
is refused by the server it reaches, never sent as something else."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from venice.cli import main


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "short": tmp_path / "short",
        "spaces": tmp_path / "spaces",
        "binary": tmp_path / "binary",
        "not-json": tmp_path / "tokens-not-json",
        "wrong-format": tmp_path / "tokens-wrong",
        "garbage-pem": tmp_path / "garbage.pem",
    }
    files["short"].write_text("abc")
    files["spaces"].write_text("a secret with spaces in it")
    files["binary"].write_bytes(b"\xff\xfe\x00\x01" * 8)
    files["not-json"].write_text("{")
    files["wrong-format"].write_text('{"format": 99, "tokens": []}')
    files["garbage-pem"].write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return files


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["controller", "--cluster-secret-file", "{short}"], "--cluster-secret-file"),
        (["controller", "--cluster-secret-file", "{spaces}"], "--cluster-secret-file"),
        (["controller", "--cluster-secret-file", "{binary}"], "--cluster-secret-file"),
        (["controller", "--cluster-secret-file", "{missing}"], "--cluster-secret-file"),
        (["server", "--cluster-secret-file", "{short}"], "--cluster-secret-file"),
        (["router", "--cluster-secret-file", "{spaces}"], "--cluster-secret-file"),
        (["controller", "--tokens-file", "{not-json}"], "--tokens-file"),
        (["controller", "--tokens-file", "{wrong-format}"], "--tokens-file"),
        (["controller", "--tokens-file", "{binary}"], "--tokens-file"),
        (["router", "--tls-cert", "{garbage-pem}", "--tls-key", "{garbage-pem}"], "--tls-cert/--tls-key"),
        (["server", "--tls-cert", "{garbage-pem}", "--tls-key", "{garbage-pem}"], "--tls-cert/--tls-key"),
        (["controller", "--tls-cert", "{missing}", "--tls-key", "{missing}"], "--tls-cert/--tls-key"),
        (["router", "--tls-cert", "{garbage-pem}"], "--tls-cert and --tls-key together"),
        (["router", "--ca-file", "{garbage-pem}"], "--ca-file"),
        (["server", "--ca-file", "{binary}"], "--ca-file"),
        (["store", "update", "x", "--read-quota", "0"], "--read-quota"),
        (["store", "update", "x", "--read-quota", "10000001"], "--read-quota"),
        (["store", "update", "x", "--read-quota", "nan"], "--read-quota"),
        (["store", "update", "x", "--read-quota", "5", "--no-read-quota"], "not both"),
    ],
)
def test_refused_before_anything_runs(tmp_path: Path, args: list[str], needle: str) -> None:
    files = {k: str(v) for k, v in _files(tmp_path).items()} | {"missing": str(tmp_path / "missing")}
    result = CliRunner().invoke(main, [a.format(**files) for a in args], env={"VENICE_CLUSTER_SECRET": ""})
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_a_secret_in_the_environment_is_checked_too(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["router"], env={"VENICE_CLUSTER_SECRET": "too short"})
    assert result.exit_code == 2 and "VENICE_CLUSTER_SECRET" in result.output
