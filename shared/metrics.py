"""The deployment's Prometheus metrics, read from Redis in two round trips whatever Redis holds.

A scrape never walks jobs: the job counters and histograms come from one HGETALL of `ferry:metrics`
(written by the lifecycle scripts, layout in `shared/job_metrics.py`), queue figures from LLEN/ZCARD/
ZCOUNT per queue, the oldest queued job's age from the queue's head, workers from `rq:workers`, node
caches from `ferry:node:<id>:stats`, objects from a server-side sum over the `ferry:objects` index, and
Redis memory from INFO. Collection is split into pure steps (queue commands on a pipeline, then render
the replies) so the same code serves a sync `redis.Redis` (`collect`) and `redis.asyncio` (`collect_async`).

The text is Prometheus' exposition format 0.0.4, written here: no dependency, and it is a few dozen lines.
Names follow Prometheus' conventions (`ferry_` prefix, base units, `_total` counters); docs/metrics.md
lists every family with a Grafana-ready query.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from shared import job_metrics as jm
from shared import keys
from shared.settings import Settings
from shared.timeutil import rq_parse, unix_now

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Cache counters a node's worker processes keep in `ferry:node:<id>:stats` (shared/objects/cache.py).
NODE_COUNTERS = {
    "bytes_from_redis": ("ferry_node_cache_bytes_from_redis_total",
                         "Object bytes this node fetched from Redis into shared memory."),
    "bytes_from_shm": ("ferry_node_cache_bytes_from_shm_total",
                       "Object bytes jobs on this node read from shared memory without a fetch."),
    "hits": ("ferry_node_cache_hits_total", "Object reads served by a segment already in the node's shared memory."),
    "misses": ("ferry_node_cache_misses_total", "Object reads that had to fetch the object from Redis."),
    "evictions": ("ferry_node_cache_evictions_total",
                  "Segments evicted (least recently used) to stay within the budget."),
}

# A queue's first job's enqueue time, read in the same step as the head (the head can move between two reads).
_HEAD_ENQUEUED_AT = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return false end
return redis.call('HGET', ARGV[1] .. head, 'enqueued_at')
"""

# Number and total size of complete objects (meta hash present), summed over the `ferry:objects` index a
# slice at a time: each scrape walks at most OBJECT_SLICE entries from a cursor kept in
# keys.METRICS_OBJECT_SCAN (the exporter's only write) and reports the totals of the last complete
# pass. Summing 100,000 objects at once held Redis for 300 ms; a slice of 5,000 costs about 15 ms.
# With fewer objects than a slice, every scrape is exact. Returns {-1, -1} until a first pass
# completes (the exporter then leaves the figures out).
_OBJECT_TOTALS = """
local state = redis.call('HMGET', KEYS[2], 'cursor', 'count', 'bytes', 'done_count', 'done_bytes')
local cursor, count, total = tonumber(state[1] or '0'), tonumber(state[2] or '0'), tonumber(state[3] or '0')
local slice = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', KEYS[1], cursor, cursor + slice - 1)
for _, id in ipairs(ids) do
  local n = redis.call('HGET', ARGV[1] .. id, 'nbytes')
  if n then count = count + 1; total = total + tonumber(n) end
end
if #ids < slice then
  redis.call('HSET', KEYS[2], 'cursor', 0, 'count', 0, 'bytes', 0,
             'done_count', count, 'done_bytes', string.format('%d', total))
  return {count, string.format('%d', total)}
end
redis.call('HSET', KEYS[2], 'cursor', cursor + #ids, 'count', count, 'bytes', string.format('%d', total))
return {tonumber(state[4] or '-1'), state[5] or '-1'}
"""
OBJECT_SLICE = 5000


# --- the exposition format ---
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Exposition:
    """Metric families in the order they are declared; each family's samples follow its HELP and TYPE."""

    families: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)

    def declare(self, name: str, kind: str, help_text: str) -> None:
        self.families.setdefault(name, (kind, help_text, []))

    def add(self, family: str, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in (labels or {}).items())
        self.families[family][2].append(f"{family}{suffix}{{{label_text}}} {_number(value)}" if label_text
                                        else f"{family}{suffix} {_number(value)}")

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


# --- collection: round trip 1 ---
def _first(pipe: Any) -> None:
    pipe.hgetall(jm.METRICS_KEY)
    pipe.smembers(keys.RQ_QUEUES)
    pipe.smembers(keys.RQ_WORKERS)
    pipe.zrange(keys.NODES, 0, -1)
    pipe.eval(_OBJECT_TOTALS, 2, keys.OBJECTS, keys.METRICS_OBJECT_SCAN, keys.object_meta(""), OBJECT_SLICE)
    pipe.info("memory")


@dataclass
class _Plan:
    """What round trip 1 found, and so what round trip 2 asks for."""

    counters: dict[bytes, bytes]
    queues: list[str]
    workers: list[str]
    nodes: list[str]
    objects: tuple[int, int]
    memory: dict[str, Any]


def _plan(replies: list[Any], settings: Settings) -> _Plan:
    counters, queue_keys, worker_keys, node_ids, objects, memory = replies
    known = {_text(k)[len(keys.QUEUE_PREFIX):] for k in queue_keys}
    queues = list(settings.queues) + sorted(known - set(settings.queues))
    workers = sorted(_text(k)[len("rq:worker:"):] for k in worker_keys)
    return _Plan(counters, queues, workers, [_text(n) for n in node_ids], (int(objects[0]), int(objects[1])), memory)


# --- collection: round trip 2 ---
def _second(pipe: Any, plan: _Plan, now: float) -> None:
    for name in plan.queues:
        pipe.llen(keys.queue(name))
        pipe.zcard(keys.started(name))
        for registry in (keys.finished, keys.failed, keys.canceled):
            pipe.zcount(registry(name), now, "+inf")  # entries score by their expiry; expired ones linger until cleanup
        pipe.eval(_HEAD_ENQUEUED_AT, 1, keys.queue(name), keys.JOB_PREFIX)
    for name in plan.workers:
        pipe.hmget(keys.worker(name), "state", "ferry_node")
    for node_id in plan.nodes:
        pipe.hgetall(keys.node(node_id))
        pipe.hgetall(keys.node_stats(node_id))


QUEUE_REPLIES = 6


def _render(plan: _Plan, replies: list[Any], settings: Settings, now: float) -> str:
    out = Exposition()
    _render_job_counters(out, plan.counters)
    _render_queues(out, plan.queues, replies[: QUEUE_REPLIES * len(plan.queues)], now)
    offset = QUEUE_REPLIES * len(plan.queues)
    _render_workers(out, replies[offset : offset + len(plan.workers)])
    offset += len(plan.workers)
    _render_nodes(out, plan.nodes, replies[offset:], settings.abandoned_after_s, now)
    out.declare("ferry_objects", "gauge",
                "Complete objects stored in Redis (as of the exporter's last pass over the index).")
    out.declare("ferry_objects_bytes", "gauge",
                "Bytes of the complete objects stored in Redis (their data, not Redis overhead).")
    if plan.objects[0] >= 0:
        out.add("ferry_objects", plan.objects[0])
        out.add("ferry_objects_bytes", plan.objects[1])
    out.declare("ferry_redis_memory_used_bytes", "gauge", "Memory Redis uses (INFO memory used_memory).")
    out.add("ferry_redis_memory_used_bytes", int(plan.memory.get("used_memory", 0)))
    out.declare("ferry_redis_memory_max_bytes", "gauge", "Redis' maxmemory; 0 means no limit.")
    out.add("ferry_redis_memory_max_bytes", int(plan.memory.get("maxmemory", 0)))
    return out.text()


def _render_job_counters(out: Exposition, raw: Mapping[bytes, bytes]) -> None:
    out.declare("ferry_jobs_total", "counter",
                "Jobs that reached an outcome (finished, failed, canceled) or were retried after a failure, "
                "by queue and task.")
    out.declare("ferry_jobs_requeued_total", "counter",
                "Executions given back to their queue, by reason (worker_died, node_died, timeout).")
    buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    sums: dict[tuple[str, str], float] = {}
    for raw_field, raw_value in sorted(raw.items()):
        parts = _text(raw_field).split(jm.SEP)
        value = float(raw_value)
        if parts[0] == "jobs" and len(parts) == 4:
            out.add("ferry_jobs_total", value, {"queue": parts[1], "task": parts[2], "outcome": parts[3]})
        elif parts[0] == "requeued" and len(parts) == 4:
            out.add("ferry_jobs_requeued_total", value, {"queue": parts[1], "task": parts[2], "reason": parts[3]})
        elif parts[0] in ("run", "wait") and len(parts) == 3:
            buckets[(parts[0], parts[1])][parts[2]] = value
        elif parts[0] in ("run_sum", "wait_sum") and len(parts) == 2:
            sums[(parts[0][: -len("_sum")], parts[1])] = value
    for kind, help_text in (("run", "Time jobs ran, from start to finish or failure, by task."),
                            ("wait", "Time jobs waited in their queue before a worker started them, by task.")):
        family = f"ferry_job_{kind}_seconds"
        out.declare(family, "histogram", help_text)
        tasks = sorted({task for (k, task) in (*buckets, *sums) if k == kind})
        for task in tasks:
            counts = buckets.get((kind, task), {})
            cumulative = 0.0
            for bound in jm.BUCKETS_S:
                cumulative += counts.get(repr(bound), 0)
                out.add(family, cumulative, {"task": task, "le": repr(bound)}, suffix="_bucket")
            cumulative += counts.get(jm.INF, 0)
            out.add(family, cumulative, {"task": task, "le": jm.INF}, suffix="_bucket")
            out.add(family, sums.get((kind, task), 0.0), {"task": task}, suffix="_sum")
            out.add(family, cumulative, {"task": task}, suffix="_count")


def _render_queues(out: Exposition, names: list[str], replies: list[Any], now: float) -> None:
    out.declare("ferry_queue_jobs", "gauge",
                "Jobs per queue by status: queued (waiting), started (running), and finished, failed, "
                "canceled still kept.")
    out.declare("ferry_queue_oldest_job_age_seconds", "gauge",
                "Age of the job at the head of the queue; 0 when it is empty.")
    for index, name in enumerate(names):
        queued, started, finished, failed, canceled, head = replies[index * QUEUE_REPLIES : (index + 1) * QUEUE_REPLIES]
        for status, count in (("queued", queued), ("started", started), ("finished", finished),
                              ("failed", failed), ("canceled", canceled)):
            out.add("ferry_queue_jobs", count, {"queue": name, "status": status})
        enqueued = rq_parse(head) if head else None
        out.add("ferry_queue_oldest_job_age_seconds", round(max(0.0, now - enqueued.timestamp()), 3) if enqueued else 0,
                {"queue": name})


def _render_workers(out: Exposition, replies: list[Any]) -> None:
    out.declare("ferry_workers", "gauge",
                "Worker processes registered in rq:workers, by node and state (idle, busy, ...).")
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for state, node in replies:
        if state is None:
            continue  # the set still names a worker whose hash expired
        counts[(_text(node) if node else "", _text(state))] += 1
    for (node, state), count in sorted(counts.items()):
        out.add("ferry_workers", count, {"node": node, "state": state})


def _render_nodes(out: Exposition, node_ids: list[str], replies: list[Any], abandoned_after_s: float,
                  now: float) -> None:
    out.declare("ferry_node_up", "gauge",
                "1 while the node's heartbeat is younger than FERRY_ABANDONED_AFTER_S and it has not stopped.")
    out.declare("ferry_node_processes", "gauge", "Worker processes the node runs.")
    out.declare("ferry_node_last_heartbeat_timestamp_seconds", "gauge", "Unix time of the node's last heartbeat.")
    out.declare("ferry_node_shm_budget_bytes", "gauge",
                "The node's shared-memory budget (FERRY_SHM_BUDGET_BYTES or derived).")
    out.declare("ferry_node_shm_resident_bytes", "gauge", "Bytes of objects the node holds in /dev/shm.")
    for name, help_text in NODE_COUNTERS.values():
        out.declare(name, "counter", help_text + " Resets when the node restarts.")
    for index, node_id in enumerate(node_ids):
        raw, stats = replies[2 * index], replies[2 * index + 1]
        if not raw:
            continue
        info = {_text(k): _text(v) for k, v in raw.items()}
        counters = {_text(k): float(v) for k, v in stats.items()}
        beat = float(info.get("last_heartbeat", 0) or 0)
        labels = {"node": node_id}
        alive = info.get("state") != "stopped" and now - beat < abandoned_after_s
        out.add("ferry_node_up", 1 if alive else 0, labels)
        out.add("ferry_node_processes", int(info.get("processes", 0) or 0), labels)
        out.add("ferry_node_last_heartbeat_timestamp_seconds", beat, labels)
        out.add("ferry_node_shm_budget_bytes", int(info.get("shm_budget_bytes", 0) or 0), labels)
        out.add("ferry_node_shm_resident_bytes", counters.get("resident_bytes", 0), labels)
        for stat, (name, _help) in NODE_COUNTERS.items():
            out.add(name, counters.get(stat, 0), labels)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# --- entry points ---
def collect(conn: redis.Redis, settings: Settings) -> str:
    """The exposition text, from a sync client (two round trips)."""
    pipe = conn.pipeline(transaction=False)
    _first(pipe)
    plan = _plan(pipe.execute(), settings)
    now = unix_now()
    pipe = conn.pipeline(transaction=False)
    _second(pipe, plan, now)
    return _render(plan, pipe.execute(), settings, now)


async def collect_async(conn: redis.asyncio.Redis, settings: Settings) -> str:
    """The exposition text, from an asyncio client (two round trips)."""
    pipe = conn.pipeline(transaction=False)
    _first(pipe)
    plan = _plan(await pipe.execute(), settings)
    now = unix_now()
    pipe = conn.pipeline(transaction=False)
    _second(pipe, plan, now)
    return _render(plan, await pipe.execute(), settings, now)


def metric_names() -> Iterable[str]:
    """Every family this module can emit (docs/metrics.md lists them; a test keeps the two in step)."""
    out = Exposition()
    _render_job_counters(out, {})
    _render_queues(out, [], [], 0)
    _render_workers(out, [])
    _render_nodes(out, [], [], 0, 0)
    names = list(out.families)
    return [*names, "ferry_objects", "ferry_objects_bytes", "ferry_redis_memory_used_bytes",
            "ferry_redis_memory_max_bytes"]
