"""/v1/jobs: submit (one or a batch), inspect, long-poll for the result, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from services.producer.deps import AsyncClientDep
from services.producer.schemas import MAX_BATCH, BatchRequest, BatchSubmitted, errors
from shared.async_client import AsyncClient
from shared.errors import InvalidArgs
from shared.models import JobInfo, JobRequest, JobResult, Submitted

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_WAIT_S = 300

JobId = Annotated[str, Path(min_length=1, max_length=200, description="the id `POST /v1/jobs` returned")]

SUBMIT_EXAMPLES = {
    "echo": {"summary": "Echo a value", "value": {"task": "echo", "args": {"value": "hello"}}},
    "options": {
        "summary": "With queue, time-out, retries and an idempotency key",
        "value": {
            "task": "sleep",
            "args": {"seconds": 1},
            "queue": "high",
            "timeout_s": 30,
            "retries": 0,
            "idempotency_key": "order-1234",
        },
    },
    "object": {
        "summary": "A task over an uploaded array (the ObjectRef from POST /v1/objects)",
        "value": {
            "task": "array.stats",
            "args": {
                "data": {
                    "id": "0123456789abcdef0123456789abcdef",
                    "kind": "array",
                    "dtype": "<f8",
                    "shape": [1000],
                    "nbytes": 8000,
                }
            },
        },
    },
}

RESULT_EXAMPLES = {
    "finished": {
        "summary": "Done",
        "value": {"id": "4f1c...", "status": "finished", "ready": True, "value": {"sum": 499500.0}, "error": None},
    },
    "not_ready": {
        "summary": "Still started (running) after wait_s",
        "value": {"id": "4f1c...", "status": "started", "ready": False, "value": None, "error": None},
    },
    "shm_full": {
        "summary": "Failed: the input did not fit the node's shared memory",
        "value": {
            "id": "4f1c...",
            "status": "failed",
            "ready": True,
            "value": None,
            "error": "object 9f69... needs 8000000000 bytes but node n1's shared-memory budget is 4000000000 bytes; "
            "raise FERRY_SHM_BUDGET_BYTES (and docker's shm_size)",
        },
    },
}


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    summary="Submit a job",
    description=(
        "Validate the task's args against its input schema (see `GET /v1/tasks`) and enqueue it. "
        "A repeated `idempotency_key` with the same task, queue and args returns the first job with "
        "`duplicate: true` and enqueues nothing; with different ones it is a 409 naming the job that holds the key. "
        "A task no live node serves on the job's queue is refused (409) unless `allow_unserved` is true. "
        "`delay_s` or `run_at` (ISO-8601 with a zone) makes the job wait as `scheduled` until it is due; "
        "`retry_delay_s`, `retry_backoff`, `retry_max_delay_s` and `retry_jitter` set the wait between attempts."
    ),
    responses=errors(
        400,
        404,
        409,
        413,
        415,
        422,
        507,
        notes={
            404: "No task of that name is served; the message lists the known ones",
            409: "TaskNotServed: no live node serves the task on that queue "
            "(send allow_unserved: true to queue it anyway); IdempotencyConflict: the key belongs to another job",
        },
    ),
)
async def submit(
    job: Annotated[JobRequest, Body(openapi_examples=SUBMIT_EXAMPLES)], client: AsyncClientDep
) -> Response:
    # A valid JSON body is answered before it gets here, by services/producer/fast_submit.py with the
    # same `submit_job`; this route documents the API and answers the requests FastAPI must refuse.
    return Response(await submit_job(job, client), status_code=202, media_type="application/json")


async def submit_job(job: JobRequest, client: AsyncClient) -> bytes:
    """Enqueue `job`; the 202 answer's body (`Submitted`), serialized once (no second validation by FastAPI)."""
    try:
        submitted = await client.submit_request(job)
    except InvalidArgs as exc:
        raise _located(exc, "body.args") from exc
    return submitted.model_dump_json().encode()


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchSubmitted,
    summary="Submit many jobs at once",
    description=(
        f"1 to {MAX_BATCH} jobs, enqueued in a few round trips. Every job is validated before any is enqueued: "
        "if one is invalid, none is, and the error names its index (`index`, field paths `body.jobs.<i>....`)."
    ),
    responses=errors(400, 404, 409, 413, 415, 422, 507),
)
async def submit_batch(batch: BatchRequest, client: AsyncClientDep) -> BatchSubmitted:
    try:
        return BatchSubmitted(jobs=await client.submit_many(batch.jobs))
    except InvalidArgs as exc:
        raise _located(exc, f"body.jobs.{exc.details['index']}.args") from exc


@router.get(
    "/{job_id}",
    response_model=JobInfo,
    summary="A job's state",
    responses=errors(404, notes={404: "No such job (or it expired after FERRY_RESULT_TTL_S)"}),
)
async def status(job_id: JobId, client: AsyncClientDep) -> JobInfo:
    return await client.status(job_id)


@router.get(
    "/{job_id}/result",
    response_model=JobResult,
    summary="A job's result, waiting up to wait_s for it",
    description=(
        "Long-polls up to `wait_s` seconds. Always 200 for a known job:\n\n"
        "- `ready: true, status: finished`: `value` is the task's return value (a large array comes back as "
        '`{"$ferry_ref": ObjectRef}`: fetch it from `GET /v1/objects/{id}`).\n'
        "- `ready: true, status: failed` or `canceled`: `error` says why. This includes a job whose input "
        "did not fit the node's shared memory (the error names /dev/shm and the fix); the request itself succeeded.\n"
        "- `ready: false`: still queued or started after `wait_s`; ask again."
    ),
    responses={200: {"content": {"application/json": {"examples": RESULT_EXAMPLES}}}, **errors(404, 422)},
)
async def result(
    job_id: JobId,
    client: AsyncClientDep,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the result (long-poll)")] = 0,
) -> JobResult:
    # While it waits, the request holds no thread and no Redis connection: a future woken by the
    # process's one `ferry:done` subscription (shared/done.py). A client that leaves costs that future
    # until wait_s ends, nothing more.
    return await client.result(job_id, wait_s)


@router.delete(
    "/{job_id}",
    response_model=JobInfo,
    summary="Cancel a job",
    description="A queued job is canceled at once; a started (running) one is interrupted "
    "(its status may read `started` briefly).",
    responses=errors(404, 409, notes={409: "The job already finished, failed or was canceled"}),
)
async def cancel(job_id: JobId, client: AsyncClientDep) -> JobInfo:
    return await client.cancel(job_id)


def _located(exc: InvalidArgs, prefix: str, message: str | None = None, **extra: object) -> InvalidArgs:
    """The same error, its field paths starting at the request body (`body.args.seconds`), like FastAPI's own."""
    problems = [
        {**p, "field": prefix if p["field"] == "(args)" else f"{prefix}.{p['field']}"}
        for p in exc.details.get("errors", [])
    ]
    return InvalidArgs(message or exc.message, **{**exc.details, **extra, "errors": problems})
