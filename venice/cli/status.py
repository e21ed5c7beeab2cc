"""``venice status``: the cluster on one screen (servers, stores, versions, pushes, routers).

One ``GET /overview`` from the controller, drawn as plain tables; states are colored on
a terminal (click drops the colors in a pipe). ``--json`` prints the answer as it came.

Not ``rich``: with it installed, ``import httpx`` (so ``import venice``, every CLI
command and every part) also loads httpx's own command line, rich and pygments: about
80 ms more per process start on this machine, for colors click already draws.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click
import orjson

from venice.cli.store import cli_token, controller_option, handle_errors
from venice.controller_client import ControllerClient

__all__ = ["render", "status"]

_COLORS = {
    "live": "green", "draining": "yellow", "dead": "red",
    "ONLINE": "green", "STARTED": "cyan", "ERROR": "red", "KILLED": "red", "RETIRED": "bright_black",
}


def _color(text: str, state: str) -> str:
    color = _COLORS.get(state)
    return click.style(text, fg=color, bold=state in ("dead", "ERROR")) if color else text


def _table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> list[str]:
    """Rows of (text, state-for-color) cells, padded on their plain text."""
    widths = [max([len(h)] + [len(row[i][0]) for row in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [_color(text, state) + " " * (w - len(text)) for (text, state), w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _versions(store: dict[str, Any]) -> str:
    parts = []
    for version in store["versions"]:
        if version["status"] == "RETIRED":
            continue
        text = f"v{version['version']}{'*' if version['current'] else ''} {version['status']}"
        progress = version.get("progress")
        if progress and version["status"] == "STARTED":
            text += f" ({progress['replicated_partitions']}/{progress['partitions']} partitions fully ready, {progress['records_applied']:,} records)"
        parts.append(text)
    return ", ".join(parts) or "-"


def _versions_state(store: dict[str, Any]) -> str:
    statuses = {v["status"] for v in store["versions"]}
    for state in ("ERROR", "STARTED"):
        if state in statuses:
            return state
    return ""


def _lag(store: dict[str, Any]) -> str:
    lags = [
        r["rt_lag"]
        for v in store["versions"]
        if v["current"]
        for rows in v.get("replicas", {}).values()
        for r in rows
        if r["rt_lag"] is not None
    ]
    return f"{max(lags):,}" if lags else "-"


def render(view: dict[str, Any], controller_url: str) -> list[str]:
    """Lines of the screen for an ``/overview`` answer (with color codes)."""
    servers = view["servers"]
    counts = [(sum(1 for s in servers if s["state"] == state), state) for state in ("live", "draining", "dead")]
    summary = ", ".join(_color(f"{n} {state}", state if n else "") for n, state in counts)
    lines = [f"controller {controller_url}  generation {view['generation']}  servers: {summary}", ""]
    if servers:
        lines += _table(
            ("server", "url", "state", "heartbeat", "replicas"),
            [
                [(s["server_id"], ""), (s["url"], ""), (s["state"], s["state"]), (_age(s["heartbeat_age_s"]), ""), (str(s["replicas"]), "")]
                for s in servers
            ],
        )
    else:
        lines.append("no servers registered")
    lines.append("")
    if view["stores"]:
        lines += _table(
            ("store", "current", "partitions, R", "rt lag", "versions (* current)"),
            [
                [
                    (store["name"] + (" (hybrid)" if store["hybrid"] else ""), ""),
                    ("-" if store["current_version"] is None else f"v{store['current_version']}", ""),
                    (f"{store['partitions']}, {store['replication_factor']}", ""),
                    (_lag(store) if store["hybrid"] else "", ""),
                    (_versions(store), _versions_state(store)),
                ]
                for store in view["stores"]
            ],
        )
    else:
        lines.append("no stores")
    routers = view.get("routers") or []
    if routers:
        lines.append("")
        lines += _table(
            ("router", "state", "reads/s", "p99"),
            [
                [
                    (r["url"], ""),
                    ("live", "live") if r["up"] else ("unreachable", "dead"),
                    ("-" if r.get("reads_per_s") is None else f"{r['reads_per_s']:,.1f}", ""),
                    ("-" if r.get("p99_ms") is None else f"{r['p99_ms']:g} ms", ""),
                ]
                for r in routers
            ],
        )
    lines += ["", f"as of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(view['time']))}"]
    return lines


@click.command()
@controller_option
@click.option("--json", "as_json", is_flag=True, help="Print the controller's /overview answer as JSON.")
@handle_errors
def status(controller: str, as_json: bool) -> None:
    """One-screen summary of the cluster: servers, stores, versions, pushes, routers.
    A closed cluster needs a monitor or admin token (--token or VENICE_TOKEN)."""
    with ControllerClient(controller, token=cli_token()) as client:
        view = client.overview()
    if as_json:
        click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return
    for line in render(view, controller):
        click.echo(line)
