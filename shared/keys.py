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
WAKE_CHANNEL = "ferry:wake"  # broadcast wake-up of every idle worker (resume, a freed limit); enqueues wake one
DONE_CHANNEL = "ferry:done"  # job id published when a job reaches a final state (finished, failed, canceled)
IDLE_WORKERS = "ferry:idle:workers"  # hash: idle worker -> the queues it waits on (its last claim found them empty)
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


def idle_on(queue_name: str) -> str:
    """Set of the idle workers waiting on a queue: an enqueue there wakes one of them (lifecycle `wake`)."""
    return f"ferry:idle:queue:{queue_name}"


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


# --- Delayed jobs (shared/delays.py, services/worker/promoter.py) ---
PROMOTER_LEASE = "ferry:promoter"  # string: the node id allowed to promote due jobs (SET NX PX, renewed)
DELAYS_WAKE_CHANNEL = "ferry:delays:wake"  # published when a job due before the promoter's next wake-up is scheduled
DELAYS_WAKE_AT = "ferry:delays:wake_at"  # unix seconds the promoter sleeps until (an earlier due time publishes)


def scheduled(queue_name: str) -> str:
    """RQ's ScheduledJobRegistry: members job ids, score = due time in unix seconds (RQ's enqueue_at writes it)."""
    return f"rq:scheduled:{queue_name}"


# --- Periodic jobs (shared/schedules.py) ---
SCHEDULES = "ferry:schedules"  # hash: schedule name -> JSON (the ones added at run time)
SCHEDULES_PAUSED = "ferry:schedules:paused"  # set of paused schedule names (run-time or code-declared)


def schedule_state(name: str) -> str:
    """Hash {since, last_tick, last_job, fired, skipped}: a schedule's progress, moved only forward."""
    return f"ferry:schedule:{name}"


def schedules_code(node_id: str) -> str:
    """The node's code-declared schedules (JSON list); expires with the node's liveness."""
    return f"ferry:schedules:code:{node_id}"


# --- Locality-aware placement (shared/locality.py) ---
HOLDING_NODES = "ferry:holding"  # set of node ids that have published holdings (so dead ones are found cheaply)


def holders(object_id: str) -> str:
    """Set of node ids whose shared memory holds the object (published on fetch and adopt, dropped on eviction)."""
    return f"ferry:holders:{object_id}"


def node_holds(node_id: str) -> str:
    """Set of object ids the node holds: how its entries in every `holders` set are dropped when it stops or dies."""
    return f"ferry:node:{node_id}:holds"


def offers(queue_name: str) -> str:
    """Zset of the queue's jobs offered to one node first: job id -> end of the offer (unix s)."""
    return f"ferry:offers:{queue_name}"


def preferred(node_id: str) -> str:
    """List of job ids offered to the node first; its claims take them before anything else."""
    return f"ferry:prefer:{node_id}"


# --- Results written behind (shared/handoff.py) ---
PENDING_OBJECTS = "ferry:objects:pending"  # zset: result object id -> when its write to Redis began (unix s)


def object_pending(object_id: str) -> str:
    """Hash {job, queue, worker, node, kind, dtype, shape, nbytes}: a result still being written to Redis."""
    return f"ferry:obj:{object_id}:pending"


# --- Workflows: RQ 3's dependency keys (rq/job.py, rq/registry.py), spelled as RQ spells them ---
def dependents(job_id: str) -> str:
    """Set of the jobs waiting for this one (RQ's `Job.dependents_key`)."""
    return f"{JOB_PREFIX}{job_id}:dependents"


def dependencies(job_id: str) -> str:
    """Set of the jobs this one waits for. RQ 3 spells it with two colons (`rq:job::<id>:dependencies`)."""
    return f"{JOB_PREFIX}:{job_id}:dependencies"


def deferred(queue_name: str) -> str:
    """RQ's DeferredJobRegistry: jobs waiting for their dependencies, scored by when they were deferred."""
    return f"rq:deferred:{queue_name}"


def workflow(workflow_id: str) -> str:
    """Hash {jobs, spec, created_at}: a workflow's job ids and its tree (shared/workflows.py)."""
    return f"ferry:wf:{workflow_id}"


# --- Pause and limits (shared/limits.py, shared/lifecycle/lua_limits.py) ---
RQ_SUSPENDED = "rq:suspended"  # RQ's `rq suspend`: Ferry's global pause is this very key
PAUSED_QUEUES = "ferry:paused"  # set of paused queue names (exists only while some queue is paused)
LIMIT_PREFIX = "ferry:limit:"  # + limit name (`task:<task>` or `key:<limit key>`): the limit's config hash
LIMITS_DUE = "ferry:limits:due"  # zset: limit hash key -> unix ms when its rate window lets a waiting job start
LIMITS_WAITING = "ferry:limits:waiting"  # set: JSON [limit hash key, node or ""] of every non-empty waiting list
LIMITS_WAITING_BY_QUEUE = "ferry:limits:waiting_by_queue"  # hash: queue -> jobs set aside for a limit
RQ_RATE_LIMIT_PREFIX = "rq:rl:"  # RQ 3's RateLimitRegistry: rq:rl:<key> (config), :allowed, :rate_limited


def limit(name: str) -> str:
    """A limit's config hash; `:running` (hash execution -> node), `:starts` (zset), `:waiting` (list) hang off it,
    and `:node:<node>:running` (set) / `:node:<node>:waiting` (list) for a per-node limit."""
    return f"{LIMIT_PREFIX}{name}"


# --- Same-host puts written behind (shared/objects/local_put.py, shared/objects/put_writer.py) ---
PUTS_PENDING = "ferry:objects:puts"  # zset: object id put write-behind -> when its put returned (unix s)


def node_puts(node_id: str) -> str:
    """List of object ids put into the node's memory for it to write to Redis (a doorbell; the zset is the truth)."""
    return f"ferry:node:{node_id}:puts"
