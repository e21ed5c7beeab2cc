"""``venice version``: list a store's versions, swap, roll back, kill a push."""

from __future__ import annotations

import datetime
from typing import Any

import click

from venice.cli.store import cli_token, controller_option, handle_errors
from venice.controller_client import ControllerClient

__all__ = ["version"]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@click.group("version")
def version() -> None:
    """List, swap, roll back and kill store versions."""


@version.command("list")
@controller_option
@click.option("--store", required=True)
@handle_errors
def list_(controller: str, store: str) -> None:
    """Every version of STORE with status, records, push time; * marks the current one."""
    with ControllerClient(controller, token=cli_token()) as client:
        versions: list[dict[str, Any]] = client.list_versions(store)
    if not versions:
        click.echo(f"store {store} has no versions yet")
        return
    rows = [("", "VERSION", "STATUS", "RECORDS", "PUSHED", "ONLINE", "REASON")]
    for v in versions:
        rows.append(
            (
                "*" if v.get("current") else "",
                str(v["version"]),
                str(v["status"]) + (" (deferred)" if v.get("defer_swap") and v["status"] == "ONLINE" and not v.get("current") else ""),
                "-" if v.get("records") is None else str(v["records"]),
                _when(v.get("created_at")),
                _when(v.get("online_at")),
                v.get("reason") or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@version.command("swap")
@controller_option
@click.option("--store", required=True)
@click.option("--version", "number", required=True, type=int, help="An ONLINE version to make current.")
@handle_errors
def swap(controller: str, store: str, number: int) -> None:
    """Make an ONLINE version current (roll forward, or to any kept version)."""
    with ControllerClient(controller, token=cli_token()) as client:
        info = client.swap(store, number)
    click.echo(f"{store}: current version is now v{info['current_version']}")


@version.command("rollback")
@controller_option
@click.option("--store", required=True)
@handle_errors
def rollback(controller: str, store: str) -> None:
    """Make the backup (the newest ONLINE version older than the current) current again."""
    with ControllerClient(controller, token=cli_token()) as client:
        info = client.rollback(store)
    click.echo(f"{store}: rolled back, current version is now v{info['current_version']}")


@version.command("kill")
@controller_option
@click.option("--store", required=True)
@click.option("--version", "number", required=True, type=int, help="A STARTED version (a running push).")
@handle_errors
def kill(controller: str, store: str, number: int) -> None:
    """Stop a running push: its version is KILLED and cleaned up; the current version stays."""
    with ControllerClient(controller, token=cli_token()) as client:
        client.kill(store, number)
    click.echo(f"{store}: version {number} killed")
