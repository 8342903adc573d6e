"""Tasks for the limit tests: each records, in Redis, how many of its kind run at the moment it starts."""

from __future__ import annotations

import os
import time

import redis

from shared.tasks import task

_conn: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _conn
    if _conn is None:
        _conn = redis.Redis.from_url(os.environ["FERRY_REDIS_URL"])
    return _conn


def _track(label: str, seconds: float) -> int:
    """Count this run in `test:running:<label>` (and per node) while it lasts; record the count seen at start,
    the node and the start time (ms, Redis's clock)."""
    conn = _redis()
    node = os.environ.get("FERRY_NODE_ID", "")
    pipe = conn.pipeline(transaction=True)
    pipe.incr(f"test:running:{label}")
    pipe.incr(f"test:running:{label}:{node}")
    pipe.time()
    running, on_node, (sec, usec) = pipe.execute()
    conn.rpush(f"test:samples:{label}", f"{running} {on_node} {node} {sec * 1000 + usec // 1000} {os.getpid()}")
    time.sleep(seconds)
    pipe = conn.pipeline(transaction=True)
    pipe.decr(f"test:running:{label}")
    pipe.decr(f"test:running:{label}:{node}")
    pipe.execute()
    return running


@task("test.limited", concurrency=2)
def limited(seconds: float = 0.2) -> int:
    """At most 2 at once, cluster-wide."""
    return _track("limited", seconds)


@task("test.per_node", concurrency_per_node=1)
def per_node(seconds: float = 0.2) -> int:
    """At most 1 at once on each node."""
    return _track("per_node", seconds)


@task("test.rated", rate_limit="3/1s")
def rated() -> int:
    """At most 3 starts in any second."""
    return _track("rated", 0)


@task("test.keyed")
def keyed(label: str, seconds: float = 0.2) -> int:
    """No limit of its own: jobs give one with a limit_key."""
    return _track(label, seconds)
