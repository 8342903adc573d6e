"""GET /v1/jobs/{id}/events: a job's status and progress as server-sent events, until it is final.

Each event is `event: job` with the job's JobInfo as JSON, sent when its status or progress changes
(shared/job_events.py: pushed by the process's one subscription, no per-stream polling once the job runs);
a comment line keeps idle connections open. The stream ends after the final state. Streams per producer
process are bounded (FERRY_MAX_EVENT_STREAMS): one more is refused with 503 rather than queued.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from services.producer.deps import AsyncClientDep
from services.producer.errors import error_response
from services.producer.schemas import errors
from shared.async_client import AsyncClient
from shared.models import JobInfo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

KEEPALIVE_S = 15.0
MAX_STREAM_S = 24 * 3600.0  # a stream for a job that never ends still ends (the client may reconnect)

JobId = Annotated[str, Path(min_length=1, max_length=200, description="the id `POST /v1/jobs` returned")]


class _Streams:
    """Open streams of this process (the event loop is single-threaded: a plain counter is enough)."""

    open = 0


@router.get(
    "/{job_id}/events",
    summary="A job's status and progress, live (server-sent events)",
    description=(
        "A `text/event-stream`: first the job as it is, then one `event: job` (data: the JobInfo JSON, as "
        "`GET /v1/jobs/{id}`) each time its status or progress changes; the stream ends after the job is "
        "`finished`, `failed` or `canceled`. Comment lines (`: keepalive`) are sent every 15 s without a change. "
        "503 when FERRY_MAX_EVENT_STREAMS streams are already open on this process."
    ),
    responses={200: {"content": {"text/event-stream": {"example": 'event: job\ndata: {"id": "4f1c...", '
                                                                   '"status": "started", "progress": '
                                                                   '{"fraction": 0.5, "message": "half"}}\n\n'}}},
               **errors(404, 503, notes={503: "FERRY_MAX_EVENT_STREAMS streams are open (or Redis is "
                                                   "unreachable)"})},
    response_model=None,
)
async def events(job_id: JobId, request: Request, client: AsyncClientDep) -> Response:
    limit = client.settings.max_event_streams
    if _Streams.open >= limit:
        return error_response(503, "TooManyStreams", f"{_Streams.open} event streams are open on this producer "
                              f"process, the most FERRY_MAX_EVENT_STREAMS ({limit}) allows; poll GET /v1/jobs/{job_id} "
                              "or raise the setting")
    first = await client.status(job_id)  # 404 before the stream starts
    _Streams.open += 1
    return StreamingResponse(_stream(client, job_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(client: AsyncClient, job_id: str, first: JobInfo) -> AsyncIterator[bytes]:
    try:
        async for info in client.watch(job_id, MAX_STREAM_S, keepalive_s=KEEPALIVE_S):
            if info is None:
                yield b": keepalive\n\n"
            else:
                yield b"event: job\ndata: " + info.model_dump_json().encode() + b"\n\n"
    finally:
        _Streams.open -= 1
