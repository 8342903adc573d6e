"""The hot lifecycle scripts as one Redis function library: the prelude runs once per server, not once per call.

Every EVALSHA runs its whole script, and Ferry's scripts share a prelude of ~60 helper definitions
(lua.py): running it costs ~12 µs of Redis time per call, on each of the three calls every job makes
(ENQUEUE, CLAIM, FINISH). A function library (Redis ≥ 7: FUNCTION LOAD, FCALL) defines the prelude
once, when it is loaded; each call then runs only its own body (measured here: a claim that finds
nothing, 27 µs with EVALSHA, 15 µs with FCALL).

The prelude's variables live as long as the library, so the few that hold one call's state
(lua.PER_CALL_STATE) are reset at the start of every function.

The library's name carries a hash of its code (`ferry_<hash>`), so workers and producers of two Ferry
versions sharing one Redis (a rolling upgrade) each call their own code. A server that lost its functions
(restarted without persistence, or FUNCTION FLUSH) answers "Function not found": the library is loaded
again and the call repeated, which is safe because every lifecycle script is idempotent. A server without
functions (Redis 6) gets the same scripts through EVALSHA.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.connection import Connection

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; plain redis-py packing works too
    hiredis = None  # type: ignore[assignment]  # the module's name stays bound; None means 'not installed'

from shared.lifecycle import lua

# name -> the script's body (what follows the prelude). ENQUEUE takes KEYS; the others only ARGV.
HOT_BODIES = {
    "enqueue": lua.ENQUEUE[len(lua.PRELUDE):],
    "claim": lua.CLAIM_SCRIPT[len(lua.PRELUDE):],
    "finish": lua.FINISH[len(lua.PRELUDE):],
    "settle": lua.SETTLE[len(lua.PRELUDE):],
}


def _library() -> tuple[str, str]:
    reset = "".join(f"{name} = {value}\n" for name, value in lua.PER_CALL_STATE.items())
    registrations = "".join(
        f"\nredis.register_function('{{lib}}_{name}', function(KEYS, ARGV)\n{reset}{body}\nend)\n"
        for name, body in HOT_BODIES.items()
    )
    digest = hashlib.sha1((lua.PRELUDE + registrations).encode()).hexdigest()[:12]
    name = f"ferry_{digest}"
    return name, f"#!lua name={name}\n{lua.PRELUDE}{registrations.replace('{lib}', name)}"


LIBRARY_NAME, LIBRARY_CODE = _library()


def lacks_functions(exc: BaseException) -> bool:
    """The server has no FUNCTION/FCALL commands (Redis 6): the scripts go through EVALSHA instead."""
    return isinstance(exc, redis.ResponseError) and "unknown command" in str(exc).lower()


def is_missing_function(exc: BaseException) -> bool:
    """The server does not know the function (it lost its library): load it and send the call again."""
    return isinstance(exc, redis.ResponseError) and "function not found" in str(exc).lower()


class Library:
    """The library's state on one Redis server, as seen by the scripts bound to one connection."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self.functions: bool | None = None  # None: not known yet; False: a server without functions
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Whether FCALL works; the first call loads the library if the server lacks it (compiling it costs
        the server a few ms, so it is not done by every client that connects)."""
        if self.functions is None:
            with self._lock:
                if self.functions is None:
                    try:
                        present = self.conn.function_list(library=LIBRARY_NAME)
                    except redis.ResponseError as exc:
                        if not lacks_functions(exc):
                            raise
                        self.functions = False
                        return False
                    if not present:
                        self.conn.function_load(LIBRARY_CODE, replace=True)
                    self.functions = True
        return self.functions

    def load(self) -> bool:
        """Load (or replace) the library: the server said it lacks it. Returns whether FCALL works."""
        with self._lock:
            if self.functions is not False:
                self.conn.function_load(LIBRARY_CODE, replace=True)
                self.functions = True
        return self.functions


class HotScript:
    """One lifecycle script, called like redis-py's `Script` (keys=, args=, client=), as FCALL when it can."""

    def __init__(self, library: Library, name: str, script: str) -> None:
        self.library = library
        self.function = f"{LIBRARY_NAME}_{name}"
        self.script: Script = library.conn.register_script(script)  # the EVALSHA fallback (Redis 6)

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        client = self.library.conn if client is None else client
        if not self.library.ready():
            return self.script(keys=keys, args=args, client=client)
        try:
            return client.fcall(self.function, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not is_missing_function(exc) or isinstance(client, redis.client.Pipeline):
                raise
        self.library.load()
        return client.fcall(self.function, len(keys), *keys, *args)

    def command(self, args: Sequence[Any], keys: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The raw command for `keys` and `args`, for a caller that writes it to a connection itself."""
        if self.library.ready():
            return ("FCALL", self.function, len(keys), *keys, *args)
        return ("EVALSHA", self.script.sha, len(keys), *keys, *args)


def pack(connection: Connection, commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """`commands` as one write (hiredis packs in C; redis-py's packer walks every argument in Python)."""
    if hiredis is None:
        return connection.pack_commands(commands)
    return [b"".join(hiredis.pack_command(tuple(command)) for command in commands)]


def call_together(conn: redis.Redis, calls: Sequence[tuple[HotScript, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run `(script, keys, args)` calls in one write on one pooled connection: one round trip, without
    redis-py's per-command machinery (~30 µs a command in redis-py 8, most of a submit's own CPU time).

    Only for idempotent scripts (every lifecycle script is): when the connection fails, or the server lost
    its scripts, the calls are made again one by one through redis-py (its retries, its script loading).
    A script's own error is raised once every reply was read.
    """
    pool = conn.connection_pool
    connection = pool.get_connection()
    replies: list[Any] = []
    try:
        connection.send_packed_command(pack(connection, [s.command(args, keys) for s, keys, args in calls]))
        for _ in calls:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()
        replies = []
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    lost = any(isinstance(r, redis.exceptions.NoScriptError) or (isinstance(r, redis.ResponseError)
                                                                and is_missing_function(r)) for r in replies)
    if len(replies) < len(calls) or lost:
        return [script(keys=keys, args=args) for script, keys, args in calls]
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies
