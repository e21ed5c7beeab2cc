"""``--log-format text|json`` for the long-running parts (see :mod:`venice.logs`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from venice.logs import LOG_FORMATS, configure

__all__ = ["log_format_option"]

Command = Callable[..., Any]


def log_format_option(part: Callable[[dict[str, Any]], str]) -> Callable[[Command], Command]:
    """Adds ``--log-format`` (``VENICE_LOG_FORMAT``) and sets logging up before the command
    runs; ``part(options)`` names the process in every line (e.g. ``server:7001``)."""
    option = click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        show_default=True,
        envvar="VENICE_LOG_FORMAT",
        help="Log lines as readable text, or one JSON object per line (fields: ts, level, part, message, store, version, partition, ...).",
    )

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def with_logging(**kwargs: Any) -> Any:
            configure(part(kwargs), kwargs.pop("log_format"))
            return command(**kwargs)

        wrapped: Command = option(with_logging)
        return wrapped

    return decorate
