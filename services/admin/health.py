"""`ferry health`: the liveness check behind docker's healthcheck (exit 0 healthy, 1 not healthy, 3 no Redis).

Exit 1 is what docker's HEALTHCHECK means by "unhealthy", and it is the CLI's "the answer is no" (as for a failed job).
"""

from __future__ import annotations

from typing import Annotated

import redis
import typer
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.admin.common import ago, command, console, fail, settings
from shared import keys
from shared.admin import Admin
from shared.errors import EXIT_FAILED
from shared.redis_conn import connect, ping, redact
from shared.replies import text

CHECK_TIMEOUT_S = 2.0  # a healthcheck must answer well within docker's default 30 s timeout


@command
def health(
    node: Annotated[
        str | None,
        typer.Option("--node", metavar="NODE_ID",
            help="Also require this node's heartbeat to be fresh and the node not stopped."),
    ] = None,
    this_node: Annotated[
        bool,
        typer.Option("--this-node",
            help="--node with this machine's node id (FERRY_NODE_ID, else the host name, as `ferry worker` uses)."),
    ] = False,
) -> None:
    """Exit 0 if Redis answers (and, with --node, the node is alive); else one line and exit 1 (node) or 3 (Redis).

    A worker container's healthcheck: `ferry health --this-node`.
    """
    config = settings()
    if this_node:
        node = node or config.node_id
    url = config.resolved_redis_url()
    # One quick attempt, no retries: a healthcheck reports, the orchestrator retries.
    conn = connect(url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S,
                   retry=Retry(NoBackoff(), 0))
    try:
        ping(conn, url)  # RedisUnavailable (exit 3) naming the URL
        if node is None:
            console.print(f"ok: Redis at {redact(url)} answers", highlight=False)
            return
        found = next((n for n in Admin(conn, config).nodes() if n.id == node), None)
        state = text(conn.hget(keys.node(node), "state") or b"")
    except redis.RedisError as exc:
        fail(f"Redis at {redact(url)} failed the check: {exc}", EXIT_FAILED)
    finally:
        conn.close()
    if found is None:
        fail(f"node {node} is not registered in Redis at {redact(url)}", EXIT_FAILED)
    if not found.alive:
        why = "it has stopped" if state == "stopped" else f"its last heartbeat was {ago(found.last_heartbeat)}"
        fail(f"node {node} is not alive: {why} (a live node beats every {config.heartbeat_interval_s:g}s)", EXIT_FAILED)
    console.print(f"ok: node {node} is alive (heartbeat {ago(found.last_heartbeat)}, {found.processes} processes)",
                  highlight=False)
