"""``venice push``: load a data file into a store as a new version."""

from __future__ import annotations

import click

from venice.cli.store import controller_option, handle_errors
from venice.push.formats import FORMATS

__all__ = ["push"]


@click.command("push")
@controller_option
@click.option("--store", required=True, help="Store to push into.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False), help="Data file (.jsonl, .csv, .avro, .parquet, optionally .gz).")
@click.option("--key-field", default=None, help="Input field holding the key (default: key). Ignored for record keys, whose fields are taken by name.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from the file name).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar (it is only drawn on a terminal anyway).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for the servers to finish ingesting after all data is written.")
@handle_errors
def push(
    controller: str, store: str, input_path: str, key_field: str | None, fmt: str | None, no_progress: bool, timeout_s: float
) -> None:
    """Push a data file into STORE as a new version; it goes live once every partition is ready."""
    from venice.push.job import run_push

    summary = run_push(
        controller, store, input_path, key_field=key_field, fmt=fmt, progress=not no_progress, timeout_s=timeout_s
    )
    click.echo(summary.describe())
