"""Logging setup, called only by entry points (CLI commands, the producer, worker processes).

Two formats, chosen by FERRY_LOG_FORMAT: `text` (one readable line) and `json` (one JSON object per
line, for log shippers): `ts` (UTC, ISO 8601), `level`, `logger`, `message`, then any of the context
fields below that the call passed in `extra=` (a job's id, task, queue, node, worker and duration; a
request's method, path, status and duration), and `exc` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
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
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(FORMAT, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _configured_format() -> str:
    from shared.errors import FerryError
    from shared.settings import get_settings

    try:
        return get_settings().log_format
    except FerryError:  # invalid settings are reported by the caller, with the message that names them
        return "text"
