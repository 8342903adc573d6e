"""What every admin command shares: the decorator that turns errors into exit codes, the client, and output.

Presentation lives here, with the CLI (rich consoles, tables, the one JSON printer); shared/ carries none of it.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.cli import handle_errors, settings
from shared.client import Client
from shared.errors import InvalidRequest
from shared.redis_conn import probe
from shared.settings import get_settings

console = Console()
err_console = Console(stderr=True)

# An admin command: FerryErrors and Redis connection failures become one red line and their exit code.
command = handle_errors

# What every listing says when it is empty, and the one hint for "no node" (`ferry info`, `ferry demo`, ...).
NO_NODE = "no worker node has registered; start one with `ferry worker` (or run `ferry up`)"


def open_client() -> Client:
    """The client for the configured Redis (FERRY_REDIS_URL, else a running `ferry up`), probed: a wrong URL fails
    here, within PROBE_TIMEOUT_S, whatever the connection's retry policy."""
    config = get_settings()
    url = config.resolved_redis_url()
    probe(url)
    return Client(url, settings=config)


def empty(what: str, where: str = "") -> None:
    """The one empty-state line: `no <what>[ <where>]`, on stdout, exit 0 (nothing to act on is not an error)."""
    console.print(f"no {what}{f' {where}' if where else ''}", highlight=False)


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


def print_json(value: Any) -> None:
    """The one JSON printer: one document on stdout (indented when it is a container), for people and for `jq`.

    Models are dumped as the API dumps them (`model_dump(mode="json")`), so a thing has one JSON shape everywhere.
    """
    indent = 2 if isinstance(value, (dict, list, tuple, BaseModel)) else None
    sys.stdout.write(json.dumps(to_json(value), indent=indent, default=str) + "\n")


def to_json(value: Any) -> Any:
    """Models (also inside lists and dicts) as their JSON form."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def human_bytes(n: float) -> str:
    """`1.5 MiB` style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def table(*columns: str, title: str | None = None) -> Table:
    """A plain table with Ferry's look: bold headers, numbers right-aligned by the caller."""
    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=None, pad_edge=False)
    for name in columns:
        t.add_column(name, justify="right" if name.startswith("#") or name in NUMERIC_COLUMNS else "left",
                     no_wrap=name in NO_WRAP_COLUMNS)
    return t


NO_WRAP_COLUMNS = {
    "job", "object", "segment", "node", "worker process", "task", "queue", "status", "heartbeat", "ended",
}
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


__all__ = [
    "NO_NODE", "ago", "command", "console", "empty", "err_console", "esc", "fail", "human_bytes", "invalid", "note",
    "open_client", "print_json", "settings", "short", "styled_status", "table",
]
