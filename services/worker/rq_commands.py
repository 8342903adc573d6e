"""RQ's own worker commands and bookkeeping, honoured by Ferry's worker processes.

- `rq.command.send_stop_job_command(redis, job_id)` publishes `{"command": "stop-job", "job_id": ...}` on
  `rq:pubsub:<worker>`; every Ferry worker process listens there as well as on its own control channel.
  A stop-job is Ferry's cancel of a running job (the CANCEL script, then the SIGUSR1 interrupt): the job
  ends `canceled` and is not retried. RQ 3 marks such a job `stopped` (not retried either); Ferry keeps one
  final state for "ended on request" so that waiters, counters, registries and idempotency keys need no
  fourth final status, and RQ's tools list it in the CanceledJobRegistry. Other RQ commands (shutdown,
  kill-horse, stop-execution) are ignored: stop a node with SIGTERM (`ferry` nodes drain cleanly).
- RQ 3's executions index is written by the claim and finish scripts (lua_jobsurface.py); the heartbeat
  keeps its keys alive with the claim record and adds the run time to `total_working_time` (`refresh`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable

import redis

from shared import keys
from shared.lifecycle import Claimed

STOP_JOB = "stop-job"


def stop_job_id(data: bytes | str) -> str | None:
    """The job id of an RQ stop-job command; None for any other (or a malformed) message."""
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("command") != STOP_JOB:
        return None
    job_id = payload.get("job_id")
    return job_id if isinstance(job_id, str) and job_id else None


class WorkingTime:
    """Seconds spent running jobs since the last heartbeat: added to RQ's `total_working_time` with it, so the
    finish script carries one command less per job (RQ's figure lags by at most a heartbeat interval)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds += seconds

    def take(self) -> float:
        with self._lock:
            seconds, self._seconds = self._seconds, 0.0
        return seconds


def refresh(pipe: redis.client.Pipeline, worker: str, held: Iterable[Claimed], ttl_s: int,
            working: WorkingTime) -> None:
    """Heartbeat: keep the worker's executions index and the execution hashes of the jobs it holds alive, and
    add the time spent running jobs since the last one to RQ's `total_working_time`."""
    pipe.expire(keys.worker_executions(worker), ttl_s)
    for job in held:
        pipe.expire(keys.rq_execution(job.id, job.execution_id), ttl_s)
    seconds = working.take()
    if seconds > 0:
        pipe.hincrbyfloat(keys.worker(worker), "total_working_time", seconds)
