"""``venice token create | list | revoke``: the token printed once, only its digest on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
from click.testing import CliRunner

from venice.cli import main


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_token_once_and_keeps_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    code, out, err = _run("token", "create", "--tokens-file", str(path), "--role", "writer", "--store", "members")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("vt_") and "\n" not in token
    kept = orjson.loads(path.read_bytes())["tokens"]
    assert [(t["sha256"], t["role"], t["store"]) for t in kept] == [(hashlib.sha256(token.encode()).hexdigest(), "writer", "members")]
    assert token not in path.read_text()
    assert "not shown again" in err

    code, out, _ = _run("token", "list", "--tokens-file", str(path))
    assert code == 0 and token not in out
    assert out.split()[:3] == [kept[0]["sha256"][:12], "writer", "members"]

    code, out, _ = _run("token", "revoke", "--tokens-file", str(path), kept[0]["sha256"][:12])
    assert code == 0 and "revoked writer token" in out
    assert orjson.loads(path.read_bytes())["tokens"] == []


def test_hostile_arguments_are_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for args, needle in [
        (["--role", "root"], "Invalid value for '--role'"),
        (["--role", "cluster"], "Invalid value for '--role'"),
        (["--role", "admin", "--store", "x"], "admin token is for every store"),
        (["--role", "monitor", "--store", "x"], "monitor token is for every store"),
        (["--role", "reader", "--store", "../../etc"], "invalid store name"),
    ]:
        code, _, err = _run("token", "create", "--tokens-file", str(path), *args)
        assert code != 0 and needle in err, (args, err)
    assert not path.exists()
    path.write_text("{not json")
    code, _, err = _run("token", "create", "--tokens-file", str(path), "--role", "admin")
    assert code == 1 and "is not JSON" in err
    assert path.read_text() == "{not json"  # nothing already stored is lost
    code, _, err = _run("token", "revoke", "--tokens-file", str(tmp_path / "none.json"), "zz")
    assert code == 1 and "hex digits" in err


def test_a_monitor_token_is_for_every_store(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    code, out, err = _run("token", "create", "--tokens-file", str(path), "--role", "monitor", "--note", "prometheus")
    assert code == 0 and "created monitor token" in err, err
    kept = orjson.loads(path.read_bytes())["tokens"]
    assert [(t["sha256"], t["role"], t["store"]) for t in kept] == [(hashlib.sha256(out.strip().encode()).hexdigest(), "monitor", None)]
    code, listed, _ = _run("token", "list", "--tokens-file", str(path))
    assert code == 0 and listed.split()[1:3] == ["monitor", "*"]
