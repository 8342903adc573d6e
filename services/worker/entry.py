"""The worker service's entry point, mounted by the admin CLI as `ferry worker`."""

from __future__ import annotations

from typing import Annotated

import typer

from services.worker.node import Node
from shared.cli import handle_errors, settings
from shared.logs import configure


@handle_errors
def worker(
    processes: Annotated[int | None, typer.Option(
        "--processes", "-p",
        help="Worker processes on this node (default: FERRY_PROCESSES, else the CPU count).")] = None,
    queues: Annotated[str | None, typer.Option(
        "--queues", "-q", help="Comma-separated queues in priority order (default: FERRY_QUEUES).")] = None,
) -> None:
    """Run a worker node: N long-lived processes that run jobs, restarted if they crash.

    SIGTERM or Ctrl-C lets running jobs finish; a second one kills them (their jobs are requeued).
    The node id is FERRY_NODE_ID (default: the host name); each node has its own shared-memory cache.
    """
    config = settings()
    configure(config.log_level)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else config.queues
    config = config.model_copy(update={"queues": queue_list})
    if processes is not None and processes < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--processes")
    raise typer.Exit(Node(config, processes or config.processes, queue_list).run())
