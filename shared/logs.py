"""Logging setup, called only by entry points (CLI commands, the producer, worker processes).

Two formats, chosen by FERRY_LOG_FORMAT: `text` (one readable line) and `json` (one JSON object per
line, for log shippers): `ts` (UTC, ISO 8601), `level`, `logger`, `message`, then any of the context
fields below that the call passed in `extra=` (a job's id, task, queue, node, worker and duration; a
request's method, path, status and duration), and `exc` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMATS = ("text", "json")

# The `extra=` keys a JSON line carries when a log call passes them (and only those: no stray attributes).
CONTEXT_FIELDS = ("job_id", "task", "queue", "node", "worker", "duration_s", "method", "path", "status", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on odd values (they become strings)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """FORMAT, with the time formatted once per second rather than once per line (the producer writes a line
    per request: at thousands a second, `strftime` was a measurable part of each)."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, super().formatTime(record, datefmt))
        return cached[1]


def configure(level: str = "INFO", fmt: str | None = None) -> None:
    """Set the root logger's level and format; `fmt` defaults to FERRY_LOG_FORMAT."""
    if fmt is None:
        fmt = _configured_format()
    if _configured_as(level, fmt):
        return  # a forked worker inherits its supervisor's setup: redoing it writes to every logger (~0.9 MB copied)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(FORMAT, datefmt="%H:%M:%S"))
    handler.ferry_format = fmt  # type: ignore[attr-defined]  # what _configured_as compares
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _configured_as(level: str, fmt: str) -> bool:
    """Whether the root logger already has this level and Ferry's one handler in this format, on today's stderr."""
    root = logging.getLogger()
    handlers = root.handlers
    ours = len(handlers) == 1 and getattr(handlers[0], "ferry_format", None) == fmt
    same_stream = ours and getattr(handlers[0], "stream", None) is sys.stderr
    return same_stream and root.level == logging.getLevelName(level.upper())


def _configured_format() -> str:
    from shared.errors import FerryError
    from shared.settings import get_settings

    try:
        return get_settings().log_format
    except FerryError:  # invalid settings are reported by the caller, with the message that names them
        return "text"
