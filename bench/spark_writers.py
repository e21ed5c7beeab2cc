"""Which writer the Spark push uses, measured: ``python -m bench.spark_writers``.

Starts a Kafka broker (deploy/kafka) and a ``local[2]`` session, writes N member-feature
records as JSON lines (bench/spark.py's workload), builds the push's pipeline on them
(Spark's text reader, :class:`~venice.push.spark_tasks.EncodeTask`, the shuffle into
partitions and the sort by key) and ends it three ways, alternating their order each
round, each into a fresh topic:

* ``executor``: :class:`~venice.push.spark_tasks.WriteTask`, the platform's producer
  (aiokafka, idempotent, acks=all) in each Python worker: what the push uses;
* ``sink``: Spark's own Kafka sink (``df.write.format("kafka")`` with ``partition`` and
  ``headers`` columns; the jars deploy/spark/fetch.sh fetches), idempotent, acks=all;
* ``none``: the same pipeline with nothing written, to show what writing adds.

Both writers' topics are checked to hold exactly the records. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.spark import RECORD_SCHEMA, write_records
from venice.pubsub import connect
from venice.wire import ControlKind, control_headers, data_headers, encode_control

PARTITIONS = 4


async def _topic(url: str, topic: str) -> None:
    async with connect(url) as pubsub:
        await pubsub.create_topic(topic, PARTITIONS)
        async with await pubsub.producer() as producer:
            for p in range(PARTITIONS):
                await producer.send(topic, p, b"", encode_control({}), control_headers(ControlKind.START_OF_PUSH))


async def _records_in(url: str, topic: str) -> int:
    async with connect(url) as pubsub:
        return sum((await pubsub.end_offsets(topic)).values()) - PARTITIONS


def _count(batches: Any) -> Any:
    yield pa.RecordBatch.from_pydict({"n": [sum(b.num_rows for b in batches)]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spark_writers", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from venice.push.spark import spark_jars_dir, spark_session
    from venice.push.spark_tasks import BLOCK_COLUMN, ENCODED_SCHEMA, FILE_COLUMN, EncodeTask, InputSpec, WriteTask, normalize_uri
    from venice.testing.kafka import KafkaBroker

    work = Path(tempfile.mkdtemp(prefix="venice-spark-writers-"))
    jars = ",".join(str(j) for j in sorted(spark_jars_dir().glob("*.jar")))
    broker = KafkaBroker(work / "kafka").start()
    spark = spark_session("local[2]", {"spark.jars": jars})
    try:
        path = write_records(work / "records.jsonl", args.rows)
        raw = spark.read.text(str(path))
        source = raw.select(F.col("value").cast("binary").alias("value"), F.col("_metadata.file_path").alias(FILE_COLUMN),
                            F.col("_metadata.file_block_start").alias(BLOCK_COLUMN))
        spec = InputSpec(kind="jsonl", key_schema="long", value_schema=RECORD_SCHEMA, partitions=PARTITIONS, key_field="id",
                         files=tuple(sorted(normalize_uri(f) for f in raw.inputFiles())))
        ordered = (source.mapInArrow(EncodeTask(spec), ENCODED_SCHEMA).repartition(PARTITIONS, "sk")
                   .sortWithinPartitions("vp", "k", "f", "b", "r"))
        headers = F.array(F.struct(F.lit("schema-id").alias("key"), F.lit(data_headers(1)[0][1]).alias("value")))

        def executor(topic: str) -> None:
            ordered.mapInArrow(WriteTask(spec, broker.url, topic, 1), "partition int, spark_partition int, records long, "
                               "bytes long, duplicates long").collect()

        def sink(topic: str) -> None:
            (ordered.select(F.lit(topic).alias("topic"), F.col("vp").alias("partition"), F.col("k").alias("key"),
                            F.col("v").alias("value"), headers.alias("headers"))
             .write.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap).option("kafka.acks", "all")
             .option("kafka.enable.idempotence", "true").option("kafka.linger.ms", "5")
             .option("kafka.batch.size", str(512 * 1024)).save())

        def none(topic: str) -> None:
            ordered.mapInArrow(_count, "n long").collect()

        writers = {"executor": executor, "sink": sink, "none": none}
        ordered.mapInArrow(_count, "n long").collect()  # warm the JVM and the Python workers up first
        seconds: dict[str, list[float]] = {name: [] for name in writers}
        for round_no in range(args.rounds):
            names = list(writers) if round_no % 2 == 0 else list(reversed(writers))
            for name in names:
                topic = f"w-{name}-{round_no}"
                asyncio.run(_topic(broker.url, topic))
                started = time.perf_counter()
                writers[name](topic)
                seconds[name].append(time.perf_counter() - started)
                if name != "none":
                    written = asyncio.run(_records_in(broker.url, topic))
                    if written != args.rows:
                        raise RuntimeError(f"{name} wrote {written} records, expected {args.rows}")
                print(f"round {round_no} {name}: {seconds[name][-1]:.1f} s", flush=True)
        print(f"\n{args.rows:,} member-feature records, local[2], {PARTITIONS} partitions, median of {args.rounds} rounds\n")
        print("| writer | seconds | records/s |\n|---|---|---|")
        for name, values in seconds.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.1f} | {args.rows / median:,.0f} |")
    finally:
        spark.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
