"""Every Redis key, pub/sub channel and shared-memory name Ferry uses, in one place.

RQ's own keys stay exactly as RQ writes them (`rq:...`) so that `rq info` and rq-dashboard see Ferry's
queues, jobs and workers. Ferry's additions live under `ferry:`; segments in /dev/shm start `ferry_`.
"""

from __future__ import annotations

# --- RQ's keys (rq/job.py, rq/queue.py, rq/registry.py, rq/results.py, rq/worker_registration.py) ---
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"
QUEUE_PREFIX = "rq:queue:"
JOB_PREFIX = "rq:job:"


def job(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def queue(name: str) -> str:
    return f"{QUEUE_PREFIX}{name}"


def started(queue_name: str) -> str:
    """RQ 3's StartedJobRegistry: members `job_id:execution_id`, score = heartbeat deadline."""
    return f"rq:wip:{queue_name}"


def finished(queue_name: str) -> str:
    return f"rq:finished:{queue_name}"


def failed(queue_name: str) -> str:
    return f"rq:failed:{queue_name}"


def canceled(queue_name: str) -> str:
    return f"rq:canceled:{queue_name}"


def results(job_id: str) -> str:
    """RQ 3's result stream for a job."""
    return f"rq:results:{job_id}"


def worker(name: str) -> str:
    return f"rq:worker:{name}"


EXECUTIONS_SUFFIX = ":executions"
RQ_EXECUTION_PREFIX = "rq:execution:"


def worker_executions(name: str) -> str:
    """RQ 3's index of a worker's active executions (rq/executions.py): a set of `job_id:execution_id`."""
    return f"{worker(name)}{EXECUTIONS_SUFFIX}"


def rq_execution(job_id: str, execution_id: str) -> str:
    """RQ 3's execution hash (id, job_id, created_at, last_heartbeat, worker_name)."""
    return f"{RQ_EXECUTION_PREFIX}{job_id}:{execution_id}"


def rq_pubsub(worker_name: str) -> str:
    """RQ's command channel for a worker (rq/command.py): `send_stop_job_command` publishes JSON there."""
    return f"rq:pubsub:{worker_name}"


def workers_by_queue(queue_name: str) -> str:
    return f"rq:workers:{queue_name}"


# --- Ferry's keys ---
NODES = "ferry:nodes"  # zset: node id -> last heartbeat (unix seconds)
OBJECTS = "ferry:objects"  # zset: object id -> creation time
OBJECT_EXPIRY = "ferry:objects:expiry"  # zset: object id -> logical expiry (unix s); swept when no live job needs it
DEPLOYMENT = "ferry:deployment"  # a short random id, set once (SET NX): names this deployment's files in /dev/shm
WAKE_CHANNEL = "ferry:wake"  # published on every enqueue so idle workers wake at once
DONE_CHANNEL = "ferry:done"  # job id published when a job reaches a final state (finished, failed, canceled)
IDLE_WORKERS = "ferry:idle"  # set of worker names whose last claim found every queue empty (enqueue wakes only then)
IDEMPOTENCY_PREFIX = "ferry:idem:"
EVENTS_CHANNEL = "ferry:events"  # job id published when a running job reports progress (shared/job_context.py)
METRICS_OBJECT_SCAN = "ferry:metrics:objects_scan"  # hash: /metrics' cursor and totals over the objects index


def node(node_id: str) -> str:
    return f"ferry:node:{node_id}"


def node_stats(node_id: str) -> str:
    """Hash of the node's cache counters (bytes_from_redis, bytes_from_shm, hits, misses, ...)."""
    return f"ferry:node:{node_id}:stats"


def catalog(node_id: str) -> str:
    """The node's task catalog (JSON, see shared/catalog.py); expires with the node's liveness."""
    return f"ferry:catalog:{node_id}"


def control_channel(worker_name: str) -> str:
    return f"ferry:control:{worker_name}"


def claim(worker_name: str) -> str:
    """Hash {exec, ids}: the worker's latest claim (`id@queue,...`), read by replays and dead-worker requeues."""
    return f"ferry:claim:{worker_name}"


def idempotency(key: str) -> str:
    return f"{IDEMPOTENCY_PREFIX}{key}"


def tag(name: str) -> str:
    """Zset of the jobs carrying a tag: job id -> submit time (unix s); trimmed, expiring (shared/job_settings.py)."""
    return f"ferry:tag:{name}"


def object_meta(object_id: str) -> str:
    """Written last when an object is put: its presence means every chunk is there."""
    return f"ferry:obj:{object_id}"


def object_chunk(object_id: str, index: int) -> str:
    return f"ferry:obj:{object_id}:chunk:{index}"


def object_jobs(object_id: str) -> str:
    """Zset of the jobs that reference the object: job id -> time the reference was taken."""
    return f"ferry:obj:{object_id}:jobs"


def object_tombstone(object_id: str) -> str:
    """Why a forcibly deleted object is gone, so the jobs that needed it fail with that reason."""
    return f"ferry:obj:{object_id}:deleted"


def upload_chunk(upload_id: str, index: int) -> str:
    """A chunk written under a temporary upload id while the content hash is still being computed."""
    return f"ferry:upload:{upload_id}:chunk:{index}"


# --- Shared-memory names (files in /dev/shm) ---
# `ferry_<node>_<deployment>_<object>`: the node id first (ids have no "_"), then the deployment id (8 hex
# characters stored in Redis), so that two deployments on one host, even with equal node ids, never
# touch each other's files. One lock file per node and deployment; per-object locks are byte ranges in it.
SEGMENT_PREFIX = "ferry_"
PART_MARK = ".part"  # a segment still being written; never attached
LOCK_SUFFIX = ".lock"
HOST_LEDGER = "ferry-ledger"  # per host (and user): the shared-memory bytes each node holds, for the one budget


def node_segment_prefix(node_id: str, deployment: str) -> str:
    return f"{SEGMENT_PREFIX}{node_id}_{deployment}_"


def segment(deployment: str, node_id: str, object_id: str) -> str:
    return f"{node_segment_prefix(node_id, deployment)}{object_id}"


def partial_segment(deployment: str, node_id: str, object_id: str) -> str:
    return f"{segment(deployment, node_id, object_id)}{PART_MARK}"


def node_lock(deployment: str, node_id: str) -> str:
    return f"{SEGMENT_PREFIX}{node_id}_{deployment}{LOCK_SUFFIX}"
