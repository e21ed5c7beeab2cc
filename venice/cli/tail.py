"""``venice tail``: print a store's changes as JSON lines, as they are applied.

Each change is one line ``{"key", "value" (null: deleted), "version", "partition",
"offset", "position"}``; a version swap is ``{"event": "version-swap", "old", "new",
"position"}``. ``position`` resumes after that line: ``venice tail --since POSITION``.
Without ``--since`` it starts at the tail (only changes from now on). Values are in the
store's newest value schema; bytes print as base64 text.
"""

from __future__ import annotations

import sys
import time

import click
import orjson

from venice.cli.params import Integer, Seconds
from venice.cli.store import cli_token, controller_option, handle_errors
from venice.schema import json_default

__all__ = ["tail"]


@click.command("tail")
@controller_option
@click.option("--store", required=True)
@click.option("--since", metavar="POSITION", help="Resume after this position (a line's \"position\"); default: the tail.")
@click.option("--max-events", type=Integer(1, 1 << 62), help="Stop after this many lines.")
@click.option("--idle-timeout", type=Seconds(0.0, 365 * 86400), help="Stop after this many seconds without a change.")
@handle_errors
def tail(controller: str, store: str, since: str | None, max_events: int | None, idle_timeout: float | None) -> None:
    """Print the changes of STORE (puts, deletes, updates' results, version swaps) as JSON lines."""
    from venice.changes import Change, ChangeConsumer

    with ChangeConsumer(controller, store, since=since, token=cli_token()) as consumer:
        click.echo(f"tailing {store} from {'position ' + since[:40] if since else 'now'} (position {consumer.position})", err=True)
        printed = 0
        last = time.monotonic()
        while max_events is None or printed < max_events:
            wait = 0.5 if idle_timeout is None else max(0.0, min(0.5, last + idle_timeout - time.monotonic()))
            event = consumer.poll(timeout=wait)
            if event is None:
                if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    break
                continue
            last = time.monotonic()
            if isinstance(event, Change):
                line = {"key": event.key, "value": event.value, "version": event.version, "partition": event.partition,
                        "offset": event.offset, "position": event.position}
            else:
                line = {"event": "version-swap", "old": event.old, "new": event.new, "position": event.position}
            sys.stdout.buffer.write(orjson.dumps(line, default=json_default) + b"\n")
            sys.stdout.flush()
            printed += 1
