"""How every entry point (`ferry`, `ferry worker`, `ferry producer`) ends on an error: one line and an exit code.

Only this: no typer, no rich, no client. What the admin CLI prints (tables, JSON) lives with it in services/admin/.
The exit codes themselves are named in shared/errors.py.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import redis

from shared.errors import EXIT_INTERNAL, FerryError
from shared.redis_conn import unavailable
from shared.settings import Settings, get_settings

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a FerryError into one red line and its exit code: no traceback for a user's mistake.

    A Redis failure that reaches here raw (from RQ, say) becomes the same RedisUnavailable line as anywhere else;
    anything else is a bug: its traceback, then exit EXIT_INTERNAL (so that exit 1 keeps meaning "the job failed").
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FerryError as exc:
            fail(exc)
        except redis.ConnectionError as exc:  # also NotRedis; from RQ or raw commands
            fail(unavailable(_redis_url(), exc))
        except redis.TimeoutError as exc:
            fail(unavailable(_redis_url(), exc))
        except (SystemExit, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("click", "typer"):  # Exit, Abort, usage errors: typer's
                raise
            traceback.print_exc()
            error_line(f"unexpected {type(exc).__name__}; please report it with the traceback above")
            raise SystemExit(EXIT_INTERNAL) from None

    return wrapper


def fail(exc: FerryError) -> NoReturn:
    """Print the error's one line on stderr and exit with its code."""
    error_line(exc.message)
    raise SystemExit(exc.exit_code) from None


def error_line(message: str, prefix: str = "error: ", color: str = "31") -> None:
    """One line on stderr, its prefix colored on a terminal."""
    stream = sys.stderr
    if stream.isatty() and "NO_COLOR" not in os.environ:
        prefix = f"\x1b[{color}m{prefix}\x1b[0m"
    stream.write(f"{prefix}{' '.join(message.splitlines())}\n")
    stream.flush()


def _redis_url() -> str:
    try:
        return get_settings().resolved_redis_url()
    except FerryError:
        return "the configured server"


def settings() -> Settings:
    """The process's settings (a ConfigError naming FERRY_X when one is invalid)."""
    return get_settings()
