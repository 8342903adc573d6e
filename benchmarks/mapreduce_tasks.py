"""The plain-RQ side of benchmarks/mapreduce.py: `rq worker` imports these by dotted path.

The map job reads only its slice's bytes from Redis (GETRANGE on the 16 MiB pieces the driver SET once),
which is the fair way to map over an array held in Redis; the reduce job is enqueued with `depends_on`
the 64 map jobs and reads their results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rq import get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer

from benchmarks.rq_tasks import PIECE_BYTES


def slice_stats(prefix: str, dtype: str, start: int, stop: int, piece_bytes: int = PIECE_BYTES) -> dict[str, Any]:
    """Count, sum, min, max of the items [start:stop] of the array stored as pieces `<prefix>:<n>`."""
    conn = get_current_job().connection
    itemsize = np.dtype(dtype).itemsize
    first, last = start * itemsize, stop * itemsize  # byte range, end exclusive
    buffer = np.empty(last - first, dtype=np.uint8)
    at = first
    while at < last:
        index, offset = divmod(at, piece_bytes)
        take = min(last - at, piece_bytes - offset)
        piece = conn.getrange(f"{prefix}:{index}", offset, offset + take - 1)
        buffer[at - first : at - first + take] = np.frombuffer(piece, dtype=np.uint8)
        at += take
    part = buffer.view(np.dtype(dtype))
    total = float(part.sum())
    return {"count": int(part.size), "sum": total, "min": float(part.min()), "max": float(part.max())}


def combine(job_ids: list[str]) -> dict[str, Any]:
    """The reduce step: the map jobs' results (read from their RQ result entries), combined."""
    conn = get_current_job().connection
    parts = [Job.fetch(i, connection=conn, serializer=JSONSerializer).return_value() for i in job_ids]
    return combine_parts(parts)


def combine_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(p["sum"] for p in parts)
    count = sum(p["count"] for p in parts)
    return {"count": count, "sum": total, "min": min(p["min"] for p in parts), "max": max(p["max"] for p in parts)}
