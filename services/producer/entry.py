"""The producer service's entry point, mounted by the admin CLI as `ferry producer`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from shared.cli import handle_errors, settings
from shared.errors import RedisUnavailable
from shared.logs import configure
from shared.ports import require_free
from shared.redis_conn import is_not_redis, probe
from shared.tasks import load_tasks

log = logging.getLogger("ferry.producer")

GRACEFUL_SHUTDOWN_S = 10  # long-polls are cut after this; their clients simply ask again


@handle_errors
def producer(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: FERRY_API_HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on (default: FERRY_API_PORT).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Server processes sharing the port (default: FERRY_API_WORKERS, 1). "
            "Each one is async; add processes to use more cores.",
        ),
    ] = None,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn  # here, not at import: every other `ferry` command starts faster without it

    from services.producer.app import create_app
    from services.producer.deps import api_token

    config = settings()
    configure(config.log_level)
    # Fail here, as one line and an exit code, rather than with a traceback from inside uvicorn's startup:
    # a malformed URL or something that is not Redis is a mistake to fix before serving. Refused or silent
    # may be a Redis that is still starting: the API serves 503 until it answers.
    url = config.resolved_redis_url()
    try:
        probe(url)
    except RedisUnavailable as exc:
        if is_not_redis(exc):
            raise
        log.warning("%s; serving 503 until it answers", exc.message)
    load_tasks(config.task_modules)  # a broken FERRY_TASK_MODULES fails here; validation itself uses the catalog
    workers = workers or config.api_workers
    host = host or config.api_host
    port = port or config.api_port
    require_free(host, port)  # a busy port is exit 2 with the option to change, not uvicorn's exit 3
    debug = config.log_level.upper() == "DEBUG"
    if not debug:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # our line below says where we listen
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info("API at %s, docs at %s/docs (%d process%s)", base, base, workers, "" if workers == 1 else "es")
    if api_token(config) is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("FERRY_API_TOKEN is not set, so anyone who can reach %s can submit jobs", base)
    uvicorn.run(
        # Several processes need an import string: each calls the factory and reads the same FERRY_* environment.
        create_app(config, freeze_gc=True) if workers == 1 else "services.producer.app:create_app_from_env",
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_config=None,  # keep Ferry's log format (shared.logs); uvicorn's loggers propagate to it
        access_log=debug,  # one line per request is for debugging, not for the hot path
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
