"""Concurrency and rate limits, and pausing queues: what a job carries, and the operator's switches.

A limit is named `task:<task>` (declared on the decorator: `@task("x", concurrency=4, concurrency_per_node=1,
rate_limit="100/60s")`) or `key:<limit_key>` (given with the job: `limit_key="customer-42"`,
`concurrency_limit=2`, `rate_limit="10/s"`). The task's limits reach submitters through the task catalog; at
submit both are written into the job hash as `ferry_limits` (JSON), so the claim script enforces them
without reading anything else (shared/lifecycle/lua_limits.py). A job over a limit waits in Redis, not
in a worker process, and shows `waiting_for` in its status.

Pause: `rq:suspended` (RQ's own `rq suspend` key) pauses every queue; `ferry:paused` holds paused queue names.
A paused queue keeps its jobs; running jobs finish; no worker claims from it until it is resumed.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.commands.core import Script

from shared import keys
from shared.errors import InvalidRequest

RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(ms|s|m|h)?\s*$")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
MAX_RATE = 1_000_000
MAX_PERIOD_MS = 86_400_000
MAX_CONCURRENCY = 1_000_000
RATE_HELP = "write it as STARTS/PERIOD, e.g. '100/60s', '5/s', '1000/1h' (units ms, s, m, h; at most 1 day)"
ALL_QUEUES = "*"
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_rate(text: str) -> tuple[int, int]:
    """(starts, period in ms) of a rate limit such as '100/60s'; ValueError naming the mistake otherwise."""
    match = RATE_PATTERN.match(text or "")
    if not match:
        raise ValueError(f"rate limit {text!r} is not understood: {RATE_HELP}")
    count, amount, unit = int(match.group(1)), match.group(2), match.group(3) or "s"
    period_ms = round((float(amount) if amount not in ("", ".") else 1.0) * UNIT_MS[unit])
    if not 1 <= count <= MAX_RATE:
        raise ValueError(f"rate limit {text!r}: the number of starts must be 1 to {MAX_RATE:,}, not {count}")
    if not 1 <= period_ms <= MAX_PERIOD_MS:
        raise ValueError(f"rate limit {text!r}: the period must be 1 ms to 1 day, not {period_ms} ms")
    return count, period_ms


def task_limits(concurrency: int | None, concurrency_per_node: int | None, rate_limit: str | None) -> dict[str, Any]:
    """A task's limits as the catalog carries them ({} for none); ValueError for a bad value."""
    out: dict[str, Any] = {}
    for name, value in (("concurrency", concurrency), ("concurrency_per_node", concurrency_per_node)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
                raise ValueError(f"{name} must be a whole number from 1 to {MAX_CONCURRENCY:,}, not {value!r}")
            out[name] = value
    if rate_limit is not None:
        parse_rate(rate_limit)
        out["rate_limit"] = rate_limit
    return out


def _spec(name: str, concurrency: int | None = None, per_node: int | None = None,
          rate_limit: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"k": keys.limit(name)}
    if concurrency:
        spec["n"] = concurrency
    if per_node:
        spec["node"] = per_node
    if rate_limit:
        spec["rate"], spec["per_ms"] = parse_rate(rate_limit)
    return spec


def job_limits(task: str, task_defaults: dict[str, Any] | None, limit_key: str | None,
               concurrency_limit: int | None, rate_limit: str | None) -> str:
    """The job hash's `ferry_limits` (JSON) for a job, or "" when no limit applies (the common, free case)."""
    specs = []
    if task_defaults:
        specs.append(_spec(f"task:{task}", task_defaults.get("concurrency"), task_defaults.get("concurrency_per_node"),
                           task_defaults.get("rate_limit")))
    if limit_key and (concurrency_limit or rate_limit):
        specs.append(_spec(f"key:{limit_key}", concurrency_limit, None, rate_limit))
    return json.dumps(specs, separators=(",", ":")) if specs else ""


# --- pause and resume ---
def pause(conn: redis.Redis, queues: Sequence[str] = ()) -> None:
    """Pause the named queues, or every queue (RQ's `rq:suspended`, so `rq suspend` and `rq resume` agree)."""
    if queues:
        conn.sadd(keys.PAUSED_QUEUES, *queues)
    else:
        conn.set(keys.RQ_SUSPENDED, 1)


def resume(conn: redis.Redis, queues: Sequence[str] = ()) -> None:
    """Resume the named queues, or everything (also clears `rq suspend`); idle workers are woken at once."""
    pipe = conn.pipeline(transaction=True)
    if queues:
        pipe.srem(keys.PAUSED_QUEUES, *queues)
    else:
        pipe.delete(keys.PAUSED_QUEUES, keys.RQ_SUSPENDED)
    for queue in queues or [ALL_QUEUES]:
        pipe.publish(keys.WAKE_CHANNEL, queue)
    pipe.execute()


def paused(conn: redis.Redis) -> tuple[bool, set[str]]:
    """(everything paused, the names of queues paused one by one)."""
    pipe = conn.pipeline(transaction=False)
    pipe.exists(keys.RQ_SUSPENDED)
    pipe.smembers(keys.PAUSED_QUEUES)
    everything, names = pipe.execute()
    return bool(everything), {n.decode() if isinstance(n, bytes) else n for n in names}


def waiting_by_queue(conn: redis.Redis) -> dict[str, int]:
    """Jobs set aside for a limit, per queue (they are not in the queue's list, so `rq info` does not count them)."""
    raw = conn.hgetall(keys.LIMITS_WAITING_BY_QUEUE)
    return {(k.decode() if isinstance(k, bytes) else k): max(0, int(v)) for k, v in raw.items()}


# --- the promoter ---
_promote: weakref.WeakKeyDictionary[redis.Redis, Script] = weakref.WeakKeyDictionary()


def promote_waiting(conn: redis.Redis, sweep: bool = False) -> int:
    """Move waiting jobs whose rate window now allows a start back to their queues (every node, every tick);
    with `sweep`, also waiting jobs of limits that have free slots (the reaper's safety net)."""
    script = _promote.get(conn)
    if script is None:
        from shared.lifecycle import lua

        script = _promote[conn] = conn.register_script(lua.PROMOTE)
    return int(script(args=["1" if sweep else "0"]))


def check_queue_names(values: Iterable[str]) -> list[str]:
    """Queue names as given, without duplicates, in order; InvalidRequest naming a malformed one."""
    out = list(dict.fromkeys(values))
    for name in out:
        if not QUEUE_NAME.match(name):
            raise InvalidRequest(f"queue name {name!r} is not valid: use 1-64 characters from A-Z a-z 0-9 _ -")
    return out
