"""Finding jobs whose worker died without settling them, and giving them back to their queue.

Every started job sits in its queue's started registry scored by a heartbeat deadline that its worker
pushes forward every FERRY_HEARTBEAT_INTERVAL_S. Any node's supervisor runs `reap` every
FERRY_REAP_INTERVAL_S: a deadline in the past means the process (or its whole node) is gone. The
settle script is idempotent, so two reapers racing retry a job once.
"""

from __future__ import annotations

import logging

import redis

from shared import keys
from shared.objects.lifetime import sweep_expired
from shared.scripts import Scripts
from shared.settings import Settings
from shared.timeutil import unix_now
from services.worker.process import settle_failure

log = logging.getLogger("ferry.reaper")


def reap(conn: redis.Redis, scripts: Scripts, settings: Settings) -> list[str]:
    """Requeue (or fail, when out of retries) every started job whose heartbeat deadline passed."""
    now = unix_now()
    reaped = []
    for raw_queue in conn.smembers(keys.RQ_QUEUES):
        queue = raw_queue.decode()[len(keys.QUEUE_PREFIX) :]
        for raw_member in conn.zrangebyscore(keys.started(queue), "-inf", now):
            member = raw_member.decode()
            job_id = member.split(":")[0]
            reason = f"abandoned: its worker sent no heartbeat for {settings.abandoned_after_s}s (process or node died)"
            outcome = settle_failure(scripts, job_id, queue, member, reason, reason, True, "", settings.failure_ttl_s)
            if outcome != "gone":
                log.warning("job %s: %s; %s", job_id, reason, outcome)
                reaped.append(job_id)
        for registry in (keys.finished(queue), keys.failed(queue), keys.canceled(queue)):
            conn.zremrangebyscore(registry, "-inf", now)  # entries are scored by expiry
    sweep_expired(conn)  # objects past their expiry that no job still needs
    return reaped
