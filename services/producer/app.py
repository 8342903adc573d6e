"""The FastAPI application: routes, error handlers, the body-size limit, and one shared Client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import Depends, FastAPI
from redis.retry import Retry
from redis.backoff import NoBackoff

from shared.client import Client
from shared.redis_conn import connect, redact
from shared.settings import Settings, get_settings
from services.producer.deps import api_token, require_token
from services.producer.errors import CatchAll, install_error_handlers
from services.producer.limits import BodyLimit
from services.producer.access_log import AccessLog
from services.producer.dashboard import mount_dashboard
from services.producer.routes import jobs, meta, metrics, objects, views
from services.producer.schemas import COMMON_ERRORS

log = logging.getLogger("ferry.producer")

WAIT_THREADS = 100  # long-polling requests waiting at once; more wait their turn for a thread
HEALTH_TIMEOUT_S = 2.0

DESCRIPTION = """
Submit jobs to Ferry's queues, wait for their results, and upload the large arrays they read.

* **Jobs**: `POST /v1/jobs` with `{"task", "args"}` answers 202 with the job id;
  `GET /v1/jobs/{id}/result?wait_s=30` long-polls for the value.
* **Objects**: `POST /v1/objects` with a .npy file (`Content-Type: application/x-npy`) answers with an
  ObjectRef; pass it as a task's array argument and every node fetches the data once into shared memory.
* **Auth**: when the producer sets `FERRY_API_TOKEN`, every route but `/healthz` needs
  `Authorization: Bearer <token>`.
* **Errors** always look like `{"error": {"type": "UnknownTask", "message": "..."}}`; the message says how to fix it.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: from the environment); it connects to Redis when it starts serving."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = Client(settings=settings)
        app.state.client = client
        app.state.health_conn = connect(
            client.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=HEALTH_TIMEOUT_S, socket_timeout=HEALTH_TIMEOUT_S
        )
        app.state.wait_limiter = anyio.CapacityLimiter(WAIT_THREADS)
        log.info("using Redis at %s, %d tasks", redact(client.url), len(client.tasks.names()))
        try:
            yield
        finally:
            app.state.health_conn.close()
            client.close()
            log.info("stopped")

    app = FastAPI(
        title="Ferry",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Submit jobs, follow them, fetch results, cancel."},
            {"name": "objects", "description": "Large inputs (and outputs): stored once in Redis, shared per node."},
            {"name": "service", "description": "Tasks, queues, nodes and health."},
        ],
    )
    app.state.settings = settings
    app.state.api_token = api_token(settings)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(CatchAll)  # added late, so outer: it sees what every other layer let through
    app.add_middleware(AccessLog, enabled=settings.access_log)  # outermost: logs the status CatchAll answered

    protected = [Depends(require_token)]
    for module in (jobs, objects, meta, metrics, views):
        app.include_router(module.router, dependencies=protected, responses=COMMON_ERRORS)
    app.include_router(meta.health_router)
    mount_dashboard(app)
    return app


def _version() -> str:
    try:
        return version("ferry")
    except PackageNotFoundError:
        return "0"
