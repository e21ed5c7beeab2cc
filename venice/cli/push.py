"""``venice push``: load a data file into a store as a new version."""

from __future__ import annotations

import click

from venice.cli.params import Integer
from venice.cli.store import cli_token, controller_option, handle_errors
from venice.push.formats import FORMATS

__all__ = ["push"]

ENGINES = ("local", "spark")


@click.command("push")
@controller_option
@click.option("--store", required=True, help="Store to push into.")
@click.option("--input", "input_path", help="Data file (.jsonl, .csv, .avro, .parquet, optionally .gz); with --engine spark also a directory, a glob or any URL Spark reads (hdfs://, s3a://).")
@click.option("--empty", is_flag=True, help="Push an empty version (clears the store) instead of a file.")
@click.option("--defer-swap", is_flag=True, help="Leave the new version ONLINE but not current, until `venice version swap`.")
@click.option("--key-field", default=None, help="Input field holding the key (default: key). Ignored for record keys, whose fields are taken by name.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from the file name).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar (it is only drawn on a terminal anyway).")
@click.option("--value-schema-id", type=Integer(1, 1_000_000), help="Write values with this registered value schema (default: the store's newest).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for the servers to finish ingesting after all data is written.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True, help="local: this process reads the file. spark: Apache Spark reads it and its executors write the records (pip install 'venice-py[spark]'; see docs/push.md).")
@click.option("--spark-master", default="local[*]", show_default=True, envvar="VENICE_SPARK_MASTER", show_envvar=True, help="With --engine spark: the Spark master URL (local[N], spark://HOST:PORT, yarn, k8s://...).")
@click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE", help="With --engine spark: a Spark setting (repeatable), e.g. spark.executor.memory=4g.")
@handle_errors
def push(
    controller: str,
    store: str,
    input_path: str | None,
    empty: bool,
    defer_swap: bool,
    key_field: str | None,
    fmt: str | None,
    no_progress: bool,
    value_schema_id: int | None,
    timeout_s: float,
    engine: str,
    spark_master: str,
    spark_conf: tuple[str, ...],
) -> None:
    """Push a data file into STORE as a new version; it goes live once every partition is ready."""
    import logging

    # Retries the producer logs while a broker moves a partition are not the user's business;
    # a failure that matters comes out as our error.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    if empty == (input_path is not None):
        raise click.UsageError("give either --input FILE or --empty")
    if engine == "spark":
        if value_schema_id is not None:
            raise click.UsageError("--value-schema-id goes with the local engine (a Spark push writes the newest schema)")
        if input_path is None:
            raise click.UsageError("--engine spark pushes an --input (use the local engine for --empty)")
        from venice.push.spark import run_spark_push

        # py4j logs a Ctrl-C during a Spark call as tracebacks on the root logger (through
        # logging.basicConfig); the push reports the interruption itself.
        logging.getLogger().addHandler(logging.NullHandler())
        summary = run_spark_push(
            controller, store, input_path, master=spark_master, conf=_spark_settings(spark_conf), fmt=fmt,
            key_field=key_field, defer_swap=defer_swap, progress=not no_progress, timeout_s=timeout_s,
        )
    else:
        if spark_conf or spark_master != "local[*]":
            raise click.UsageError("--spark-master and --spark-conf go with --engine spark")
        from venice.push.job import run_push
        from venice.push.nopandas import leave_pandas_out

        leave_pandas_out()  # pyarrow would import all of pandas (0.3-0.7 s) that a file push never uses
        summary = run_push(
            controller, store, input_path, defer_swap=defer_swap, key_field=key_field, fmt=fmt,
            progress=not no_progress, timeout_s=timeout_s, value_schema_id=value_schema_id, token=cli_token(),
        )
    click.echo(summary.describe())
    if defer_swap:
        click.echo(
            f"v{summary.version} is ONLINE but not current: "
            f"venice version swap --store {store} --version {summary.version}"
        )



def _spark_settings(pairs: tuple[str, ...]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--spark-conf takes KEY=VALUE, got {pair!r}")
        settings[key.strip()] = value
    return settings
