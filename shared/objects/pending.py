"""Results still being written to Redis behind their job's finish (see shared/handoff.py): readers wait for them."""

from __future__ import annotations

import time
from typing import Any

import redis

from shared import keys

WAIT_WRITTEN_S = 600.0  # the longest a reader waits for a result written behind (a job's own timeout cuts it short)


def wait_written(conn: redis.Redis, object_id: str, timeout_s: float = WAIT_WRITTEN_S) -> dict[Any, Any]:
    """The object's meta once a write behind has finished; {} at once when no write is pending (or it failed)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.002
    while time.monotonic() < deadline:
        pipe = conn.pipeline(transaction=True)  # one atomic look: the writer publishes the meta, then drops the marker
        pipe.hgetall(keys.object_meta(object_id))
        pipe.exists(keys.object_pending(object_id))
        meta, pending = pipe.execute()
        if meta or not pending:
            return meta or {}
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return {}
