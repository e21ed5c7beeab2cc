"""The push job on Apache Spark: the same push, for inputs one machine cannot hold.

::

    from venice.push.spark import push_dataframe
    summary = push_dataframe(df, "http://controller:5000", "members", key_field="id")

or, from files, ``venice push --engine spark --spark-master spark://host:7077 --input
hdfs:///data/members/`` (CSV, JSON lines, Parquet, Avro; see docs/push.md).

It keeps the single-process push's semantics (``venice push``, :mod:`venice.push.job`):
the same controller protocol (:mod:`venice.push.control`), the same record validation
(:class:`~venice.push.records.RecordConverter`'s rules, the same messages), the same
records on the version topic. What changes is where the work happens:

1. Driver: the store's schemas; a look at the first rows of the input (through the
   executors' own code), so a wrong key field or format fails before a version exists;
   then the version is opened and start-of-push written to every partition.
2. Executors, stage 1 (:class:`~venice.push.spark_tasks.EncodeTask`): rows parsed,
   validated, Avro-encoded column-wise, given their partition ``partition_for(key_bytes,
   P)``. The first bad row fails the job with its file and position.
3. Shuffle into P Spark partitions, Spark partition ``p`` = Venice partition ``p``, each
   sorted by key bytes (Spark's external sort: it spills, so no executor holds a
   partition in memory).
4. Executors, stage 2 (:class:`~venice.push.spark_tasks.WriteTask`): one task per
   partition writes its records, in key order, to the version topic with the platform's
   producer, dropping identical repeats of a key and failing on a key with two values
   (neighbours after the sort). Each returns its record count: P small rows are all the
   driver ever collects, so its memory does not grow with the input.
5. Driver: the topic's end offsets must equal the counts (a retried write task would
   show as extra records); end-of-push with each partition's count; ``/end``; ONLINE.

A failure anywhere after the version is opened marks it ERROR; a version killed or
failed on the controller cancels the running Spark job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from venice.errors import PubSubError, PushError, VeniceError
from venice.pubsub import connect
from venice.push.control import OpenedVersion, PushControl, StorePlan, VersionEnded
from venice.push.formats import csv_columns, decode_line, detect_format, input_error, strip_bom
from venice.push.job import PushSummary
from venice.push.records import DEFAULT_KEY_FIELD, VALUE_FIELD
from venice.push.spark_tasks import (
    BLOCK_COLUMN,
    ENCODED_SCHEMA,
    FILE_COLUMN,
    FIRST_PLACEHOLDER,
    TEXT_KINDS,
    WRITTEN_SCHEMA,
    CountBefore,
    EncodeTask,
    InputSpec,
    TaskFailure,
    WriteTask,
    csv_cells,
    display_path,
    failure_in,
    normalize_uri,
)
from venice.schema import AvroCodec
from venice.wire import ControlKind, control_headers, encode_control

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["avro_settings", "push_dataframe", "push_input", "refuse_unreachable_log", "run_spark_push", "spark_jars_dir",
           "spark_session"]

log = logging.getLogger(__name__)

SAMPLE_ROWS = 100
"""Rows of the input checked on the driver before a version is opened."""
_WATCH_INTERVAL_S = 1.0
_DATAFRAME = "<dataframe>"


def push_dataframe(
    df: DataFrame,
    controller_url: str,
    store: str,
    *,
    key_field: str | None = None,
    defer_swap: bool = False,
    timeout_s: float = 600.0,
    poll_interval_s: float = 0.5,
) -> PushSummary:
    """Push the rows of a Spark DataFrame into ``store`` as a new version; return once ONLINE.

    Columns are taken as the single-process push takes the fields of an input record:
    ``key_field`` (default ``"key"``) holds the key unless the key schema is a record
    (then its fields are columns of the same names); the value's fields are columns of
    their names (an absent one gets its default), or the column ``"value"``; any other
    column is an error. A bad row fails the push with its DataFrame partition and row.

    Synchronous, like the Spark actions it runs. The session's Python workers must be able
    to import ``venice`` (``PYSPARK_PYTHON`` pointing at a Python that has it).
    """
    source = _Source(df=df.select("*", _block_of_dataframe()), kind="dataframe", label=_DATAFRAME, unit="row")
    return _SparkPush(df.sparkSession, controller_url, store, key_field=key_field, defer_swap=defer_swap,
                      timeout_s=timeout_s, poll_interval_s=poll_interval_s).run(source)


def push_input(
    spark: SparkSession,
    controller_url: str,
    store: str,
    path: str,
    *,
    fmt: str | None = None,
    key_field: str | None = None,
    defer_swap: bool = False,
    timeout_s: float = 600.0,
    poll_interval_s: float = 0.5,
) -> PushSummary:
    """Push the file, directory or glob at ``path`` (any file system Spark reads) with
    Spark's readers. Positions in errors are ``line N`` (JSON lines, CSV) or ``record N``
    (Parquet, Avro) of the file, as ``venice push`` gives them."""
    source = _read_input(spark, path, fmt)
    return _SparkPush(spark, controller_url, store, key_field=key_field, defer_swap=defer_swap,
                      timeout_s=timeout_s, poll_interval_s=poll_interval_s).run(source)


def run_spark_push(
    controller_url: str,
    store: str,
    path: str,
    *,
    master: str = "local[*]",
    conf: Mapping[str, str] | None = None,
    fmt: str | None = None,
    key_field: str | None = None,
    defer_swap: bool = False,
    progress: bool = True,
    timeout_s: float = 600.0,
) -> PushSummary:
    """``venice push --engine spark``: a session of its own for one push, stopped after (a
    session already active in this process, as in a notebook, is used and left running)."""
    kind = detect_format(path, fmt)
    with PushControl(controller_url) as control:
        refuse_unreachable_log(control.pubsub_url(), master)  # before minutes of Spark start-up
    _require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    spark = active or spark_session(master, conf, avro=kind == "avro", progress=progress)
    try:
        return push_input(spark, controller_url, store, path, fmt=kind, key_field=key_field, defer_swap=defer_swap,
                          timeout_s=timeout_s)
    finally:
        if active is None:
            spark.stop()


# --- sessions ---------------------------------------------------------------------------------


def spark_session(
    master: str = "local[*]", conf: Mapping[str, str] | None = None, *, avro: bool = False, progress: bool = False
) -> SparkSession:
    """A SparkSession for pushing. A local master binds to 127.0.0.1, runs the Python
    workers with this interpreter and has no web UI; ``conf`` entries win over ours."""
    _require_spark()
    from pyspark.sql import SparkSession

    local = master.startswith("local")
    quiet = Path(__file__).resolve().parents[1] / "data" / "spark-log4j2.properties"
    settings = {
        "spark.app.name": "venice push",
        "spark.ui.showConsoleProgress": "true" if progress else "false",
        # Executor failures are logged with whole tracebacks; the push reports them itself.
        "spark.log.level": "FATAL",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={quiet.as_uri()}",
    }
    if local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no other interface, not even for a moment
        settings |= {"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if avro:
        settings |= avro_settings()
    settings |= dict(conf or {})
    builder = SparkSession.builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def avro_settings() -> dict[str, str]:
    """Spark settings that bring the spark-avro reader: jars from ``VENICE_SPARK_JARS`` (a
    directory) or deploy/spark/lib of a source checkout, else the package from Maven Central."""
    import pyspark

    jars = sorted(spark_jars_dir().glob("spark-avro_*.jar"))
    if jars:
        return {"spark.jars": ",".join(str(j) for j in jars)}
    return {"spark.jars.packages": f"org.apache.spark:spark-avro_2.13:{pyspark.__version__}"}


def spark_jars_dir() -> Path:
    """Where the Spark jars pyspark lacks are: ``VENICE_SPARK_JARS`` or deploy/spark/lib of
    this source checkout (deploy/spark/fetch.sh fills it)."""
    env = os.environ.get("VENICE_SPARK_JARS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "deploy" / "spark" / "lib"


def refuse_unreachable_log(pubsub_url: str, master: str) -> None:
    """The embedded log is a directory on one machine: executors of a cluster cannot write
    it, so such a push is refused before anything starts. A local master (``local[N]``,
    ``local-cluster[...]``) runs its executors on this machine, where it works."""
    if pubsub_url.startswith("embedded://") and not master.startswith("local"):
        raise PushError(
            f"the cluster runs on the embedded log ({pubsub_url[len('embedded://'):]}), a directory on one machine: "
            f"Spark executors of {master} cannot write it. Push with a local master (--spark-master 'local[*]') on "
            "that machine, or run the cluster on Kafka")


def _require_spark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise PushError("the Spark engine needs pyspark: pip install 'venice-py[spark]'") from None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise PushError("the Spark engine needs Java 17 or newer (no java on the PATH and no JAVA_HOME)")


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """What stage 1 reads, and how its positions read to a person."""

    df: DataFrame
    """Input columns plus FILE_COLUMN (files only) and BLOCK_COLUMN."""
    kind: str
    label: str
    unit: str
    """``line``, ``record`` or ``row`` (DataFrame)."""
    files: tuple[str, ...] = ()
    header: tuple[str, ...] = ()


def _block_of_dataframe() -> Any:
    from pyspark.sql import functions as F

    return F.spark_partition_id().cast("long").alias(BLOCK_COLUMN)


def _read_input(spark: SparkSession, path: str, fmt: str | None) -> _Source:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    kind = detect_format(path, fmt)
    position = [F.col("_metadata.file_path").alias(FILE_COLUMN), F.col("_metadata.file_block_start").alias(BLOCK_COLUMN)]
    try:
        if kind in TEXT_KINDS:
            raw = spark.read.text(path)
            df = raw.select(F.col("value").cast("binary").alias("value"), *position)
        else:
            raw = spark.read.parquet(path) if kind == "parquet" else spark.read.format("avro").load(path)
            df = raw.select("*", *position)
        files = tuple(sorted(normalize_uri(f) for f in raw.inputFiles()))
    except AnalysisException as exc:
        raise _unreadable(path, kind, exc) from None
    if not files:
        raise input_error(path, None, "no records to push (no input files)")
    unit = "line" if kind in TEXT_KINDS else "record"
    source = _Source(df=df, kind=kind if kind in TEXT_KINDS else "columns", label=path, unit=unit, files=files)
    if kind == "csv":
        source = replace(source, header=_csv_header(spark, files[0]))
    return source


def _unreadable(path: str, kind: str, exc: Exception) -> VeniceError:
    text = str(exc)
    if "PATH_NOT_FOUND" in text:
        return input_error(path, None, "no such file or directory")
    if kind == "avro" and "DATA_SOURCE_NOT_FOUND" in text:
        return PushError("reading Avro needs Spark's spark-avro package (VENICE_SPARK_JARS, deploy/spark/lib, or "
                         "--spark-conf spark.jars.packages=org.apache.spark:spark-avro_2.13:<spark version>)")
    if "UNABLE_TO_INFER_SCHEMA" in text:
        return input_error(path, None, "no records to push (no readable input files)")
    return input_error(path, None, f"cannot read: {_first_line(text)}")


def _csv_header(spark: SparkSession, first_file: str) -> tuple[str, ...]:
    """The column names of the first file's header (Spark's CSV reader takes them from there too)."""
    from pyspark.sql import functions as F

    rows = spark.read.text(unquote(first_file)).select(F.col("value").cast("binary")).limit(1).collect()
    if not rows:
        return ()
    try:
        return tuple(csv_columns(csv_cells(decode_line(strip_bom(bytes(rows[0][0]))))))
    except ValueError as exc:
        raise input_error(display_path(first_file), "line 1", str(exc)) from None


# --- the push ---------------------------------------------------------------------------------


class _SparkPush:
    def __init__(self, spark: SparkSession, controller_url: str, store: str, *, key_field: str | None, defer_swap: bool,
                 timeout_s: float, poll_interval_s: float) -> None:
        self.spark = spark
        self.controller_url = controller_url
        self.store = store
        self.key_field = key_field
        self.defer_swap = defer_swap
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.job_group = f"venice-push-{uuid.uuid4().hex[:12]}"

    def run(self, source: _Source) -> PushSummary:
        started = time.monotonic()
        with PushControl(self.controller_url) as control:
            plan = control.store_plan(self.store)
            refuse_unreachable_log(control.pubsub_url(), self.spark.sparkContext.master or "")
            spec = self._spec(source, plan, partitions=1)
            self._check_before_opening(source, spec)
            log.info("%s: input checked in %.1f s", self.store, time.monotonic() - started)
            opened = control.open_version(self.store, defer_swap=self.defer_swap)
            spec = replace(spec, partitions=opened.partitions)
            try:
                with _Watcher(self.controller_url, self.store, opened.version, self._cancel) as watcher:
                    try:
                        records, size, duplicates = self._write(source, spec, plan, opened, watcher)
                    except BaseException:
                        if watcher.ended is not None:
                            raise watcher.ended from None  # killed or failed on the controller: say so
                        raise
                log.info("%s v%d: %d records written at %.1f s", self.store, opened.version, records, time.monotonic() - started)
                deadline = time.monotonic() + self.timeout_s
                control.end(self.store, opened.version, records, deadline)
                control.await_online(self.store, opened.version, deadline, self.poll_interval_s)
            except BaseException as exc:
                ended = control.ended(self.store, opened.version)
                if ended is not None:
                    raise ended from exc
                control.fail(self.store, opened.version, _reason(exc))
                raise
        seconds = max(time.monotonic() - started, 1e-9)
        return PushSummary(store=self.store, version=opened.version, records=records, bytes=size, seconds=seconds,
                           records_per_s=records / seconds, duplicates=duplicates)

    def _spec(self, source: _Source, plan: StorePlan, *, partitions: int) -> InputSpec:
        return InputSpec(kind=source.kind, key_schema=plan.key_schema, value_schema=plan.value_schema,
                         partitions=partitions, key_field=self.key_field, files=source.files, header=source.header,
                         max_key_bytes=plan.max_key_bytes, max_value_bytes=plan.max_value_bytes)

    # -- before a version exists ---------------------------------------------------------------

    def _check_before_opening(self, source: _Source, spec: InputSpec) -> None:
        """The mistakes the first rows show (wrong key field, format, schema) fail here, so
        no version is opened for them; an empty input too."""
        if source.kind == "dataframe":
            problem = _column_problem(source.df.columns, spec, self.key_field)
            if problem is not None:
                raise input_error(_DATAFRAME, None, problem)
            return
        sample = source.df.limit(SAMPLE_ROWS).toArrow()
        if sample.num_rows == 0:
            raise input_error(source.label, None, "no records to push (the input is empty)")
        try:
            for _ in EncodeTask(spec)(iter(sample.to_batches())):
                pass
        except TaskFailure as exc:
            raise self._failure(exc.payload, source) from None

    # -- the job -------------------------------------------------------------------------------

    def _cancel(self) -> None:
        self.spark.sparkContext.cancelJobGroup(self.job_group)

    def _write(self, source: _Source, spec: InputSpec, plan: StorePlan, opened: OpenedVersion,
               watcher: _Watcher) -> tuple[int, int, int]:
        topic, partitions = opened.topic, opened.partitions
        start = {"store": self.store, "version": opened.version, "partitions": partitions}
        _send_control(opened.pubsub_url, topic, partitions, ControlKind.START_OF_PUSH, lambda p: start)
        stats = self._run_job(source, spec, plan, opened, watcher)
        counts = {p: int(records) for p, (records, _, _) in stats.items()}
        total = sum(counts.values())
        if total == 0:
            raise input_error(source.label, None, "no records to push (every line is blank)")
        _check_offsets(opened, counts)
        _send_control(opened.pubsub_url, topic, partitions, ControlKind.END_OF_PUSH, lambda p: {"records": counts.get(p, 0)})
        return total, sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values())

    def _run_job(self, source: _Source, spec: InputSpec, plan: StorePlan, opened: OpenedVersion,
                 watcher: _Watcher) -> dict[int, tuple[int, int, int]]:
        encoded = source.df.mapInArrow(EncodeTask(spec), ENCODED_SCHEMA)
        ordered = encoded.repartition(opened.partitions, "sk").sortWithinPartitions("vp", "k", "f", "b", "r")
        written = ordered.mapInArrow(WriteTask(spec, opened.pubsub_url, opened.topic, plan.schema_id), WRITTEN_SCHEMA)
        context = self.spark.sparkContext
        context.setJobGroup(self.job_group, f"venice push {self.store} v{opened.version}", interruptOnCancel=True)
        try:
            if watcher.ended is not None:
                raise watcher.ended  # ended while start-of-push was being written: do not start the job
            rows = written.collect()
        except VersionEnded:
            raise
        except Exception as exc:  # Spark raises assorted types; each is translated below
            if watcher.ended is not None:
                raise watcher.ended from None
            payload = failure_in(str(exc))
            if payload is not None:
                raise self._failure(payload, source) from None
            raise PushError(f"the Spark job failed: {_first_line(str(exc))}") from exc
        finally:
            context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type,unused-ignore]  # None clears it (typed str in some pyspark stubs)
        stats: dict[int, tuple[int, int, int]] = {}
        for row in rows:
            records, size, duplicates = stats.get(row["partition"], (0, 0, 0))
            stats[row["partition"]] = (records + row["records"], size + row["bytes"], duplicates + row["duplicates"])
        return stats

    # -- failures ------------------------------------------------------------------------------

    def _failure(self, payload: dict[str, Any], source: _Source) -> VeniceError:
        kind, reason = payload.get("kind"), str(payload.get("reason", ""))
        if kind == "pubsub":
            return PubSubError(reason)
        if kind != "input":
            return PushError(reason)
        file, position = self._where(source, payload["at"])
        if "first" in payload:
            first_file, first_position = self._where(source, payload["first"])
            shown = first_position if first_file == file else f"{first_file}: {first_position}"
            reason = reason.replace(FIRST_PLACEHOLDER, shown)
        return input_error(file, position, reason)

    def _where(self, source: _Source, at: list[int]) -> tuple[str, str]:
        """``(file, "line N")`` of a row's position ``(file index, block, row in block)``."""
        f, block, row = (int(x) for x in at)
        if source.kind == "dataframe" or f < 0 or f >= len(source.files):
            return source.label, f"partition {block} row {row + 1}"
        before = 0 if block == 0 else self._rows_before(source, source.files[f], block)
        return display_path(source.files[f]), f"{source.unit} {before + row + 1}"

    def _rows_before(self, source: _Source, uri: str, block: int) -> int:
        """Rows of ``uri`` in Spark's splits before ``block``: one more pass over the input,
        on the error path only. The same DataFrame, so the same splits."""
        from pyspark.sql import functions as F

        counted = source.df.mapInArrow(CountBefore(uri, block), "n long").agg(F.sum("n")).collect()
        return int(counted[0][0] or 0)


def _column_problem(columns: list[str], spec: InputSpec, key_field: str | None) -> str | None:
    """What the single-process push would say about the first row, from the columns alone."""
    key_codec, value_codec = AvroCodec(spec.key_schema, kind="key"), AvroCodec(spec.value_schema)
    present = set(columns) - {BLOCK_COLUMN}
    key_fields = ([f["name"] for f in key_codec.schema["fields"]] if key_codec.field_names is not None
                  else [key_field or DEFAULT_KEY_FIELD])
    for name in key_fields:
        if name not in present:
            return f"missing key field {name!r}"
    value_fields = (value_codec.schema["fields"] if value_codec.field_names is not None
                    else [{"name": VALUE_FIELD, "type": value_codec.schema}])
    for field in value_fields:
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        if field["name"] not in present and "default" not in field and not nullable:
            return f"missing field {field['name']!r} required by the value schema"
    extra = [c for c in columns if c in present and c not in set(key_fields) | {f["name"] for f in value_fields}]
    if extra:
        return f"field(s) not in the value schema: {', '.join(extra)}"
    return None


class _Watcher:
    """Polls the version while the Spark job runs: a version killed by an operator or
    failed on the controller cancels the job at once instead of letting it finish."""

    def __init__(self, controller_url: str, store: str, version: int, cancel: Any) -> None:
        self.control = PushControl(controller_url)
        self.store = store
        self.version = version
        self.cancel = cancel
        self.ended: VersionEnded | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"venice-push-watch-{store}", daemon=True)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.control.close()

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_INTERVAL_S):
            ended = self.control.ended(self.store, self.version)
            if ended is not None:
                self.ended = ended
                with contextlib.suppress(Exception):
                    self.cancel()
                return


# --- pub-sub from the driver ------------------------------------------------------------------


def _send_control(url: str, topic: str, partitions: int, kind: ControlKind, payload: Any) -> None:
    """A control message to every partition, flushed."""

    async def send() -> None:
        pubsub = connect(url)
        try:
            async with await pubsub.producer() as producer:
                headers = control_headers(kind)
                for partition in range(partitions):
                    await producer.send(topic, partition, b"", encode_control(payload(partition)), headers)
                await producer.flush()
        finally:
            await pubsub.close()

    asyncio.run(send())


def _check_offsets(opened: OpenedVersion, counts: dict[int, int]) -> None:
    """Each partition must hold its start-of-push and exactly the records its task counted."""

    async def offsets() -> dict[int, int]:
        pubsub = connect(opened.pubsub_url)
        try:
            return await pubsub.end_offsets(opened.topic)
        finally:
            await pubsub.close()

    found = asyncio.run(offsets())
    for partition in range(opened.partitions):
        expected = 1 + counts.get(partition, 0)
        if found.get(partition) != expected:
            raise PushError(
                f"partition {partition} of {opened.topic} holds {found.get(partition, 0) - 1} records where the Spark tasks "
                f"wrote {expected - 1}: a write task that was retried wrote some twice. Push again")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "push interrupted"
    if isinstance(exc, VeniceError):
        return exc.message
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:500]
    return "no message"

