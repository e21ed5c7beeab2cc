"""The store and push commands: usage errors, user errors as one line, schema arguments.
(Talking to a live controller is covered by the cluster tests.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from venice.cli.push import push
from venice.cli.store import load_schema, store
from venice.errors import SchemaError

from .files import write_jsonl


@pytest.fixture
def dead_controller() -> str:
    """A URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_controller_is_one_line_and_exit_1(dead_controller: str, tmp_path: Path) -> None:
    runner = CliRunner()
    path = write_jsonl(tmp_path / "m.jsonl", [{"key": 1, "v": 2}])
    for command, args in [
        (store, ["list"]),
        (store, ["describe", "x"]),
        (store, ["delete", "x", "--yes"]),
        (store, ["create", "--name", "x", "--key-schema", "long", "--value-schema", "string"]),
        (push, ["--store", "x", "--input", str(path)]),
        (push, ["--store", "x", "--input", str(path), "--engine", "spark"]),  # asks the controller before starting Spark
    ]:
        result = runner.invoke(command, [*args, "--controller", dead_controller])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: cannot reach the controller at {dead_controller}")
        assert "Traceback" not in result.output


def test_controller_url_from_environment(dead_controller: str) -> None:
    result = CliRunner().invoke(store, ["list"], env={"VENICE_CONTROLLER_URL": dead_controller})
    assert result.exit_code == 1 and dead_controller in result.output


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(store, ["create", "--name", "x", "--key-schema", "long"]).exit_code == 2
    both = runner.invoke(store, ["create", "--name", "x", "--key-schema", "long", "--value-schema", "long", "--infer-from", "f.jsonl"])
    assert both.exit_code == 2 and "not both" in both.output
    assert runner.invoke(push, ["--store", "x"]).exit_code == 2
    assert runner.invoke(push, ["--store", "x", "--input", "f", "--format", "xml"]).exit_code == 2
    assert runner.invoke(push, ["--store", "x", "--input", "f", "--engine", "flink"]).exit_code == 2
    for args, says in [
        (["--empty", "--engine", "spark"], "--engine spark pushes an --input"),
        (["--input", "f", "--engine", "spark", "--spark-conf", "spark.executor.memory"], "--spark-conf takes KEY=VALUE"),
        (["--input", "f", "--engine", "spark", "--spark-conf", "=4g"], "--spark-conf takes KEY=VALUE"),
        (["--input", "f", "--spark-master", "yarn"], "--spark-master and --spark-conf go with --engine spark"),
    ]:
        result = runner.invoke(push, ["--store", "x", *args])
        assert result.exit_code == 2 and says in result.output, result.output


def test_infer_error_is_reported_with_position(tmp_path: Path, dead_controller: str) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": 1, "v": 1}, {"v": 2}])
    result = CliRunner().invoke(store, ["create", "--name", "m", "--infer-from", str(path), "--key-field", "id", "--controller", dead_controller])
    assert result.exit_code == 1
    assert result.output == f"error: {path}: line 2: key field 'id' is absent (fields: v)\n"


def test_infer_prints_schemas_before_creating(tmp_path: Path, dead_controller: str) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": 1, "v": 1.5}])
    result = CliRunner().invoke(store, ["create", "--name", "m", "--infer-from", str(path), "--key-field", "id", "--controller", dead_controller])
    assert 'inferred key schema: "long"' in result.output
    assert '"name": "v"' in result.output


def test_load_schema_forms(tmp_path: Path) -> None:
    assert load_schema("long") == "long"
    assert load_schema(' {"type": "array", "items": "double"} ') == {"type": "array", "items": "double"}
    avsc = tmp_path / "v.avsc"
    avsc.write_text('{"type": "record", "name": "V", "fields": [{"name": "a", "type": "int"}]}')
    assert load_schema(f"@{avsc}")["name"] == "V"
    with pytest.raises(SchemaError, match="'lon' is not an Avro primitive type"):
        load_schema("lon")
    with pytest.raises(SchemaError, match="cannot read schema file"):
        load_schema(f"@{tmp_path / 'missing.avsc'}")
    with pytest.raises(SchemaError):
        load_schema('{"type": "record"}')


def test_bundled_schema_file_loads() -> None:
    avsc = Path(__file__).resolve().parents[2] / "venice" / "data" / "member_features.avsc"
    assert load_schema(f"@{avsc}")["name"] == "MemberFeatures"
