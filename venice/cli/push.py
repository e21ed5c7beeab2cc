"""``venice push``: load a data file into a store as a new version."""

from __future__ import annotations

import click

from venice.cli.params import Integer
from venice.cli.store import controller_option, handle_errors
from venice.push.formats import FORMATS

__all__ = ["push"]


@click.command("push")
@controller_option
@click.option("--store", required=True, help="Store to push into.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), help="Data file (.jsonl, .csv, .avro, .parquet, optionally .gz).")
@click.option("--empty", is_flag=True, help="Push an empty version (clears the store) instead of a file.")
@click.option("--defer-swap", is_flag=True, help="Leave the new version ONLINE but not current, until `venice version swap`.")
@click.option("--key-field", default=None, help="Input field holding the key (default: key). Ignored for record keys, whose fields are taken by name.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from the file name).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar (it is only drawn on a terminal anyway).")
@click.option("--value-schema-id", type=Integer(1, 1_000_000), help="Write values with this registered value schema (default: the store's newest).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for the servers to finish ingesting after all data is written.")
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
) -> None:
    """Push a data file into STORE as a new version; it goes live once every partition is ready."""
    import logging

    from venice.push.job import run_push

    # Retries the producer logs while a broker moves a partition are not the user's business;
    # a failure that matters comes out as our error.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    if empty == (input_path is not None):
        raise click.UsageError("give either --input FILE or --empty")
    summary = run_push(
        controller, store, input_path, defer_swap=defer_swap, key_field=key_field, fmt=fmt,
        progress=not no_progress, timeout_s=timeout_s, value_schema_id=value_schema_id,
    )
    click.echo(summary.describe())
    if defer_swap:
        click.echo(
            f"v{summary.version} is ONLINE but not current: "
            f"venice version swap --store {store} --version {summary.version}"
        )
