"""The FastAPI application: routes, error handlers, the token gate, the body-size limit, and the clients.

Connection budget (per producer process), so that no kind of request can starve the others:
- job and catalog routes: one AsyncClient; each command borrows a connection from a blocking pool of
  `MAX_CONNECTIONS` for one round trip, so a burst queues for a connection instead of failing;
- long-polls (`/result?wait_s=`): no connection and no thread while they wait; one `ferry:done`
  subscription per process wakes them (shared/done.py), then one pooled round trip reads the result;
- objects, queues and nodes (sync routes, in the thread pool): the sync Client's own pool;
- `/healthz`: a connection of its own, without retries.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.producer.access_log import AccessLog
from services.producer.auth import TokenGate
from services.producer.dashboard import mount_dashboard
from services.producer.deps import api_token, bearer
from services.producer.docs import install_docs
from services.producer.errors import CatchAll, install_error_handlers
from services.producer.fast_submit import FastSubmit
from services.producer.limits import BodyLimit
from services.producer.routes import job_events, jobs, meta, metrics, objects, pause, schedules, views, workflows
from services.producer.schemas import COMMON_ERRORS
from shared.async_client import AsyncClient
from shared.client import Client
from shared.logs import configure
from shared.redis_conn import connect, redact
from shared.settings import Settings, get_settings

log = logging.getLogger("ferry.producer")

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


def create_app(settings: Settings | None = None, freeze_gc: bool = False) -> FastAPI:
    """The API for `settings` (default: from the environment); it connects to Redis when it starts serving.

    `freeze_gc` (the server processes, not apps embedded in tests): see `_freeze_startup_objects`.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = Client(settings=settings)
        app.state.client = client
        app.state.aclient = aclient = AsyncClient(client.url, settings)
        app.state.health_conn = connect(
            client.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=HEALTH_TIMEOUT_S,
            socket_timeout=HEALTH_TIMEOUT_S,
        )
        await aclient.done.start()  # subscribed before the first long-poll arrives
        log.info("using Redis at %s", redact(client.url))
        if freeze_gc:
            _freeze_startup_objects()
        try:
            yield
        finally:
            await aclient.close()
            app.state.health_conn.close()
            client.close()
            log.info("stopped")

    app = FastAPI(
        title="Ferry",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets instead of a CDN (services/producer/docs.py)
        redoc_url=None,
        openapi_tags=[
            {"name": "jobs", "description": "Submit jobs, follow them, fetch results, cancel."},
            {"name": "objects", "description": "Large inputs (and outputs): stored once in Redis, shared per node."},
            {"name": "service", "description": "Tasks, queues, nodes and health."},
            {"name": "schedules", "description": "Periodic jobs (cron): each tick runs once across all nodes."},
        ],
    )
    app.state.settings = settings
    app.state.api_token = api_token(settings)
    install_error_handlers(app)
    install_docs(app)
    app.add_middleware(FastSubmit)  # innermost: POST /v1/jobs past every check below, without FastAPI's overhead
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(TokenGate, token=app.state.api_token)  # before the body is read: 401 beats 400 and 413
    app.add_middleware(CatchAll)  # added late, so outer: it sees what every other layer let through
    app.add_middleware(AccessLog, enabled=settings.access_log)  # outermost: logs the status CatchAll answered

    documented = [Depends(bearer)]  # the check itself is TokenGate's; this shows the scheme in /docs
    for module in (jobs, job_events, objects, meta, metrics, views, schedules, workflows, pause):
        app.include_router(module.router, dependencies=documented, responses=COMMON_ERRORS)
    app.include_router(meta.health_router)
    mount_dashboard(app)
    return app


def create_app_from_env() -> FastAPI:
    """The app factory each `ferry producer --workers N` process calls (settings from the environment)."""
    settings = get_settings()
    configure(settings.log_level)
    return create_app(settings, freeze_gc=True)


def _freeze_startup_objects() -> None:
    """Keep the objects of start-up (the app, its routes and models, the imported modules) out of every
    later garbage collection.

    Under load a full collection walked all of them: ~55 ms with the event loop stopped, every few
    seconds, which was the submit route's p99 (66 ms at 2,500 requests/s). Collected once here first,
    so no garbage is frozen with them; what is created later is collected as usual.
    """
    gc.collect()
    gc.freeze()


def _version() -> str:
    try:
        return version("ferry")
    except PackageNotFoundError:
        return "0"
