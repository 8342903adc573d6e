"""What every admin command shares: the decorator that turns errors into exit codes, the client, and output helpers."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from shared.cli import client as _client
from shared.cli import err_console, handle_errors
from shared.client import Client
from shared.errors import InvalidRequest

P = ParamSpec("P")
R = TypeVar("R")


# An admin command: FerryErrors and Redis connection failures become one red line and their exit code.
command = handle_errors


def open_client() -> Client:
    """The client for the configured Redis (FERRY_REDIS_URL, else a running `ferry up`)."""
    return _client()


def fail(message: str, code: int, style: str = "red", prefix: str = "error: ") -> NoReturn:
    """Print one line on stderr and exit with `code` (for outcomes that are not FerryErrors, e.g. a failed job)."""
    err_console.print(f"[{style}]{prefix}[/{style}]{escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A remark for people, on stderr, so stdout stays the one thing a script reads."""
    err_console.print(f"[dim]{escape(message)}[/dim]", highlight=False, soft_wrap=True)


def invalid(exc: ValidationError, what: str) -> InvalidRequest:
    """A pydantic ValidationError as one InvalidRequest line naming each bad field."""
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or what}: {err['msg']}" for err in exc.errors())
    return InvalidRequest(f"invalid {what}: {problems}")


def write_json(value: Any) -> None:
    """One JSON document on stdout (pretty-printed when it is a container), for people and for `jq`."""
    indent = 2 if isinstance(value, (dict, list)) else None
    sys.stdout.write(json.dumps(value, indent=indent, default=str) + "\n")


def table(*columns: str, title: str | None = None) -> Table:
    """A plain table with Ferry's look: bold headers, numbers right-aligned by the caller."""
    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=None, pad_edge=False)
    for name in columns:
        t.add_column(name, justify="right" if name.startswith("#") or name in NUMERIC_COLUMNS else "left",
                     no_wrap=name in NO_WRAP_COLUMNS)
    return t


NO_WRAP_COLUMNS = {"job", "object", "segment", "node", "worker", "task", "queue", "status", "heartbeat", "ended"}
NUMERIC_COLUMNS = {
    "queued", "started", "finished", "failed", "canceled", "processes", "shm budget", "resident", "from redis",
    "from shm", "hits", "misses", "evictions", "size", "ttl", "ok", "attempts", "pid",
}


def esc(value: object) -> str:
    """Data for a table cell or a printed line: brackets in it are text, never rich markup."""
    return escape(str(value))


STATUS_STYLE = {"finished": "green", "failed": "red", "canceled": "yellow", "started": "cyan", "queued": "blue"}


def styled_status(status: object) -> str:
    """A job status as colored markup."""
    text = str(getattr(status, "value", status))
    style = STATUS_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else escape(text)


def ago(moment: datetime | float | None) -> str:
    """`3s ago` style age of a datetime or unix time; `-` when unknown."""
    if moment is None or moment == 0:
        return "-"
    seconds = time.time() - (moment.timestamp() if isinstance(moment, datetime) else moment)
    if seconds < 0:
        return "now"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def short(value: Any, limit: int = 60) -> str:
    """A one-line JSON rendering of `value`, cut to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["command", "fail", "invalid", "note", "open_client", "write_json", "table", "esc", "styled_status", "ago", "short"]
