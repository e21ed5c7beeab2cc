"""``venice store``: create, list, describe, update and delete stores on the controller,
and register new value schemas.

Also home of the small helpers the other commands share (the ``--controller`` option
and the error handling that turns every :class:`VeniceError` into ``error: <message>``
on stderr with exit code 1, never a traceback: a user error is a message, not a bug).
Every call goes through :class:`venice.controller_client.ControllerClient`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from venice.cli.params import Integer, Seconds
from venice.controller_client import ControllerClient
from venice.errors import SchemaError, VeniceError
from venice.push.formats import FORMATS
from venice.schema import parse_schema, validate_schema

__all__ = ["CliError", "cli_token", "controller_option", "handle_errors", "load_schema", "store"]

DEFAULT_CONTROLLER = "http://127.0.0.1:5050"
DEFAULT_PARTITIONS = 4
DEFAULT_REPLICATION_FACTOR = 1
"""One copy per partition: what a single-server dev cluster can hold. Production stores
should ask for 2 or more explicitly."""

F = TypeVar("F", bound=Callable[..., Any])
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class CliError(click.ClickException):
    """A failure the user can act on: ``error: <message>`` and exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def handle_errors(command: F) -> F:
    """Turn VeniceError (and Ctrl-C) into a one-line message instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VeniceError as exc:
            raise CliError(exc.message) from exc
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


_TOKEN_META = "venice.token"


def _keep_token(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[_TOKEN_META] = value or None


_controller_url_option = click.option(
    "--controller",
    envvar="VENICE_CONTROLLER_URL",
    default=DEFAULT_CONTROLLER,
    show_default=True,
    show_envvar=True,
    help="Controller base URL.",
)
token_option = click.option(
    "--token",
    envvar="VENICE_TOKEN",
    show_envvar=True,
    expose_value=False,
    callback=_keep_token,
    help="Bearer token (venice token create); prefer the environment variable: a flag shows in ps.",
)


def controller_option(command: F) -> F:
    """``--controller URL`` (a parameter of the command) and ``--token`` (read with :func:`cli_token`)."""
    return token_option(_controller_url_option(command))


def cli_token() -> str | None:
    """The ``--token`` / ``VENICE_TOKEN`` of the command running."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.find_root().meta.get(_TOKEN_META) or ctx.meta.get(_TOKEN_META)


def load_schema(text: str) -> Any:
    """A schema given on the command line: a primitive name, Avro JSON text, or ``@path``.

    Returns what the controller takes (a primitive name or the parsed JSON object),
    after checking locally that it is a valid Avro schema.
    """
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read schema file {path}: {exc.strerror or exc}") from None
    stripped = text.strip()
    if stripped.isidentifier():  # a bare name: only the primitives stand on their own
        if stripped not in _PRIMITIVES:
            raise SchemaError(f"{stripped!r} is not an Avro primitive type ({', '.join(sorted(_PRIMITIVES))})")
        return stripped
    parse_schema(stripped)  # raises SchemaError with the reason
    schema = orjson.loads(stripped)
    validate_schema(schema)  # what the controller checks, told before the request
    return schema


MAX_VALUE_SIZE = Integer(1, 4 << 20)
"""--max-value-size: bytes, up to what a version topic can carry (4 MiB; see docs/failure-model.md)."""
REWIND_SECONDS = Integer(0, 30 * 86400)
OFFSET_LAG = Integer(0, 10**9)


def _pretty(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode()


def _hybrid_options(command: F) -> F:
    """``--hybrid-rewind-seconds`` and ``--hybrid-offset-lag`` (create and update)."""
    command = click.option(
        "--hybrid-offset-lag", "offset_lag", type=OFFSET_LAG,
        help="Hybrid: a replica serves once at most this many real-time records are left to apply. Give with --hybrid-rewind-seconds.",
    )(command)
    command = click.option(
        "--hybrid-rewind-seconds", "rewind_seconds", type=REWIND_SECONDS,
        help="Make the store hybrid: a new version replays real-time writes from this many seconds before its push. Give with --hybrid-offset-lag.",
    )(command)
    return command


def _hybrid(rewind_seconds: int | None, offset_lag: int | None) -> dict[str, int] | None:
    if (rewind_seconds is None) != (offset_lag is None):
        raise click.UsageError("give --hybrid-rewind-seconds and --hybrid-offset-lag together")
    if rewind_seconds is None or offset_lag is None:
        return None
    return {"rewind_seconds": rewind_seconds, "offset_lag": offset_lag}


def _describe_hybrid(info: dict[str, Any]) -> str:
    hybrid = info.get("hybrid")
    if not hybrid:
        return "no (batch-only)"
    return (
        f"rewind {hybrid.get('rewind_seconds')} s, offset lag {hybrid.get('offset_lag')}, "
        f"real-time topic {hybrid.get('real_time_topic')}"
    )


@click.group("store")
def store() -> None:
    """Create, list, describe, update and delete stores; add value schemas."""


@store.command("create")
@controller_option
@click.option("--name", required=True, help="Store name.")
@click.option("--key-schema", help="Key schema: a primitive name (long, string...), Avro JSON text, or @FILE.")
@click.option("--value-schema", help="Value schema: Avro JSON text, @FILE, or a primitive name.")
@click.option("--infer-from", "infer_from", type=click.Path(dir_okay=False), help="Infer both schemas from this input file.")
@click.option("--key-field", default="key", show_default=True, help="With --infer-from: the field holding the key (a,b for a record key).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="With --infer-from: input format (default: from the file name).")
@click.option("--partitions", default=DEFAULT_PARTITIONS, show_default=True, type=Integer(1, 1024))
@click.option("--replication-factor", default=DEFAULT_REPLICATION_FACTOR, show_default=True, type=Integer(1, 32))
@click.option("--max-value-size", "max_value_bytes", type=MAX_VALUE_SIZE, help="Largest serialized value in bytes a push may write (default 1 MiB).")
@_hybrid_options
@click.option("--write-compute", is_flag=True, help="Accept partial updates (hybrid stores with a record value schema).")
@handle_errors
def create(
    controller: str,
    name: str,
    key_schema: str | None,
    value_schema: str | None,
    infer_from: str | None,
    key_field: str,
    fmt: str | None,
    partitions: int,
    replication_factor: int,
    max_value_bytes: int | None,
    rewind_seconds: int | None,
    offset_lag: int | None,
    write_compute: bool,
) -> None:
    """Create a store from given schemas, or with schemas inferred from a data file."""
    hybrid = _hybrid(rewind_seconds, offset_lag)
    if write_compute and hybrid is None:
        raise click.UsageError("--write-compute needs a hybrid store: give --hybrid-rewind-seconds and --hybrid-offset-lag")
    if infer_from is not None:
        if key_schema or value_schema:
            raise click.UsageError("give either --infer-from or --key-schema/--value-schema, not both")
        from venice.push.infer import infer_schemas

        key, value = infer_schemas(infer_from, key_field, fmt=fmt, store_name=name)
        click.echo(f"inferred key schema: {orjson.dumps(key).decode()}")
        click.echo(f"inferred value schema:\n{_pretty(value)}")
    else:
        if not key_schema or not value_schema:
            raise click.UsageError("give --key-schema and --value-schema, or --infer-from FILE")
        key, value = load_schema(key_schema), load_schema(value_schema)
    body: dict[str, Any] = {
        "name": name, "key_schema": key, "value_schema": value, "partitions": partitions,
        "replication_factor": replication_factor,
    }
    if max_value_bytes is not None:
        body["max_value_bytes"] = max_value_bytes
    if hybrid is not None:
        body["hybrid"] = hybrid
    if write_compute:
        body["write_compute"] = True
    with ControllerClient(controller, token=cli_token()) as client:
        info = client.create_store(body)
    click.echo(f"created store {name} ({partitions} partitions, replication factor {replication_factor})")
    if info.get("hybrid"):
        click.echo(f"hybrid: {_describe_hybrid(info)}" + ("; write compute on" if info.get("write_compute") else ""))


@store.command("list")
@controller_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON descriptions.")
@handle_errors
def list_(controller: str, as_json: bool) -> None:
    """List stores with their current version."""
    with ControllerClient(controller, token=cli_token()) as client:
        stores = client.list_stores()
    if as_json:
        click.echo(_pretty(stores))
        return
    if not stores:
        click.echo("no stores")
        return
    rows = [("NAME", "CURRENT", "PARTITIONS", "RF", "HYBRID", "VERSIONS")]
    for item in sorted(stores, key=lambda s: str(s.get("name"))):
        versions = ",".join(f"{v.get('version')}:{v.get('status')}" for v in item.get("versions") or []) or "-"
        current = item.get("current_version")
        rows.append((str(item.get("name")), "-" if current is None else f"v{current}",
                     str(item.get("partitions")), str(item.get("replication_factor")),
                     "yes" if item.get("hybrid") else "no", versions))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@store.command("describe")
@controller_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON description.")
@handle_errors
def describe(controller: str, name: str, as_json: bool) -> None:
    """Show a store: schemas, partitioning, hybrid settings and versions (with their
    real-time lag, poison pills and real-time records lost to retention)."""
    with ControllerClient(controller, token=cli_token()) as client:
        info = client.get_store(name)
    if as_json:
        click.echo(_pretty(info))
        return
    current = info.get("current_version")
    click.echo(f"store:              {info.get('name')}")
    click.echo(f"partitions:         {info.get('partitions')}")
    click.echo(f"replication factor: {info.get('replication_factor')}")
    click.echo(f"current version:    {'none (push data first)' if current is None else current}")
    click.echo(f"max value size:     {info.get('max_value_bytes')} bytes")
    click.echo(f"hybrid:             {_describe_hybrid(info)}")
    click.echo(f"write compute:      {'on' if info.get('write_compute') else 'off'}")
    click.echo(f"reads:              {'private (reader token)' if info.get('private') else 'public'}"
               + (f", quota {info['read_quota']}/s per router" if info.get("read_quota") else ""))
    click.echo(f"incarnation:        {info.get('incarnation')}")
    click.echo(f"key schema:         {orjson.dumps(info.get('key_schema')).decode()}")
    for schema_id, schema in sorted((info.get("value_schemas") or {}).items(), key=lambda kv: int(kv[0])):
        click.echo(f"value schema {schema_id}:\n{_pretty(schema)}")
    versions = info.get("versions") or []
    click.echo("versions:" if versions else "versions:           none")
    for version in versions:
        marker = " (current)" if version.get("version") == current else ""
        reason = f": {version['reason']}" if version.get("reason") else ""
        line = f"  v{version.get('version')} {version.get('status')}{marker}{reason}"
        if info.get("hybrid") and version.get("status") in ("STARTED", "ONLINE"):
            lag = version.get("rt_lag")
            line += f"; real-time lag {'-' if lag is None else lag}"
            line += ", applying real-time writes" if version.get("consume_rt") else ", not applying real-time writes (backup)"
        if version.get("poison_pills"):
            line += f"; {version['poison_pills']} poison pill(s) skipped"
        if version.get("rt_lost"):
            line += f"; {version['rt_lost']} real-time record(s) lost to retention (deleted before they were applied)"
        click.echo(line)


@store.command("update")
@controller_option
@click.argument("name")
@click.option("--keep-versions", type=Integer(1, 100), help="ONLINE versions to keep: the current one plus backups (default 2).")
@click.option("--push-timeout", "push_timeout_s", type=Seconds(1, 7 * 86400), help="Seconds a push may take before its version goes to ERROR (default 3600).")
@click.option("--max-value-size", "max_value_bytes", type=MAX_VALUE_SIZE, help="Largest serialized value in bytes a push may write (default 1 MiB); applies to the next push.")
@_hybrid_options
@click.option("--no-hybrid", is_flag=True, help="Make the store batch-only again: its real-time topic is deleted (and write compute turned off).")
@click.option("--write-compute/--no-write-compute", "write_compute", default=None, help="Accept partial updates, or stop accepting them.")
@click.option("--private/--public", "private", default=None, help="Private: reads need a reader token (docs/security.md); public: anyone may read.")
@click.option("--read-quota", type=Integer(1, 10_000_000), help="Reads per second each router serves of the store (batch keys count one each); beyond it 429.")
@click.option("--no-read-quota", is_flag=True, help="Remove the store's read quota.")
@handle_errors
def update(
    controller: str,
    name: str,
    keep_versions: int | None,
    push_timeout_s: float | None,
    max_value_bytes: int | None,
    rewind_seconds: int | None,
    offset_lag: int | None,
    no_hybrid: bool,
    write_compute: bool | None,
    private: bool | None,
    read_quota: int | None,
    no_read_quota: bool,
) -> None:
    """Change a store's retention, push timeout, value size limit, hybrid settings, write
    compute, privacy or read quota."""
    hybrid = _hybrid(rewind_seconds, offset_lag)
    if no_hybrid and hybrid is not None:
        raise click.UsageError("give either --no-hybrid or the --hybrid-... settings, not both")
    changes: dict[str, Any] = {
        k: v
        for k, v in {"keep_versions": keep_versions, "push_timeout_s": push_timeout_s, "max_value_bytes": max_value_bytes,
                     "write_compute": write_compute, "private": private}.items()
        if v is not None
    }
    if hybrid is not None or no_hybrid:
        changes["hybrid"] = hybrid
    if read_quota is not None and no_read_quota:
        raise click.UsageError("give either --read-quota or --no-read-quota, not both")
    if read_quota is not None or no_read_quota:
        changes["read_quota"] = read_quota
    if not changes:
        raise click.UsageError(
            "nothing to change: give --keep-versions, --push-timeout, --max-value-size, --hybrid-rewind-seconds with "
            "--hybrid-offset-lag, --no-hybrid, --[no-]write-compute, --private/--public and/or --[no-]read-quota"
        )
    with ControllerClient(controller, token=cli_token()) as client:
        info = client.update_store(name, **changes)
    click.echo(
        f"store {name}: keeps {info['keep_versions']} version(s), push timeout {info['push_timeout_s']:g} s, "
        f"values up to {info['max_value_bytes']} bytes"
    )
    click.echo(f"hybrid: {_describe_hybrid(info)}; write compute {'on' if info.get('write_compute') else 'off'}")
    quota = info.get("read_quota")
    click.echo(f"{'private' if info.get('private') else 'public'}; read quota {'none' if quota is None else f'{quota}/s per router'}")


@store.command("add-value-schema")
@controller_option
@click.argument("name")
@click.option("--value-schema", required=True, help="The new value schema: Avro JSON text, @FILE, or a primitive name.")
@handle_errors
def add_value_schema(controller: str, name: str, value_schema: str) -> None:
    """Register the next value schema of a store; prints its id.

    It must be fully compatible with every schema the store has (it reads their data and
    they read its data: a new field needs a default). A schema already registered is not
    added again: its id is printed.
    """
    schema = load_schema(value_schema)
    with ControllerClient(controller, token=cli_token()) as client:
        known = {str(k) for k in (client.get_store(name).get("value_schemas") or {})}
        answer = client.add_value_schema(name, schema)
    schema_id = answer["id"]
    click.echo(schema_id)
    if str(schema_id) in known:
        click.echo(f"store {name} already has this schema as value schema {schema_id}", err=True)
    else:
        click.echo(f"registered value schema {schema_id} of store {name}", err=True)


@store.command("delete")
@controller_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def delete(controller: str, name: str, yes: bool) -> None:
    """Delete a store with all its versions and data."""
    with ControllerClient(controller, token=cli_token()) as client:
        if not yes:
            client.get_store(name)  # fail with "does not exist" before asking
            click.confirm(f"delete store {name!r} and all its data?", abort=True)
        client.delete_store(name)
    click.echo(f"deleted store {name}")
