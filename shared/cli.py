"""CLI helpers every entry point shares (admin CLI, `ferry worker`, `ferry producer`): exit codes, errors, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import redis
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from shared.client import Client
from shared.errors import FerryError
from shared.redis_conn import unavailable
from shared.settings import Settings, get_settings

# Exit codes (documented in README.md and `ferry --help`):
EXIT_OK = 0
EXIT_FAILED = 1  # the job failed or was cancelled; or an unexpected error
EXIT_USAGE = 2  # bad input or settings
EXIT_REDIS = 3  # Redis unreachable
EXIT_NOT_FOUND = 4  # no such job, task or object
EXIT_CONFLICT = 5  # the job's state forbids the action
EXIT_SHM_FULL = 6  # the node's shared memory cannot hold an object
EXIT_PENDING = 7  # waited, and the job is still not done

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a FerryError into one red line and its exit code: no traceback for a user's mistake."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FerryError as exc:
            _fail(exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # from Admin, ObjectStore or raw commands
            _fail(unavailable(_redis_url(), exc))

    return wrapper


def _redis_url() -> str:
    try:
        return get_settings().resolved_redis_url()
    except FerryError:
        return "the configured server"


def _fail(exc: FerryError) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code) from None


def settings() -> Settings:
    return get_settings()


def client() -> Client:
    return Client(settings=get_settings())


def print_json(value: Any) -> None:
    """One JSON document on stdout, for scripts."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
