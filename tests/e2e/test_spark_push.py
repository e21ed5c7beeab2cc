"""The push job on Apache Spark (``local[2]``) against a real cluster on the real broker.

One SparkSession for the module. The 200k-row file is pushed once by the single-process
push (``venice push``, a child process) and once by Spark; every key must serve the same
value from both, and the value the file says. The rest reuses that store and small files.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest

import venice
from tests.e2e.conftest import create_store, current_version, make_records, push, venice_cli, version_info, write_jsonl
from tests.push.files import write_csv, write_parquet
from venice.cluster import LocalCluster, wait_for
from venice.errors import InvalidInputError, PushError, StoreNotFoundError
from venice.pubsub import connect
from venice.push.job import PushSummary
from venice.structs import Message, TopicPartition
from venice.wire import ControlKind, control_kind, control_payload

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

ROWS = 200_000
FIELDS = ("name", "score", "visits", "embedding", "country")


@pytest.fixture(scope="module")
def spark(spark_required: None) -> Iterator[Any]:
    from venice.push.spark import spark_session

    session = spark_session("local[2]", avro=True)
    try:
        yield session
    finally:
        session.stop()


def value_of(record: dict[str, Any]) -> dict[str, Any]:
    return {f: record[f] for f in FIELDS}


def served(router: str, store: str, keys: list[int]) -> list[Any]:
    values: list[Any] = []
    with venice.Client(router) as client:
        for start in range(0, len(keys), 10_000):  # the router's most keys per batch
            values += client.batch_get(store, keys[start : start + 10_000])
    return values


def wait_serving(router: str, store: str, record: dict[str, Any]) -> None:
    """Routers learn of a new current version by long-polling the controller."""
    with venice.Client(router) as client:
        wait_for(lambda: client.get(store, record["id"]) == value_of(record), 20, f"router to serve the new {store}")


@dataclass
class Pushed:
    records: list[dict[str, Any]]
    path: Path
    cli_output: str
    spark_summary: PushSummary


@pytest.fixture(scope="module")
def pushed(spark: Any, kafka_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """The 200k-row file (with identical repeats of some rows) pushed into ``sp_cli`` by
    ``venice push`` and into ``sp_spark`` by Spark."""
    from venice.push.spark import push_input

    records = make_records(ROWS, seed=11)
    path = write_jsonl(tmp_path_factory.mktemp("spark") / "members.jsonl", records + records[1000:1010])
    controller = kafka_cluster.controller_url
    for store in ("sp_cli", "sp_spark"):
        create_store(controller, store, partitions=4, replication_factor=1)
    cli = push(controller, "sp_cli", path)
    assert cli.returncode == 0, cli.stderr
    summary = push_input(spark, controller, "sp_spark", str(path), key_field="id")
    wait_serving(kafka_cluster.router_url, "sp_spark", records[-1])
    return Pushed(records, path, cli.stdout, summary)


async def read_version_topic(url: str, topic: str) -> dict[int, list[Message]]:
    """Every record of a version topic, by partition, in offset order."""
    async with connect(url) as pubsub:
        ends = await pubsub.end_offsets(topic)
        found: dict[int, list[Message]] = {p: [] for p in ends}
        async with await pubsub.consumer() as consumer:
            await consumer.assign({TopicPartition(topic, p): 0 for p in ends})
            while any(len(found[p]) < end for p, end in ends.items()):
                for tp, messages in (await consumer.getmany(timeout_ms=500, max_records=10_000)).items():
                    found[tp.partition].extend(messages)
    return found


def data_of(messages: list[Message]) -> list[tuple[bytes, bytes | None]]:
    return [(m.key, m.value) for m in messages if control_kind(m) is None]


def test_spark_and_single_process_pushes_write_and_serve_the_same_value_for_every_key(
    pushed: Pushed, kafka_cluster: LocalCluster, kafka_broker: Any
) -> None:
    assert pushed.spark_summary.records == ROWS
    assert pushed.spark_summary.duplicates == 10
    assert f"{ROWS} records" in pushed.cli_output and "10 identical duplicate record(s) skipped" in pushed.cli_output
    by_cli = asyncio.run(read_version_topic(kafka_broker.url, "sp_cli_v1"))
    by_spark = asyncio.run(read_version_topic(kafka_broker.url, "sp_spark_v1"))
    assert sorted(by_spark) == sorted(by_cli) == [0, 1, 2, 3]
    for partition, messages in by_spark.items():
        data = data_of(messages)
        # Every key with its value in the same partition as the single-process push put it...
        assert dict(data) == dict(data_of(by_cli[partition]))
        # ...sorted by key bytes, between a start-of-push and an end-of-push that counts them.
        assert [k for k, _ in data] == sorted(k for k, _ in data)
        assert control_kind(messages[0]) is ControlKind.START_OF_PUSH
        assert control_kind(messages[-1]) is ControlKind.END_OF_PUSH
        assert control_payload(messages[-1]) == {"records": len(data)}
    assert sum(len(data_of(m)) for m in by_spark.values()) == ROWS
    # And what the router serves from either store is what the file says.
    sample = pushed.records[::97]
    keys = [r["id"] for r in sample]
    assert served(kafka_cluster.router_url, "sp_spark", keys) == [value_of(r) for r in sample]
    assert served(kafka_cluster.router_url, "sp_cli", keys) == [value_of(r) for r in sample]


def test_bad_row_fails_the_job_with_its_line_and_the_current_version_keeps_serving(
    pushed: Pushed, spark: Any, kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    from venice.push.spark import push_input

    controller = kafka_cluster.controller_url
    before = current_version(controller, "sp_spark")
    lines = pushed.path.read_bytes().splitlines()
    bad_line = 150_001  # in the second of Spark's splits of this file: its line number needs a count of the first
    lines[bad_line - 1] = b'{"id": 1, "name": "x", "score": "high", "visits": 1, "embedding": []}'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InvalidInputError) as caught:
        push_input(spark, controller, "sp_spark", str(path), key_field="id")
    assert caught.value.message.startswith(f"{path}: line {bad_line}: value does not fit the value schema")
    failed = version_info(controller, "sp_spark", before + 1)
    assert failed["status"] == "ERROR"
    assert current_version(controller, "sp_spark") == before
    assert served(kafka_cluster.router_url, "sp_spark", [r["id"] for r in pushed.records[:100]]) == [
        value_of(r) for r in pushed.records[:100]]


def test_a_key_with_two_values_fails_naming_both_files_and_lines(spark: Any, kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    from venice.push.spark import push_input

    controller = kafka_cluster.controller_url
    create_store(controller, "sp_dups", partitions=3, replication_factor=1)
    records = make_records(50, seed=3)
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", records[:25])
    write_jsonl(folder / "b.jsonl", [*records[25:], {**records[7], "name": "someone else"}])
    with pytest.raises(InvalidInputError) as caught:
        push_input(spark, controller, "sp_dups", str(folder), fmt="jsonl", key_field="id")
    assert caught.value.message == (
        f"{folder / 'b.jsonl'}: line 26: key {records[7]['id']} appears twice with different values "
        f"(first at {folder / 'a.jsonl'}: line 8)")
    assert version_info(controller, "sp_dups", 1)["status"] == "ERROR"


def test_csv_parquet_avro_and_gzip_inputs(spark: Any, kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    from venice.push.spark import push_input

    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    create_store(controller, "sp_formats", partitions=4, replication_factor=1)
    records = make_records(3000, seed=5)
    keys = [r["id"] for r in records]

    header = ["id", "name", "score", "visits", "embedding", "country"]
    rows = [[str(r["id"]), r["name"], repr(r["score"]), str(r["visits"]), orjson.dumps(r["embedding"]).decode(),
             r["country"] if r["country"] is not None else "NA"] for r in records]
    csv_path = write_csv(tmp_path / "members.csv", header, rows)
    summary = push_input(spark, controller, "sp_formats", str(csv_path), key_field="id")
    assert (summary.version, summary.records) == (1, 3000)
    wait_serving(router, "sp_formats", records[0])
    assert served(router, "sp_formats", keys) == [value_of(r) for r in records]

    renamed = [{**r, "name": f"pq-{r['id']}"} for r in records]
    summary = push_input(spark, controller, "sp_formats", str(write_parquet(tmp_path / "m.parquet", renamed, row_group_size=500)),
                         key_field="id")
    assert summary.version == 2
    wait_serving(router, "sp_formats", renamed[0])
    assert served(router, "sp_formats", keys) == [value_of(r) for r in renamed]

    schema = {"type": "record", "name": "M", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"}, {"name": "score", "type": "double"},
        {"name": "visits", "type": "int"}, {"name": "embedding", "type": {"type": "array", "items": "double"}},
        {"name": "country", "type": ["null", "string"]}]}
    from_avro = [{**r, "name": f"avro-{r['id']}"} for r in records]
    with open(tmp_path / "m.avro", "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), from_avro)
    summary = push_input(spark, controller, "sp_formats", str(tmp_path / "m.avro"), key_field="id")
    assert summary.version == 3
    wait_serving(router, "sp_formats", from_avro[0])
    assert served(router, "sp_formats", keys) == [value_of(r) for r in from_avro]

    import gzip

    zipped = [{**r, "name": f"gz-{r['id']}"} for r in records]
    gz_path = tmp_path / "m.jsonl.gz"
    gz_path.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in zipped)))
    assert push_input(spark, controller, "sp_formats", str(gz_path), key_field="id").version == 4
    wait_serving(router, "sp_formats", zipped[0])
    assert served(router, "sp_formats", keys) == [value_of(r) for r in zipped]


def test_push_dataframe(spark: Any, kafka_cluster: LocalCluster) -> None:
    import pandas as pd

    from venice.push.spark import push_dataframe

    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    create_store(controller, "sp_df", partitions=2, replication_factor=1)
    records = make_records(2000, seed=9)
    df = spark.createDataFrame(pd.DataFrame(records)).repartition(3)
    summary = push_dataframe(df, controller, "sp_df", key_field="id")
    assert (summary.version, summary.records) == (1, 2000)
    wait_serving(router, "sp_df", records[0])
    assert served(router, "sp_df", [r["id"] for r in records]) == [value_of(r) for r in records]

    # A column the schema lacks fails before a version is opened.
    with pytest.raises(InvalidInputError, match=r"^<dataframe>: field\(s\) not in the value schema: extra$"):
        push_dataframe(df.withColumnRenamed("country", "extra"), controller, "sp_df", key_field="id")
    assert [v["version"] for v in httpx.get(f"{controller}/stores/sp_df").json()["versions"]] == [1]
    # A bad row names its DataFrame partition and row.
    bad = spark.createDataFrame(pd.DataFrame([*records[:5], {**records[5], "visits": 2**40}])).coalesce(1)
    with pytest.raises(InvalidInputError, match=r"^<dataframe>: partition 0 row 6: value does not fit the value schema"):
        push_dataframe(bad, controller, "sp_df", key_field="id")
    with pytest.raises(StoreNotFoundError):
        push_dataframe(df, controller, "no_such_store", key_field="id")


def test_inputs_that_cannot_be_pushed_fail_before_a_version_exists(spark: Any, kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    from venice.push.spark import push_input

    controller = kafka_cluster.controller_url
    create_store(controller, "sp_refused", partitions=2, replication_factor=1)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "wrong-key.jsonl").write_bytes(orjson.dumps({"user": 1, "name": "x"}) + b"\n")
    cases = {
        str(tmp_path / "missing.jsonl"): "no such file or directory",
        str(tmp_path / "empty.jsonl"): "no records to push",
        str(tmp_path / "wrong-key.jsonl"): "line 1: missing key field 'id'",
    }
    for path, reason in cases.items():
        with pytest.raises(InvalidInputError) as caught:
            push_input(spark, controller, "sp_refused", path, key_field="id")
        assert reason in caught.value.message and path in caught.value.message
    with pytest.raises(InvalidInputError, match="unknown input format"):
        push_input(spark, controller, "sp_refused", str(tmp_path / "empty.jsonl"), fmt="xml")
    assert httpx.get(f"{controller}/stores/sp_refused").json()["versions"] == []


def test_a_version_killed_by_an_operator_cancels_the_spark_job(pushed: Pushed, spark: Any, kafka_cluster: LocalCluster) -> None:
    from venice.push.spark import push_input

    controller = kafka_cluster.controller_url
    before = current_version(controller, "sp_spark")
    number = 1 + max(v["version"] for v in httpx.get(f"{controller}/stores/sp_spark", timeout=5).json()["versions"])
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            push_input(spark, controller, "sp_spark", str(pushed.path), key_field="id")
        except BaseException as exc:
            outcome["error"] = exc

    pusher = threading.Thread(target=run)
    pusher.start()
    while True:  # kill it once it is running (the sample check takes a moment)
        response = httpx.get(f"{controller}/stores/sp_spark/versions/{number}", timeout=5)
        if response.status_code == 200 and response.json()["status"] == "STARTED":
            break
        if not pusher.is_alive():
            raise AssertionError(f"the push ended before it could be killed: {outcome}")
        time.sleep(0.1)
    assert httpx.post(f"{controller}/stores/sp_spark/versions/{number}/kill", timeout=10).status_code == 200
    pusher.join(timeout=120)
    assert not pusher.is_alive()
    assert isinstance(outcome.get("error"), PushError)
    assert "KILLED" in str(outcome["error"])
    assert version_info(controller, "sp_spark", number)["status"] == "KILLED"
    assert current_version(controller, "sp_spark") == before
    assert not spark.sparkContext.statusTracker().getActiveJobsIds()


def test_a_spark_job_killed_under_the_push_marks_the_version_error(pushed: Pushed, spark: Any, kafka_cluster: LocalCluster) -> None:
    """The Spark application's jobs cancelled from outside (an operator, a cluster manager)."""
    from venice.push.spark import push_input

    controller = kafka_cluster.controller_url
    before = current_version(controller, "sp_spark")
    number = 1 + max(v["version"] for v in httpx.get(f"{controller}/stores/sp_spark", timeout=5).json()["versions"])
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            push_input(spark, controller, "sp_spark", str(pushed.path), key_field="id")
        except BaseException as exc:
            outcome["error"] = exc

    pusher = threading.Thread(target=run)
    pusher.start()
    tracker = spark.sparkContext.statusTracker()

    def writing() -> bool:  # the version is open (the input check's job is over) and a job runs: the push's
        response = httpx.get(f"{controller}/stores/sp_spark/versions/{number}", timeout=5)
        return response.status_code == 200 and response.json()["status"] == "STARTED" and bool(tracker.getActiveJobsIds())

    while not writing():
        if not pusher.is_alive():
            raise AssertionError(f"the push ended before its job could be killed: {outcome}")
        time.sleep(0.05)
    spark.sparkContext.cancelAllJobs()
    pusher.join(timeout=120)
    assert not pusher.is_alive()
    assert isinstance(outcome.get("error"), PushError)
    assert str(outcome["error"]).startswith("the Spark job failed")
    failed = version_info(controller, "sp_spark", number)
    assert failed["status"] == "ERROR" and failed["reason"].startswith("the Spark job failed")
    assert current_version(controller, "sp_spark") == before


def test_embedded_log_works_locally_and_is_refused_for_a_cluster_master(
    spark: Any, embedded_cluster: LocalCluster, tmp_path: Path
) -> None:
    from venice.push.spark import push_input

    controller, router = embedded_cluster.controller_url, embedded_cluster.router_url
    create_store(controller, "sp_embedded", partitions=3, replication_factor=1)
    records = make_records(500, seed=2)
    path = write_jsonl(tmp_path / "m.jsonl", records)
    assert push_input(spark, controller, "sp_embedded", str(path), key_field="id").records == 500
    wait_serving(router, "sp_embedded", records[0])
    assert served(router, "sp_embedded", [r["id"] for r in records]) == [value_of(r) for r in records]
    # A real cluster's executors cannot reach a directory on this machine: refused before Spark starts.
    refused = venice_cli("push", "--controller", controller, "--store", "sp_embedded", "--input", str(path), "--key-field", "id",
                         "--engine", "spark", "--spark-master", "spark://127.0.0.1:7077", timeout_s=120)
    assert refused.returncode == 1
    assert "embedded log" in refused.stderr and "--spark-master 'local[*]'" in refused.stderr


def test_cli_engine_spark(spark: Any, kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    """``venice push --engine spark`` (in this process: it takes the module's session, and leaves it running)."""
    from click.testing import CliRunner

    from venice.cli import main

    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    create_store(controller, "sp_cli_engine", partitions=2, replication_factor=1)
    records = make_records(1000, seed=4)
    path = write_jsonl(tmp_path / "m.jsonl", records)
    runner = CliRunner()
    result = runner.invoke(main, ["push", "--controller", controller, "--store", "sp_cli_engine", "--input", str(path),
                                  "--key-field", "id", "--engine", "spark", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "pushed sp_cli_engine v1: 1000 records" in result.output
    wait_serving(router, "sp_cli_engine", records[0])
    assert spark.sparkContext.statusTracker() is not None  # still running for the tests after
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": 1, "name": "x"}\n')
    result = runner.invoke(main, ["push", "--controller", controller, "--store", "sp_cli_engine", "--input", str(bad),
                                  "--key-field", "id", "--engine", "spark"])
    assert result.exit_code == 1
    assert f"error: {bad}: line 1: missing field 'score' required by the value schema" in result.output
    usage = runner.invoke(main, ["push", "--controller", controller, "--store", "sp_cli_engine", "--empty", "--engine", "spark"])
    assert usage.exit_code == 2 and "--engine spark pushes an --input" in usage.output
    usage = runner.invoke(main, ["push", "--controller", controller, "--store", "sp_cli_engine", "--input", str(path),
                                 "--spark-conf", "nonsense"])
    assert usage.exit_code == 2 and "--spark-master and --spark-conf go with --engine spark" in usage.output
