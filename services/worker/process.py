"""One long-lived worker process: claims jobs atomically, runs them, settles them in one round trip each.

Per job the process talks to Redis twice: the claim script (pop from the first non-empty queue, enter
the started registry, mark the job started) and the finish or settle-failure script. It registers
itself as an RQ worker so `rq info` lists it. A side thread keeps the heartbeat and listens for
wake-ups (published on every enqueue) and cancel requests, so an idle process blocks instead of polling.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from types import FrameType

import redis
import rq

from shared import keys, wire
from shared.errors import PERMANENT_ERRORS, FerryError, ShmFull
from shared.objects.segments import SHM_DIR
from shared.objects.cache import NodeCache
from shared.objects.store import ObjectStore
from shared.redis_conn import connect
from shared.scripts import Scripts, queue_script
from shared.settings import Settings
from shared.tasks import load_tasks
from shared.timeutil import rq_now, unix_now
from services.worker.execution import ClaimedJob, Executor

log = logging.getLogger("ferry.worker")

ERROR_BACKOFF_S = 1.0


def worker_name(node_id: str, slot: int, pid: int) -> str:
    return f"{node_id}.{slot}.{pid}"


class WorkerProcess:
    def __init__(self, settings: Settings, redis_url: str, slot: int, queues: list[str], budget_bytes: int) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.slot = slot
        self.queues = queues
        self.budget_bytes = budget_bytes
        self.name = worker_name(settings.node_id, slot, os.getpid())
        self.key = keys.worker(self.name)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.current: ClaimedJob | None = None

    # --- lifecycle ---
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.conn = connect(self.redis_url)
        self.scripts = Scripts(self.conn)
        self.scripts.load()
        store = ObjectStore(self.conn, self.settings.object_chunk_bytes, self.settings.object_ttl_s)
        self.cache = NodeCache(self.settings.node_id, SHM_DIR, self.budget_bytes, store)
        self.executor = Executor(load_tasks(self.settings.task_modules), self.cache, store, self.settings.result_object_threshold_bytes)
        self._register_birth()
        side = threading.Thread(target=self._side_loop, name="ferry-heartbeat", daemon=True)
        self._pubsub = self._subscribe()
        side.start()
        log.info("worker %s: started (pid %d), queues %s", self.name, os.getpid(), ",".join(self.queues))
        try:
            self._work_loop()
        finally:
            self.cache.close()
            self._register_death()
            log.info("worker %s: stopped", self.name)
        return 0

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("worker %s: %s received, finishing the current job then stopping", self.name, signal.Signals(signum).name)
        self.stopping.set()
        self.wake.set()

    # --- the hot loop ---
    def _work_loop(self) -> None:
        queue_keys = [keys.queue(q) for q in self.queues]
        while not self.stopping.is_set():
            self.wake.clear()
            execution_id = uuid.uuid4().hex[:16]
            try:
                claimed = self.scripts.claim(
                    keys=queue_keys,
                    args=[self.name, rq_now(), unix_now() + self.settings.abandoned_after_s, execution_id, self.key],
                )
            except redis.RedisError as exc:
                log.warning("worker %s: Redis error while claiming (%s); retrying in %.0fs", self.name, exc, ERROR_BACKOFF_S)
                self.stopping.wait(ERROR_BACKOFF_S)
                continue
            if not claimed:
                self.wake.wait(self.settings.idle_poll_s)  # a wake-up, or the poll that catches plain RQ's jobs
                continue
            job_id, queue, data, timeout, result_ttl, failure_ttl = claimed
            job = ClaimedJob(
                id=job_id.decode(),
                queue=queue.decode(),
                data=data or b"",
                timeout_s=float(timeout or self.settings.job_timeout_s),
                result_ttl_s=int(result_ttl or self.settings.result_ttl_s),
                failure_ttl_s=int(failure_ttl or self.settings.failure_ttl_s),
                execution_id=execution_id,
            )
            self.current = job
            try:
                self._execute(job)
            finally:
                self.current = None

    def _execute(self, job: ClaimedJob) -> None:
        started = unix_now()
        try:
            payload = self.executor.run(job)
        except BaseException as exc:  # noqa: BLE001 - every failure is settled, none is lost
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self.stopping.set()
            self._flush_cache_stats(self.conn.pipeline(transaction=False)).execute()
            self._settle_failure(job, exc)
        else:
            self._finish(job, payload, started)
        finally:
            self.cache.release_stale()

    def _finish(self, job: ClaimedJob, payload: bytes, started: float) -> None:
        """Record the result, with the job's cache counters, in one round trip (counters land before the result shows)."""
        ended = unix_now()
        script_keys = [keys.job(job.id), keys.started(job.queue), keys.finished(job.queue), keys.results(job.id), self.key]
        script_args = [job.member, rq_now(), job.result_ttl_s, ended + job.result_ttl_s, wire.b64(payload), self.name,
                       job.execution_id, started, ended, job.id]
        pipe = self._flush_cache_stats(self.conn.pipeline(transaction=False))
        queue_script(pipe, self.scripts.finish, script_keys, script_args)
        try:
            pipe.execute()
        except redis.exceptions.NoScriptError:  # the server lost its scripts (restart, SCRIPT FLUSH): load, run again
            self.scripts.load()
            self.scripts.finish(keys=script_keys, args=script_args)
        log.debug("worker %s: %s finished", self.name, job.id)

    def _settle_failure(self, job: ClaimedJob, exc: BaseException) -> None:
        short = exc.message if isinstance(exc, FerryError) else f"{type(exc).__name__}: {exc}"
        text = short if isinstance(exc, PERMANENT_ERRORS + (ShmFull,)) else "".join(traceback.format_exception(exc))
        retryable = not isinstance(exc, PERMANENT_ERRORS)
        outcome = settle_failure(self.scripts, job.id, job.queue, job.member, short, text, retryable, self.name, job.failure_ttl_s)
        self.conn.hset(self.key, mapping={"state": "idle", "current_job": "", "current_execution": ""})
        self.conn.hincrby(self.key, "failed_job_count", 1)
        log.info("worker %s: job %s %s: %s", self.name, job.id, outcome, short)

    def _flush_cache_stats(self, pipe: redis.client.Pipeline) -> redis.client.Pipeline:
        """Queue the node cache counters this job produced onto `pipe` (nothing when it used no object)."""
        counters = self.cache.drain_counters()
        if counters:
            stats_key = keys.node_stats(self.settings.node_id)
            for name, value in counters.items():
                pipe.hincrby(stats_key, name, value)
            pipe.hset(stats_key, "resident_bytes", self.cache.resident_bytes())
        return pipe

    # --- side thread: heartbeat, wake-ups, cancel requests ---
    def _subscribe(self) -> redis.client.PubSub:
        pubsub = self.conn.pubsub()
        pubsub.subscribe(keys.WAKE_CHANNEL, keys.control_channel(self.name))
        confirmed = 0
        deadline = time.monotonic() + 5
        while confirmed < 2 and time.monotonic() < deadline:  # subscribed before the first claim: no lost wake-up
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "subscribe":
                confirmed += 1
        return pubsub

    def _side_loop(self) -> None:
        next_beat = 0.0
        while not self.stopping.is_set():
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=self.settings.heartbeat_interval_s)
                if message:
                    self._on_message(message["channel"], message["data"])
                if time.monotonic() >= next_beat:
                    self._heartbeat()
                    next_beat = time.monotonic() + self.settings.heartbeat_interval_s
            except redis.RedisError as exc:
                log.warning("worker %s: heartbeat failed (%s)", self.name, exc)
                self.stopping.wait(ERROR_BACKOFF_S)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == keys.WAKE_CHANNEL.encode():
            self.wake.set()
            return
        command, _, job_id = data.decode().partition(" ")
        if command == "cancel" and self.executor.interrupts.request_cancel(job_id):
            log.info("worker %s: interrupting job %s (cancel requested)", self.name, job_id)

    def _heartbeat(self) -> None:
        now = rq_now()
        pipe = self.conn.pipeline(transaction=False)
        pipe.hset(self.key, "last_heartbeat", now)
        pipe.expire(self.key, self.settings.abandoned_after_s + 60)
        job = self.current
        if job is not None:
            pipe.zadd(keys.started(job.queue), {job.member: unix_now() + self.settings.abandoned_after_s}, xx=True)
            pipe.hset(keys.job(job.id), "last_heartbeat", now)
        pipe.execute()

    # --- RQ worker registration, so `rq info` and rq-dashboard list Ferry's processes ---
    def _register_birth(self) -> None:
        now = rq_now()
        pipe = self.conn.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, mapping={
            "birth": now, "last_heartbeat": now, "queues": ",".join(self.queues), "pid": os.getpid(),
            "hostname": socket.gethostname(), "ip_address": "", "version": rq.__version__,
            "python_version": sys.version, "state": "idle", "current_job": "", "successful_job_count": 0,
            "failed_job_count": 0, "total_working_time": 0, "ferry_node": self.settings.node_id,
        })
        pipe.expire(self.key, self.settings.abandoned_after_s + 60)
        pipe.sadd(keys.RQ_WORKERS, self.key)
        for queue in self.queues:
            pipe.sadd(keys.workers_by_queue(queue), self.key)
        pipe.execute()

    def _register_death(self) -> None:
        try:
            unregister_worker(self.conn, self.name, self.queues)
        except redis.RedisError as exc:
            log.warning("worker %s: could not unregister (%s)", self.name, exc)


def unregister_worker(conn: redis.Redis, name: str, queues: list[str]) -> None:
    key = keys.worker(name)
    pipe = conn.pipeline(transaction=True)
    pipe.srem(keys.RQ_WORKERS, key)
    for queue in queues:
        pipe.srem(keys.workers_by_queue(queue), key)
    pipe.hset(key, mapping={"death": rq_now(), "state": "dead"})
    pipe.expire(key, 60)
    pipe.execute()


def settle_failure(
    scripts: Scripts, job_id: str, queue: str, member: str, short: str, text: str, retryable: bool, worker: str, failure_ttl_s: int
) -> str:
    """Requeue the job while it has retries left (if `retryable`), else fail it; atomic and idempotent."""
    now = unix_now()
    outcome = scripts.settle_failure(
        keys=[keys.job(job_id), keys.started(queue), keys.queue(queue), keys.failed(queue), keys.results(job_id), keys.canceled(queue)],
        args=[member, rq_now(), short[:1000], wire.exc_string(text), failure_ttl_s, now + failure_ttl_s,
              "1" if retryable else "0", worker, job_id, zlib.compress(text.encode())],
    )
    return outcome.decode() if isinstance(outcome, bytes) else str(outcome)


def main(settings: Settings, redis_url: str, slot: int, queues: list[str], budget_bytes: int) -> None:
    """Entry point of a forked worker process."""
    from shared.logs import configure

    configure(settings.log_level)
    try:
        code = WorkerProcess(settings, redis_url, slot, queues, budget_bytes).run()
    except Exception:  # noqa: BLE001 - log it; the supervisor restarts us
        log.exception("worker process slot %d crashed", slot)
        code = 1
    sys.exit(code)
