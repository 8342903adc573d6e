"""The node supervisor: starts N worker processes, replaces any that die, and cleans up after them.

It owns the node's registration in Redis (`ferry:node:<id>`), its shared-memory namespace
(`/dev/shm/ferry_<id>_*`, swept at start and at stop), and the reaper. On SIGTERM or SIGINT it lets
every running job finish; a second signal kills the processes, and their jobs are requeued.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

import redis

from services.worker import process as worker_process
from services.worker.cron import CronLoop
from services.worker.outage import Outage
from services.worker.promoter import Promoter
from services.worker.reaper import reap
from shared import catalog, keys
from shared.errors import ConfigError, RedisUnavailable
from shared.lifecycle import WORKER_DIED, Failure, Lifecycle
from shared.limits import promote_waiting
from shared.locality import forget_node
from shared.objects import segments
from shared.objects.put_writer import PutWriter, finish_own
from shared.objects.segments import SHM_DIR
from shared.objects.shm import default_budget, start_node
from shared.processes import pid_alive
from shared.redis_conn import connect_checked, is_not_redis
from shared.replies import text, texts
from shared.settings import Settings
from shared.tasks import load_tasks
from shared.timeutil import unix_now

log = logging.getLogger("ferry.node")

RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # by consecutive quick crashes of one slot
QUICK_CRASH_S = 5.0
REDIS_WAIT_S = 2.0  # between start-up attempts while Redis is unreachable


@dataclass
class Slot:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    quick_crashes: int = 0
    restart_at: float = 0.0
    ready: Event | None = None  # a multiprocessing Event the worker sets once it is running jobs


class Node:
    def __init__(self, settings: Settings, processes: int, queues: list[str]) -> None:
        self.settings = settings
        self.processes = processes
        self.queues = queues
        self.stop_requests = 0
        self.slots = [Slot(i) for i in range(processes)]
        self.context = multiprocessing.get_context("fork")  # children inherit warm imports: fast restarts

    def run(self) -> int:
        self.node_id = self.settings.node_id
        self.redis_url = self.settings.resolved_redis_url()
        self.outage = Outage(f"node {self.node_id}", self.redis_url, log)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        conn = self._wait_for_redis()
        if conn is None:
            return 0
        self.conn = conn
        self.lifecycle = Lifecycle(self.conn, self.settings)
        self._refuse_duplicate_node()
        self.budget = self.settings.shm_budget_bytes or default_budget(SHM_DIR)
        self.shm = start_node(self.conn, SHM_DIR, self.node_id, self.budget,  # its files here; swept; marked alive
                              lambda: finish_own(self.settings, self.redis_url, self.node_id, SHM_DIR))
        self._register()
        forget_node(self.conn, self.node_id)  # its shared memory was just swept: it holds nothing yet
        self._forget_dead_workers()
        reap(self.lifecycle, self.settings)
        log.info("node %s: starting %d worker processes on queues %s (shm budget %d bytes)",
                 self.node_id, self.processes, ",".join(self.queues), self.budget)
        # Forked workers share the supervisor's memory copy-on-write: move everything imported so far out
        # of the collector's reach, so its passes do not write (and so copy) those pages in every worker.
        load_tasks(self.settings.task_modules)  # import task modules once, here, shared by every worker
        segments.share_tracker_with_children()
        gc.freeze()
        self._heartbeat()  # publishes the task catalog before any worker process is up
        self.cron = CronLoop(self.conn, self.settings, self.node_id, load_tasks(self.settings.task_modules))
        for slot in self.slots:
            self._start(slot)
        promoter = Promoter(self.settings, self.redis_url, self.node_id, self.queues)  # after the forks: delayed jobs
        promoter.start()
        put_writer = PutWriter(self.settings, self.redis_url, self.node_id, SHM_DIR, self.processes)  # puts behind
        put_writer.start()
        try:
            self._supervise()
        finally:
            promoter.stop()
            put_writer.stop()  # writes what is still pending before the node's files are swept
            self._shutdown()
        return 0

    def _wait_for_redis(self) -> redis.Redis | None:
        """Connect, waiting (one log line) while Redis is unreachable; None if stopped meanwhile."""
        waiting = False
        while self.stop_requests == 0:
            try:
                return connect_checked(self.settings)
            except RedisUnavailable as exc:
                if is_not_redis(exc):
                    raise  # something else answers there: a wrong URL to fix, not a server still starting
                if not waiting:
                    log.warning("node %s: %s; waiting for it (retrying every %.0fs)",
                                self.node_id, exc.message, REDIS_WAIT_S)
                    waiting = True
                time.sleep(REDIS_WAIT_S)
        return None

    # --- supervision ---
    def _supervise(self) -> None:
        next_beat = next_reap = 0.0
        while self.stop_requests == 0:
            sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
            wait(sentinels, timeout=self.cron.wait_s(0.5))
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is not None and not slot.process.is_alive():
                    self._on_death(slot)
                if slot.process is None and now >= slot.restart_at and self.stop_requests == 0:
                    self._start(slot)
            try:
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.settings.heartbeat_interval_s
                promote_waiting(self.lifecycle.conn)  # jobs a rate limit held back whose window now allows them
                if now >= next_reap:
                    reap(self.lifecycle, self.settings)
                    next_reap = now + self.settings.reap_interval_s
                self.cron.poll()
                self.outage.ok()
            except redis.RedisError as exc:
                self.outage.failed(exc, "supervising")
                # after an outage, let workers beat again before judging their jobs abandoned
                next_reap = max(next_reap, now + 2 * self.settings.heartbeat_interval_s)

    def _start(self, slot: Slot) -> None:
        slot.ready = self.context.Event()
        process = self.context.Process(
            target=worker_process.main,
            args=(self.settings, self.redis_url, slot.index, self.queues, self.budget, os.getpid(), slot.ready),
            name=f"ferry-worker-{slot.index}",
            daemon=False,
        )
        process.start()
        slot.process, slot.started_at = process, time.monotonic()

    def _on_death(self, slot: Slot) -> None:
        process = slot.process
        assert process is not None
        name = worker_process.worker_name(self.node_id, slot.index, process.pid or 0)
        code = process.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        slot.process = None
        self._requeue_held_jobs(name, process.pid or 0, how)
        if self.stop_requests:
            return
        lived = time.monotonic() - slot.started_at
        was_running = slot.ready is not None and slot.ready.is_set()
        if code is not None and code < 0 and was_running:
            # killed from outside after it ran fine (an OOM kill, an operator, a fault test): not a crash loop
            slot.quick_crashes = 0
        else:
            slot.quick_crashes = slot.quick_crashes + 1 if lived < QUICK_CRASH_S else 0
        delay = RESTART_BACKOFF_S[min(slot.quick_crashes, len(RESTART_BACKOFF_S) - 1)]
        slot.restart_at = time.monotonic() + delay
        log.warning("node %s: worker process %s (pid %s) %s; restarting in %.1fs",
                    self.node_id, slot.index, process.pid, how, delay)

    def _requeue_held_jobs(self, name: str, pid: int, how: str) -> None:
        """A dead process's jobs go back to the front of their queues now, not after the heartbeat deadline."""
        reason = f"worker process {pid} died ({how}) while running the job"
        try:
            failure = Failure(reason, reason, True, reason=WORKER_DIED, front=True)
            for outcome in self.lifecycle.requeue_held(name, failure):
                log.info("job %s: %s; %s", outcome.job_id, reason, outcome.outcome,
                         extra={"job_id": outcome.job_id, "node": self.node_id, "worker": name})
            worker_process.unregister_worker(self.conn, name, self.queues)
        except redis.RedisError as exc:
            log.warning("node %s: could not requeue the jobs of %s (%s); the reaper will", self.node_id, name, exc)

    # --- registration ---
    def _refuse_duplicate_node(self) -> None:
        raw = self.conn.hgetall(keys.node(self.settings.node_id))
        if raw and raw.get(b"state") != b"stopped":
            beat = float(raw.get(b"last_heartbeat", 0))
            same_host = text(raw.get(b"host", b"")) == socket.gethostname()
            if unix_now() - beat < self.settings.abandoned_after_s and same_host:
                pid = int(raw.get(b"pid", 0))
                if pid != os.getpid() and pid_alive(pid):
                    raise ConfigError(
                        f"node {self.settings.node_id!r} is already running here (pid {pid}); "
                        "give this node its own FERRY_NODE_ID"
                    )

    def _register(self) -> None:
        now = unix_now()
        pipe = self.conn.pipeline(transaction=True)
        pipe.delete(keys.node(self.node_id), keys.node_stats(self.node_id))
        pipe.hset(keys.node(self.node_id), mapping={
            "host": socket.gethostname(), "pid": os.getpid(), "processes": self.processes,
            "queues": json.dumps(self.queues), "started_at": now, "last_heartbeat": now, "state": "running",
            "shm_budget_bytes": self.budget,
        })
        pipe.hset(keys.node_stats(self.node_id), mapping={
            "bytes_from_redis": 0, "bytes_from_shm": 0, "hits": 0, "misses": 0, "evictions": 0, "resident_bytes": 0})
        pipe.zadd(keys.NODES, {self.node_id: now})
        pipe.execute()

    def _forget_dead_workers(self) -> None:
        """Unregister worker processes an earlier run of this node left behind when it was killed."""
        prefix = keys.worker(f"{self.node_id}.")
        for key in texts(self.conn.smembers(keys.RQ_WORKERS)):
            if key.startswith(prefix) and not pid_alive(int(key.rsplit(".", 1)[1])):
                worker_process.unregister_worker(self.conn, key[len(keys.worker("")) :], self.queues)

    def _heartbeat(self) -> None:
        now = unix_now()
        pipe = self.conn.pipeline(transaction=False)
        pipe.hset(keys.node(self.node_id), "last_heartbeat", now)
        pipe.zadd(keys.NODES, {self.node_id: now})
        pipe.execute()
        catalog.publish(self.conn, self.node_id, self.queues, load_tasks(self.settings.task_modules),
                        self.settings.abandoned_after_s)

    # --- shutdown ---
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            log.info("node %s: %s received; letting running jobs finish (send again to kill them)",
                     self.node_id, signal.Signals(signum).name)
            self._signal_children(signal.SIGTERM)
        else:
            log.warning("node %s: killing worker processes; their jobs go back to their queues", self.node_id)
            self._signal_children(signal.SIGKILL)

    def _signal_children(self, sig: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.pid:
                try:
                    os.kill(slot.process.pid, sig)
                except ProcessLookupError:
                    pass

    def _shutdown(self) -> None:
        self._signal_children(signal.SIGTERM)
        for slot in self.slots:
            while slot.process is not None:
                slot.process.join(0.5)
                if not slot.process.is_alive():
                    self._on_death(slot)
        files, freed = self.shm.sweep(keep_lock=False)
        try:
            pipe = self.conn.pipeline(transaction=True)
            pipe.hset(keys.node(self.node_id), mapping={"state": "stopped", "last_heartbeat": unix_now()})
            pipe.expire(keys.node(self.node_id), 3600)
            pipe.delete(keys.catalog(self.node_id))  # its tasks stop being served now, not when the entry expires
            pipe.delete(keys.schedules_code(self.node_id))  # its code-declared schedules too (others still fire them)
            pipe.execute()
            forget_node(self.conn, self.node_id)  # its objects and offers, for placement
        except redis.RedisError as exc:
            log.warning("node %s: could not record its stop (%s)", self.node_id, exc)
        log.info("node %s: stopped; freed %d bytes of shared memory", self.node_id, freed)
