"""/metrics: the whole deployment's Prometheus metrics, read from Redis (shared/metrics.py; docs/metrics.md).

Behind the token like every other route: Prometheus sends it with `authorization: {credentials: <token>}`
in its scrape config. Any producer answers for the whole deployment, so scrape one of them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from shared.metrics import CONTENT_TYPE, collect

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole deployment",
    description="Jobs by queue and status, outcomes and requeues per task, run and wait time histograms, "
    "oldest queued job per queue, workers by state, each node's shared-memory cache, objects, Redis memory. "
    "Text exposition format 0.0.4; two Redis round trips whatever the number of jobs.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    conn = request.app.state.client.conn
    text = await run_in_threadpool(collect, conn, request.app.state.settings)
    return Response(text, media_type=CONTENT_TYPE)
