"""Command-line number types with the platform's one strict grammar (venice.schema):
ASCII digits only, finite, within bounds. click's own IntRange/FloatRange take ``１``
(a full-width digit) and ``nan``, which then fail later and less clearly."""

from __future__ import annotations

import math
from typing import Any

import click

from venice.schema import parse_double, parse_integer

__all__ = ["Integer", "Seconds"]


class Integer(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """An integer from ``low`` to ``high``."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = parse_integer(str(value))
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not an integer (ASCII digits)", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{number} is not in the range {self.low}..{self.high}", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:  # click >= 8.2 passes ctx=
        return f"INTEGER {self.low}..{self.high}"


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A finite number of seconds from ``low`` to ``high``."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = parse_double(str(value))
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{number:g} is not in the range {self.low:g}..{self.high:g} seconds", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:  # click >= 8.2 passes ctx=
        return f"SECONDS {self.low:g}..{self.high:g}"
