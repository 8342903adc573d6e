"""Listing jobs by tag (with the other exact filters: task, queue, status), from the per-tag index.

Without a tag the listing is `shared.views.list_jobs` (queues and registries). With one, the tag's index
(`ferry:tag:<tag>`, newest first) is read in slices, at most `SCAN_PER_TAG` ids, so a request costs a
bounded amount whatever the tag's size; ids whose job has expired are dropped from the index on the way.
"""

from __future__ import annotations

import redis

from shared import keys, views
from shared.jobs import job_info, queue_job_view, read_job_view
from shared.models import JobInfo, JobStatus
from shared.replies import texts
from shared.settings import Settings

SCAN_PER_TAG = 5000
SLICE = 200


def list_jobs(conn: redis.Redis, settings: Settings, status: JobStatus | None = None, queue: str | None = None,
              task: str | None = None, tag: str | None = None, limit: int = 50) -> list[JobInfo]:
    """Jobs matching every filter given, most recently submitted (tag) or active (no tag) first."""
    if tag is None:
        return views.list_jobs(conn, settings, status, queue, task, limit)
    index = keys.tag(tag)
    found: list[JobInfo] = []
    for start in range(0, SCAN_PER_TAG, SLICE):
        ids = texts(conn.zrevrange(index, start, start + SLICE - 1))
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            queue_job_view(pipe, job_id)
        replies = pipe.execute()
        gone = []
        for i, job_id in enumerate(ids):
            raw = read_job_view(replies[3 * i : 3 * i + 3])
            if not raw:
                gone.append(job_id)
                continue
            info = job_info(job_id, raw, settings.max_job_data_bytes)
            if (status is None or info.status == status) and (queue is None or info.queue == queue) and (
                    task is None or info.task == task):
                found.append(info)
        if gone:
            conn.zrem(index, *gone)
        if len(found) >= limit or len(ids) < SLICE:
            break
    return found[:limit]
