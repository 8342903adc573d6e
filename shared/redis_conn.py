"""Redis connections configured for a job queue: retries, time-outs, keep-alive, and clear errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.errors import RedisUnavailable
from shared.settings import Settings

# redis-py 8 does no retries by default and times out sockets at 5 s (see ../ARCHITECTURE.md): set both.
SOCKET_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 3.0


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# Who retries what (see ARCHITECTURE.md, "A job's life"):
# - redis-py re-sends a command only after a ConnectionError (refused, reset, closed: a few quick tries, so a
#   restarted server or a dropped idle connection is invisible). Never after a TimeoutError: a command that
#   timed out may still be queued in a stalled server (SIGSTOP, VM pause, long fork), and re-sending it makes
#   Redis run it twice.
# - Ferry retries itself, above redis-py, where losing the command would lose work: worker processes and the
#   supervisor keep a job's outcome or claim in memory and send the same script (same execution id) again
#   until Redis answers (services/worker/outage.py). The lifecycle scripts are idempotent, so a command that
#   reached Redis twice either way (a ConnectionError after the server ran it, a time-out, Ferry's retry)
#   changes state once. Everything else (status reads, listings) fails with RedisUnavailable at once.
RETRY_ATTEMPTS = 3
RETRY_ON = [redis.ConnectionError]


def connect(url: str, **overrides: Any) -> redis.Redis:
    """A client for `url`; commands retry briefly on connection errors, never on time-outs (see above)."""
    options: dict[str, Any] = dict(
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRY_ATTEMPTS),
        retry_on_error=RETRY_ON,
    )
    options.update(overrides)
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise RedisUnavailable(f"FERRY_REDIS_URL={redact(url)!r} is not a Redis URL ({exc}); use redis://HOST:6379/0") from exc


def connect_checked(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for the configured server, pinged once so a bad URL fails here with one clear line."""
    url = settings.resolved_redis_url()
    conn = connect(url, **overrides)
    ping(conn, url)
    return conn


def ping(conn: redis.Redis, url: str) -> None:
    try:
        conn.ping()
    except redis.RedisError as exc:
        raise unavailable(url, exc) from exc


def unavailable(url: str, exc: BaseException) -> RedisUnavailable:
    """The error to raise when Redis at `url` fails: names the URL, the cause and the fix."""
    return RedisUnavailable(
        f"cannot reach Redis at {redact(url)} ({exc.__class__.__name__}: {exc}); "
        "start Redis there or point FERRY_REDIS_URL at a running server (`ferry up` starts a private one)"
    )
