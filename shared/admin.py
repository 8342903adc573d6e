"""Operator views and actions over Redis: queues, workers, nodes, job listings, requeue, purge."""

from __future__ import annotations

import json
import socket

import redis

from shared import keys, limits
from shared.errors import NotFound
from shared.jobs import job_info, queue_job_view, read_job_view
from shared.lifecycle import Lifecycle
from shared.models import JobInfo, JobStatus, NodeInfo, QueueInfo, WorkerInfo
from shared.purge import Purged, purge_queue
from shared.replies import texts
from shared.settings import Settings
from shared.timeutil import rq_parse, unix_now

STATE_REGISTRY = {
    JobStatus.STARTED: keys.started,
    JobStatus.FINISHED: keys.finished,
    JobStatus.FAILED: keys.failed,
    JobStatus.CANCELED: keys.canceled,
    JobStatus.SCHEDULED: keys.scheduled,  # scored by due time: "newest first" lists the latest due first
}


class Admin:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings

    def queue_names(self) -> list[str]:
        known = {k[len(keys.QUEUE_PREFIX) :] for k in texts(self.conn.smembers(keys.RQ_QUEUES))}
        ordered = list(self.settings.queues)
        return ordered + sorted(known - set(ordered))

    def queues(self) -> list[QueueInfo]:
        everything, paused = limits.paused(self.conn)
        names = self.queue_names()
        names += sorted(paused - set(names))  # a queue paused before its first job
        now = unix_now()
        pipe = self.conn.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.queue(name))
            pipe.zcard(keys.started(name))
            for registry in (keys.finished, keys.failed, keys.canceled):
                pipe.zcount(registry(name), now, "+inf")  # entries score by expiry
            pipe.zcard(keys.scheduled(name))  # delayed jobs and retries waiting out a back-off
        replies = pipe.execute()
        counts = (replies[i : i + 6] for i in range(0, len(replies), 6))
        waiting = limits.waiting_by_queue(self.conn)
        return [
            QueueInfo(name=name, queued=q, started=s, finished=f, failed=x, canceled=c, scheduled=d,
                      paused=everything or name in paused, waiting=waiting.get(name, 0))
            for name, (q, s, f, x, c, d) in zip(names, counts, strict=True)
        ]

    def jobs(self, queue: str | None = None, state: JobStatus | None = None, limit: int = 50) -> list[JobInfo]:
        """Jobs by queue and state, newest registry entries first (queued: in queue order)."""
        queues = [queue] if queue else self.queue_names()
        states = [state] if state else [JobStatus.QUEUED, JobStatus.STARTED, JobStatus.FAILED, JobStatus.FINISHED,
                                        JobStatus.CANCELED]
        ids: list[str] = []
        for q in queues:
            for s in states:
                if s is JobStatus.QUEUED:
                    members = texts(self.conn.lrange(keys.queue(q), 0, limit - 1))
                else:
                    members = texts(self.conn.zrevrange(STATE_REGISTRY[s](q), 0, limit - 1))
                ids += [m.split(":")[0] for m in members]
        ids = ids[: limit * 4]
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            queue_job_view(pipe, job_id)
        replies = pipe.execute()
        views = [read_job_view(replies[i : i + 3]) for i in range(0, len(replies), 3)]
        found = [job_info(i, raw, self.settings.max_job_data_bytes) for i, raw in zip(ids, views, strict=True) if raw]
        return found[:limit]

    def requeue_failed(self, queue: str | None = None, job_ids: list[str] | None = None) -> list[str]:
        """Put failed jobs back on their queue with one more attempt; returns the requeued ids."""
        lifecycle = Lifecycle(self.conn, self.settings)
        requeued = []
        for q in [queue] if queue else self.queue_names():
            candidates = job_ids if job_ids is not None else texts(self.conn.zrange(keys.failed(q), 0, -1))
            requeued += [job_id for job_id in candidates if lifecycle.requeue_failed(job_id, q)]  # atomic, idempotent
        return requeued

    def purge(self, queue: str) -> Purged:
        """Drop every queued, scheduled and limit-waiting job of a queue (started jobs finish): shared/purge.py."""
        if not self.conn.sismember(keys.RQ_QUEUES, keys.queue(queue)) and queue not in self.settings.queues:
            raise NotFound(f"no queue named {queue!r}; queues: {', '.join(self.queue_names())}")
        return purge_queue(self.conn, queue)

    def workers(self) -> list[WorkerInfo]:
        names = [k[len("rq:worker:") :] for k in texts(self.conn.smembers(keys.RQ_WORKERS))]
        pipe = self.conn.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.worker(name))
        found = []
        for name, raw in zip(names, pipe.execute(), strict=True):
            if not raw:
                continue
            d = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
            found.append(
                WorkerInfo(
                    name=name,
                    node=d.get("ferry_node"),
                    pid=int(d["pid"]) if d.get("pid") else None,
                    state=d.get("state", "?"),
                    current_job=d.get("current_job") or None,
                    queues=[q for q in d.get("queues", "").split(",") if q],
                    successful=int(d.get("successful_job_count") or 0),
                    failed=int(d.get("failed_job_count") or 0),
                    last_heartbeat=rq_parse(d.get("last_heartbeat")),
                )
            )
        return sorted(found, key=lambda w: w.name)

    def nodes(self) -> list[NodeInfo]:
        ids = texts(self.conn.zrange(keys.NODES, 0, -1))
        pipe = self.conn.pipeline(transaction=False)
        for node_id in ids:
            pipe.hgetall(keys.node(node_id))
            pipe.hgetall(keys.node_stats(node_id))
        replies = pipe.execute()
        now = unix_now()
        found = []
        for node_id, raw, stats in zip(ids, replies[::2], replies[1::2], strict=True):
            if not raw:
                continue
            d = {k.decode(): v.decode() for k, v in raw.items()}
            beat = float(d.get("last_heartbeat", 0))
            found.append(
                NodeInfo(
                    id=node_id,
                    host=d.get("host", "?"),
                    pid=int(d.get("pid", 0)),
                    processes=int(d.get("processes", 0)),
                    queues=json.loads(d.get("queues", "[]")),
                    started_at=float(d.get("started_at", 0)),
                    last_heartbeat=beat,
                    alive=d.get("state") != "stopped" and now - beat < self.settings.abandoned_after_s,
                    state=d.get("state", "running"),
                    shm_budget_bytes=int(d.get("shm_budget_bytes", 0)),
                    stats={k.decode(): int(v) for k, v in stats.items()},
                )
            )
        return found

    def server_info(self) -> dict[str, str]:
        info = self.conn.info("server")
        return {"server": f"{info.get('redis_version', '?')}", "host": socket.gethostname()}
