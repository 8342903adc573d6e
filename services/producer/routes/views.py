"""JSON views for the dashboard (and any script): job listing with filters, a job in full, requeue, workers,
recent throughput, objects with their holders. The queries live in shared/views.py; these routes only
translate HTTP. Sync Redis calls run on the thread pool so the event loop never blocks.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from services.producer.schemas import errors
from shared import job_listing, job_settings, views
from shared.admin import Admin
from shared.client import Client
from shared.errors import Conflict
from shared.models import QUEUE_PATTERN, JobInfo, JobStatus, WorkerInfo
from shared.objects.segments import SHM_DIR

router = APIRouter(prefix="/v1", tags=["views"])

JobId = Annotated[str, Path(min_length=1, max_length=200)]


def _client(request: Request) -> Client:
    return request.app.state.client


@router.get("/jobs", response_model=list[JobInfo], summary="List jobs, filtered by status, queue, task and tag",
            description="Most recently active first. With `task`, the newest "
            f"{views.SCAN_PER_LIST} jobs of each queue and status are searched. With `tag`, the tag's newest "
            f"{job_listing.SCAN_PER_TAG} jobs are searched, newest first. Filters are exact and combine.",
            responses=errors(422))
async def list_jobs(
    request: Request,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    queue: Annotated[str | None, Query(pattern=QUEUE_PATTERN, description="only this queue")] = None,
    task: Annotated[str | None, Query(min_length=1, max_length=200, description="only this task")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many jobs")] = 50,
    tag: Annotated[str | None, Query(pattern=job_settings.TAG_PATTERN, description="only jobs with this tag")] = None,
) -> list[JobInfo]:
    client = _client(request)
    return await run_in_threadpool(job_listing.list_jobs, client.conn, client.settings, status, queue, task, tag,
                                   limit)


@router.get("/jobs/{job_id}/details", response_model=views.JobDetail,
            summary="A job with its args, result or traceback",
            responses=errors(404))
async def job_details(job_id: JobId, request: Request) -> views.JobDetail:
    return await run_in_threadpool(views.job_detail, _client(request).jobs, job_id)


@router.post("/jobs/{job_id}/requeue", response_model=JobInfo, summary="Put a failed job back on its queue",
             description="One more attempt for a failed job; 409 for a job in any other status.",
             responses=errors(404, 409))
async def requeue(job_id: JobId, request: Request) -> JobInfo:
    client = _client(request)

    def run() -> JobInfo:
        info = client.status(job_id)  # JobNotFound -> 404
        if info.status != JobStatus.FAILED or not client.admin.requeue_failed(info.queue, [job_id]):
            status = getattr(info.status, "value", info.status)
            raise Conflict(f"job {job_id} is {status}; only failed jobs can be requeued")
        return client.status(job_id)

    return await run_in_threadpool(run)


@router.get("/workers", response_model=list[WorkerInfo], summary="Worker processes (RQ's workers) and what they run")
async def workers(request: Request) -> list[WorkerInfo]:
    client = _client(request)
    return await run_in_threadpool(Admin(client.conn, client.settings).workers)


@router.get("/views/throughput", response_model=views.Throughput, summary="Jobs finished and failed per step, recently")
async def throughput(
    request: Request,
    window_s: Annotated[int, Query(ge=10, le=3600)] = 300,
    step_s: Annotated[int, Query(ge=1, le=600)] = 10,
) -> views.Throughput:
    client = _client(request)
    return await run_in_threadpool(views.throughput, client.conn, client.settings, window_s, step_s)


@router.get("/views/objects", response_model=list[views.ObjectView],
            summary="Objects with their TTL, the nodes on the producer's machine holding them, "
            "and the jobs naming them")
async def objects(request: Request) -> list[Any]:
    client = _client(request)
    return await run_in_threadpool(views.list_objects, client.conn, client.settings, SHM_DIR)
