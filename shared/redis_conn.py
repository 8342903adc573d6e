"""Redis connections configured for a job queue: retries, time-outs, keep-alive, and clear errors.

A wrong FERRY_REDIS_URL must fail within seconds, as one line that names the fix, whatever it points at:
- a malformed URL                      -> ConfigError (exit 2), before any connection;
- nothing listening (refused, no host) -> RedisUnavailable (exit 3);
- a server that is not Redis (HTTP)    -> RedisUnavailable naming what answered (redis-py raises
  `InvalidResponse`, which is not a ConnectionError: see NotRedis);
- a port that accepts and stays silent -> RedisUnavailable after HANDSHAKE_TIMEOUT_S. `socket_connect_timeout`
  covers only TCP; the handshake then waited `socket_timeout` x retries (244 s was seen): `_bounded_handshake`
  gives it its own short time-out.
`probe` checks a URL once, without retries, within PROBE_TIMEOUT_S: start-up paths call it (`connect_checked`).
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from shared.errors import ConfigError, RedisUnavailable
from shared.settings import Settings

# redis-py 8 does no retries by default and times out sockets at 5 s (see ../ARCHITECTURE.md): set both.
SOCKET_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 3.0
# The handshake (CLIENT SETINFO, AUTH, SELECT) is a few bytes each way: on a healthy server each answer takes well
# under a millisecond (a few on a far network), so 0.75 s of silence means the peer does not speak Redis or is
# stalled. It applies to new connections only, and retries multiply it, so it stays small (4 attempts: ~3.4 s).
HANDSHAKE_TIMEOUT_S = 0.75
# `probe`: TCP connect, handshake and PING together stay within this (the promise is one line within 5 s).
PROBE_TIMEOUT_S = 2.0
URL_FIX = "set FERRY_REDIS_URL=redis://HOST:6379/0 (a Redis server, not the API's http:// address)"


class NotRedis(redis.ConnectionError):
    """What answered at the URL does not speak Redis's protocol (an HTTP server, say).

    A ConnectionError, so that every place that turns connection failures into RedisUnavailable catches it.
    """


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


def _bounded_handshake(connection: AbstractConnection) -> None:
    """redis-py's own handshake, under HANDSHAKE_TIMEOUT_S instead of socket_timeout; a protocol error as NotRedis."""
    sock: socket.socket | None = getattr(connection, "_sock", None)
    if sock is not None:
        sock.settimeout(min(HANDSHAKE_TIMEOUT_S, connection.socket_timeout or HANDSHAKE_TIMEOUT_S))
    try:
        # No health check inside the handshake: its PING would reconnect, i.e. handshake again, recursively.
        connection.on_connect_check_health(check_health=False)
    except redis.exceptions.InvalidResponse as exc:
        raise NotRedis(_one_line(str(exc))) from exc
    finally:
        current: socket.socket | None = getattr(connection, "_sock", None)
        if current is not None and current is sock:  # still the same connection: back to its normal time-out
            current.settimeout(connection.socket_timeout)


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

# What CLIENT SETINFO sends, resolved once here (in a node, before its worker processes fork): redis-py
# otherwise reads its own version with importlib.metadata for every client it builds, a walk that writes
# (so copies, copy-on-write) about 1.5 MB of the supervisor's shared pages in each worker process.
try:  # redis-py >= 7.1
    from redis.driver_info import DriverInfo

    DRIVER: dict[str, Any] = {"driver_info": DriverInfo()}
except ImportError:  # older redis-py: its lib_version argument
    from redis.utils import get_lib_version

    DRIVER = {"lib_version": get_lib_version()}


def connect(url: str, **overrides: Any) -> redis.Redis:
    """A client for `url`; commands retry briefly on connection errors, never on time-outs (see above).

    No round trip here; a malformed URL is a ConfigError at once.
    """
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRY_ATTEMPTS),
        "retry_on_error": RETRY_ON,
        "redis_connect_func": _bounded_handshake,
        **DRIVER,
    }
    options.update(overrides)
    try:
        conn = redis.Redis.from_url(url, **options)
        pool_kwargs = conn.connection_pool.connection_kwargs
        if "path" not in pool_kwargs:
            int(pool_kwargs.get("port", 6379))  # urlsplit checks a port only when asked
    except (ValueError, TypeError) as exc:
        raise malformed(url, exc) from exc
    return conn


def malformed(url: str, exc: BaseException) -> ConfigError:
    """The error for a FERRY_REDIS_URL that cannot be parsed: exit 2 (a setting), never "unreachable"."""
    return ConfigError(f"FERRY_REDIS_URL={redact(url)!r} is not a Redis URL ({_one_line(str(exc))}); {URL_FIX}")


def probe(url: str) -> None:
    """Connect, handshake and PING once, no retries, within PROBE_TIMEOUT_S; ConfigError or RedisUnavailable."""
    conn = connect(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S,
                   retry=Retry(NoBackoff(), 0), health_check_interval=0, socket_keepalive=False)
    try:
        ping(conn, url)
    finally:
        conn.close()


def connect_checked(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for the configured server, probed once so that a wrong URL fails here, fast, with one clear line."""
    url = settings.resolved_redis_url()
    probe(url)
    return connect(url, **overrides)


def ping(conn: redis.Redis, url: str) -> None:
    """PING `conn`; any failure as the one-line RedisUnavailable for `url`."""
    try:
        conn.ping()
    except redis.exceptions.InvalidResponse as exc:
        raise unavailable(url, NotRedis(_one_line(str(exc)))) from exc
    except redis.RedisError as exc:
        raise unavailable(url, exc) from exc


def is_not_redis(exc: RedisUnavailable) -> bool:
    """True when what answered is not Redis (a mistake to fix), not merely down or slow (it may be starting)."""
    return isinstance(exc.__cause__, (NotRedis, redis.exceptions.InvalidResponse))


def unavailable(url: str, exc: BaseException) -> RedisUnavailable:
    """The error to raise when Redis at `url` fails: one line naming the URL, what happened and the fix."""
    where = redact(url)
    cause = _one_line(f"{exc.__class__.__name__}: {exc}")
    if isinstance(exc, NotRedis):
        return RedisUnavailable(f"the server at {where} is not Redis ({cause}); {URL_FIX}")
    if isinstance(exc, redis.TimeoutError):
        return RedisUnavailable(
            f"Redis at {where} did not answer in time ({cause}): something accepts connections there but does not "
            f"answer like Redis (the API's port? a stopped server?); {URL_FIX}"
        )
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        return RedisUnavailable(
            f"Redis at {where} refused the credentials ({cause}); put the password in the URL: redis://:PASSWORD@HOST:6379/0"
        )
    return RedisUnavailable(
        f"cannot reach Redis at {where} ({cause}); "
        "start Redis there or point FERRY_REDIS_URL at a running server (`ferry up` starts a private one)"
    )


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
