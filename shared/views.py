"""Read-only views for people watching Ferry: job listings with filters, one job in full, recent throughput,
objects with where they are held. The dashboard (`/ui`) and `ferry top` show them; routes stay thin.

Every view is bounded: a listing reads at most `SCAN_PER_LIST` entries of each queue and status, the
throughput view counts registry entries by score (O(log n) each), the objects view reads the index once.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, Field

from shared import keys, wire
from shared.admin import STATE_REGISTRY, Admin
from shared.errors import FerryError
from shared.jobs import JobService, job_info
from shared.models import JobInfo, JobResult, JobStatus
from shared.objects.lifetime import LIVE_STATUSES
from shared.objects.shm import deployment_id, scan
from shared.settings import Settings
from shared.timeutil import unix_now

SCAN_PER_LIST = 2000  # entries read per queue and status when filtering by task (the task is inside the job data)
FETCH_BATCH = 200  # job hashes per pipeline
MAX_SHOWN_BYTES = 64 * 1024  # args or results larger than this are cut in the job view
LIST_ORDER = (JobStatus.STARTED, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.FINISHED, JobStatus.CANCELED,
              JobStatus.SCHEDULED)


class JobDetail(BaseModel):
    """Everything the dashboard shows about one job."""

    job: JobInfo
    args: Any = None
    args_truncated: bool = False
    result: JobResult | None = None
    result_truncated: bool = False
    traceback: str | None = None
    progress: Any = None  # the job's meta "progress", when its task reports one
    description: str | None = None


class Throughput(BaseModel):
    """Jobs that ended per time step over the last window, summed over queues (oldest step first)."""

    step_s: int
    end: float
    finished: list[int]
    failed: list[int]


class ObjectView(BaseModel):
    id: str
    kind: str
    dtype: str
    shape: list[int]
    nbytes: int
    created_at: float
    ttl_s: int
    nodes: list[str] = Field(default_factory=list, description="nodes holding it in this machine's /dev/shm")
    jobs: list[str] = Field(default_factory=list, description="queued or running jobs whose args name it")


def list_jobs(conn: redis.Redis, settings: Settings, status: JobStatus | None = None, queue: str | None = None,
              task: str | None = None, limit: int = 50) -> list[JobInfo]:
    """Jobs filtered by status, queue and task, most recently active first."""
    admin = Admin(conn, settings)
    queues = [queue] if queue else admin.queue_names()
    statuses = [status] if status else list(LIST_ORDER)
    per_list = SCAN_PER_LIST if task else limit
    found: list[JobInfo] = []
    for q in queues:
        for s in statuses:
            ids = _ids(conn, q, s, per_list)
            for start in range(0, len(ids), FETCH_BATCH):
                batch = ids[start : start + FETCH_BATCH]
                pipe = conn.pipeline(transaction=False)
                for job_id in batch:
                    pipe.hgetall(keys.job(job_id))
                matching = [job_info(i, raw, settings.max_job_data_bytes)
                            for i, raw in zip(batch, pipe.execute(), strict=True) if raw]
                found += [j for j in matching if task is None or j.task == task]
                if len([j for j in found if j.queue == q and j.status == s]) >= limit:
                    break
    found.sort(key=_last_activity, reverse=True)
    return found[:limit]


def _ids(conn: redis.Redis, queue: str, status: JobStatus, count: int) -> list[str]:
    if status is JobStatus.QUEUED:
        raw: list[Any] = conn.lrange(keys.queue(queue), 0, count - 1)
    else:
        raw = conn.zrevrange(STATE_REGISTRY[status](queue), 0, count - 1)
    return [_text(r).split(":")[0] for r in raw]  # started entries are `job_id:execution_id`


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _last_activity(job: JobInfo) -> float:
    moments: Iterable[datetime | None] = (job.ended_at, job.started_at, job.enqueued_at, job.created_at)
    return max((m.timestamp() for m in moments if m), default=0.0)


def job_detail(jobs: JobService, job_id: str) -> JobDetail:
    """A job with its args, result or traceback, and progress; JobNotFound when there is no such job."""
    info = jobs.status(job_id)
    data, meta, description = jobs.conn.hmget(keys.job(job_id), "data", "meta", "description")
    detail = JobDetail(job=info, description=_text(description) if description else None)
    if data:
        try:
            _task, _positional, args = wire.decode_data(data if isinstance(data, bytes) else data.encode(),
                                                      jobs.settings.max_job_data_bytes)
            detail.args, detail.args_truncated = _bounded(args)
        except (FerryError, zlib.error):
            detail.args = None
    if meta:
        try:
            detail.progress = json.loads(meta).get("progress")
        except (ValueError, AttributeError):
            pass
    if info.progress is not None:  # what a task reports through its JobContext (the bar's fraction)
        detail.progress = info.progress.fraction
    if isinstance(info.status, JobStatus) and info.status.is_final:
        result = jobs.result(job_id, 0)
        value, detail.result_truncated = _bounded(result.value)
        detail.result = result.model_copy(update={"value": value})
        if info.status is JobStatus.FAILED:
            detail.traceback = jobs.traceback(job_id)
    return detail


def _bounded(value: Any) -> tuple[Any, bool]:
    """The value, or its JSON text cut to MAX_SHOWN_BYTES when it is larger (a page shows it, nobody parses it)."""
    text = json.dumps(value, default=str)
    if len(text) <= MAX_SHOWN_BYTES:
        return value, False
    return text[:MAX_SHOWN_BYTES] + "…", True


def throughput(conn: redis.Redis, settings: Settings, window_s: int = 300, step_s: int = 10) -> Throughput:
    """Finished and failed jobs per step over the last `window_s` seconds, from the registries' scores.

    A finished job's registry score is its end time plus its result TTL (RQ's layout), and Ferry gives
    every job FERRY_RESULT_TTL_S (failed ones FERRY_FAILURE_TTL_S), so counting scores in a range counts
    the jobs that ended in that range, without reading a single job.
    """
    steps = max(1, window_s // step_s)
    end = unix_now()
    start = end - steps * step_s
    names = Admin(conn, settings).queue_names()
    pipe = conn.pipeline(transaction=False)
    for registry, ttl in ((keys.finished, settings.result_ttl_s), (keys.failed, settings.failure_ttl_s)):
        for name in names:
            for index in range(steps):
                low = start + index * step_s + ttl
                pipe.zcount(registry(name), low, f"({low + step_s}")
    replies = pipe.execute()
    per_registry = len(names) * steps
    finished, failed = ([sum(replies[offset + q * steps + i] for q in range(len(names))) for i in range(steps)]
                        for offset in (0, per_registry))
    return Throughput(step_s=step_s, end=end, finished=finished, failed=failed)


def list_objects(conn: redis.Redis, settings: Settings, shm_dir: Path, limit: int = 1000,
                 scan_jobs: int = 500) -> list[ObjectView]:
    """The newest stored objects with their TTL, the nodes on this machine holding them, and the waiting or
    running jobs naming them."""
    newest: list[Any] = conn.zrevrange(keys.OBJECTS, 0, limit - 1)
    ids = [_text(i) for i in newest]
    pipe = conn.pipeline(transaction=False)
    for object_id in ids:
        pipe.hgetall(keys.object_meta(object_id))
        pipe.zscore(keys.OBJECT_EXPIRY, object_id)  # a logical expiry, not a Redis TTL (shared.objects.lifetime)
        pipe.zrange(keys.object_jobs(object_id), 0, scan_jobs - 1)  # the jobs recorded as needing it at submit
    replies = pipe.execute()
    deployment = deployment_id(conn)
    holders: dict[str, set[str]] = {}
    for segment in scan(shm_dir, deployment=deployment):
        if segment.object_id is not None and not segment.partial:
            holders.setdefault(segment.object_id, set()).add(segment.node)
    users = _live_jobs(conn, dict(zip(ids, replies[2::3], strict=True)))
    now = unix_now()
    found = []
    for object_id, raw, expiry in zip(ids, replies[::3], replies[1::3], strict=True):
        if not raw:
            continue
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        found.append(ObjectView(
            id=object_id, kind=meta.get("kind", "?"), dtype=meta.get("dtype", "?"),
            shape=[int(n) for n in meta.get("shape", "").split(",") if n], nbytes=int(meta.get("nbytes", 0)),
            created_at=float(meta.get("created_at", 0)), ttl_s=int(expiry - now) if expiry is not None else -1,
            nodes=sorted(holders.get(object_id, ())), jobs=users.get(object_id, []),
        ))
    return found


def _live_jobs(conn: redis.Redis, referencing: dict[str, list[Any]]) -> dict[str, list[str]]:
    """Of the jobs recorded as needing each object, those not yet done (they keep the object alive)."""
    pairs = [(object_id, _text(job_id)) for object_id, job_ids in referencing.items() for job_id in job_ids]
    pipe = conn.pipeline(transaction=False)
    for _object_id, job_id in pairs:
        pipe.hget(keys.job(job_id), "status")
    users: dict[str, list[str]] = {}
    for (object_id, job_id), status in zip(pairs, pipe.execute(), strict=True):
        if status is not None and _text(status) in LIVE_STATUSES:
            users.setdefault(object_id, []).append(job_id)
    return users
