"""Log lines of the long-running parts: readable text by default, JSON for machines.

Events that matter are logged once each, with their subject as fields passed in
``extra`` (``store``, ``version``, ``partition``, ``server``, ``event``, ...)::

    log.info("push opened: %s v%d", store, n, extra={"event": "push_opened", "store": store, "version": n})

``--log-format text`` (the default) writes ``TIME PART LEVEL message  key=value ...``;
``--log-format json`` writes one JSON object per line: ``ts`` (ISO 8601, UTC), ``level``,
``part``, ``logger``, ``message``, the fields, and ``exception`` when there is one. Field
values that are not JSON types are written as text. A newline in a text-format field
value is escaped, so one event stays one line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

import orjson

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure"]

LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

# What every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "part": self.part,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, part: str) -> None:
        super().__init__(f"%(asctime)s {part} %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = fields_of(record)
        if not fields:
            return line
        text = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        head, newline, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head}  {text}{newline}{rest}"


def _text(value: Any) -> str:
    text = str(value)
    if any(c in text for c in " \n\r\"="):
        return orjson.dumps(text).decode()
    return text


def configure(part: str, log_format: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log line of this process to ``stream`` (stderr) in ``log_format``.
    Replaces whatever was configured before; later ``logging.basicConfig`` calls do nothing
    (the parts' ``run`` functions call it for when they are started without the CLI)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(part) if log_format == "json" else TextFormatter(part))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (a library's deprecation notice) become log lines too, so a JSON
    # log never has a stray plain-text line.
    logging.captureWarnings(True)
