"""Finding jobs whose worker died without settling them, and giving them back to their queue.

Every started job sits in its queue's started registry scored by a heartbeat deadline that its worker
pushes forward every FERRY_HEARTBEAT_INTERVAL_S. Any node's supervisor runs `reap` every
FERRY_REAP_INTERVAL_S: a deadline in the past means the process (or its whole node) is gone. The jobs go
to the front of their queues (the one that was running uses a retry; prefetched ones behind it do not).
The reap script is idempotent, so two reapers racing requeue a job once.
"""

from __future__ import annotations

import logging

from shared.handoff import recover_lost_results
from shared.lifecycle import NODE_DIED, Failure, Lifecycle
from shared.limits import promote_waiting
from shared.locality import forget_dead_nodes
from shared.objects.lifetime import sweep_expired
from shared.settings import Settings

log = logging.getLogger("ferry.reaper")


def reap(lifecycle: Lifecycle, settings: Settings) -> list[str]:
    """Requeue (or fail, when out of retries) every started job whose heartbeat deadline passed."""
    reason = f"abandoned: its worker sent no heartbeat for {settings.abandoned_after_s}s (process or node died)"
    reaped = []
    for outcome in lifecycle.reap(Failure(reason, reason, retryable=True, reason=NODE_DIED, front=True)):
        log.info("job %s: %s; %s", outcome.job_id, reason, outcome.outcome, extra={"job_id": outcome.job_id})
        reaped.append(outcome.job_id)
    promote_waiting(lifecycle.conn, sweep=True)  # waiting jobs of limits with free slots (a safety net)
    sweep_expired(lifecycle.conn)  # objects past their expiry that no job still needs
    forget_dead_nodes(lifecycle.conn, settings)  # a killed node's object holdings, for placement
    recover_lost_results(lifecycle.conn, settings)  # results whose write behind died with its worker: run again
    return reaped
