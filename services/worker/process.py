"""One long-lived worker process: claims jobs, runs them, and records each outcome in one round trip.

While a queue is busy, recording a job's outcome and claiming the next jobs is one script call
(`Lifecycle.finish` with a claim), and a claim may take several short jobs at once (FERRY_PREFETCH_JOBS;
prefetched jobs are in the started registry under this execution, so a crash requeues them; they are
given back if the running job turns out long, or when the process stops). An idle process registers
itself idle on its queues in the same script that found them empty, then waits: an enqueue wakes ONE idle
process of that queue (a `wake` on its control channel), a resume or a freed limit wakes all (`ferry:wake`),
and a FERRY_IDLE_POLL_S poll is the safety net (plain RQ's enqueues wake nobody).

Redis outages do not stop it: the outcome of the last job stays in memory and is sent again, unchanged
(the scripts are idempotent), until Redis answers (services/worker/outage.py). It dies with its
supervisor: PR_SET_PDEATHSIG, and a parent check in the heartbeat thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent
from types import FrameType
from typing import Any

import redis
import rq

from services.worker import rq_commands
from services.worker.execution import Executor
from services.worker.outage import GaveUp, Outage
from shared import keys
from shared.backoff import retry_delay_s
from shared.errors import PERMANENT_ERRORS, FerryError, JobCanceled, JobTimeout, ShmFull
from shared.handoff import WriteBehind
from shared.lifecycle import TIMEOUT, Claimed, Claims, Failure, Lifecycle, Timing, new_execution_id
from shared.locality import idle_wait_s
from shared.objects.cache import NodeCache
from shared.objects.segments import SHM_DIR
from shared.objects.store import ObjectStore
from shared.redis_conn import connect
from shared.settings import Settings
from shared.tasks import load_tasks
from shared.timeutil import rq_now, unix_now

log = logging.getLogger("ferry.worker")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PREFETCH_BELOW_S = 0.05  # prefetch only after a job this short; give prefetched jobs back once a job runs longer
HOLD_CHECK_S = 0.05


def worker_name(node_id: str, slot: int, pid: int) -> str:
    return f"{node_id}.{slot}.{pid}"


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit now if it already has (the fork race)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat thread's parent check still applies
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


@dataclass(slots=True)
class Done:
    """A job's outcome, kept in memory until Redis has it (finish when `failure` is None, else settle)."""

    job: Claimed
    timing: Timing
    started: float
    ended: float
    payload: bytes = b""
    failure: Failure | None = None
    stats: dict[str, int] | None = None


class WorkerProcess:
    def __init__(self, settings: Settings, redis_url: str, slot: int, queues: list[str], budget_bytes: int,
                 parent_pid: int | None = None, ready: ProcessEvent | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.slot = slot
        self.queues = queues
        self.budget_bytes = budget_bytes
        self.parent_pid = parent_pid
        self.ready = ready
        self.name = worker_name(settings.node_id, slot, os.getpid())
        self.key = keys.worker(self.name)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.outage = Outage(f"worker {self.name}", redis_url, log)
        self.current: Claimed | None = None
        self.current_since = 0.0
        self.held: deque[Claimed] = deque()  # claimed, not started yet (prefetch)
        self.held_lock = threading.Lock()
        self.dispatched: dict[str, None] = {}  # execution ids of jobs dispatched to us that we took (see _take)
        self.last_run_s = 1.0
        self.inflight: tuple[Done, list[Any], str] | None = None  # a finish written to `pipe`, reply not read yet
        self.pipe_lock = threading.Lock()  # the side thread may read a refill's reply when the running job is long
        self.working_time = rq_commands.WorkingTime()  # RQ's total_working_time, added with each heartbeat

    # --- lifecycle of the process ---
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.conn = connect(self.redis_url)
        if not self._try(self.conn.ping):
            log.info("worker %s: waiting for Redis at %s", self.name, self.outage.url)
            self._retry(self.conn.ping, "starting")
        self.lifecycle = Lifecycle(self.conn, self.settings)
        self._retry(self.lifecycle.load, "loading scripts")
        self.pipe = self.conn.connection_pool.get_connection()  # for pipelined finishes (see _send_finish)
        store = ObjectStore(self.conn, self.settings.object_chunk_bytes, self.settings.object_ttl_s)
        self.cache = NodeCache(self.settings.node_id, SHM_DIR, self.budget_bytes, store)
        write_behind = WriteBehind(store, self.cache, self.name, self.settings.node_id) \
            if self.settings.result_write_behind else None
        self.executor = Executor(load_tasks(self.settings.task_modules), self.cache, store,
                                 self.settings.result_object_threshold_bytes, self.settings.max_job_data_bytes,
                                 self.settings.job_timeout_s, write_behind, self.settings.progress_interval_s)
        self._retry(self._register_birth, "registering")
        self._pubsub = self._retry(self._subscribe, "subscribing")
        side = threading.Thread(target=self._side_loop, name="ferry-heartbeat", daemon=True)
        side.start()
        log.info("worker %s: started (pid %d), queues %s", self.name, os.getpid(), ",".join(self.queues))
        if self.ready is not None:
            self.ready.set()
        try:
            self._work_loop()
        finally:
            if write_behind is not None:
                write_behind.drain()  # every result written behind is in Redis before this worker says it is gone
            self.pipe.disconnect()
            self.cache.close()
            self._register_death()
            log.info("worker %s: stopped", self.name)
        return 0

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("worker %s: %s received, finishing the current job then stopping", self.name,
                     signal.Signals(signum).name)
        self.stopping.set()
        self.wake.set()

    def _try(self, fn: Any) -> bool:
        try:
            fn()
            return True
        except redis.RedisError:
            return False

    def _retry(self, fn: Any, doing: str) -> Any:
        """`fn()` until Redis answers; while stopping, give up after the abandonment deadline (then the reaper does)."""
        stop_by = [0.0]

        def give_up() -> bool:
            if not self.stopping.is_set():
                return False
            stop_by[0] = stop_by[0] or time.monotonic() + self.settings.abandoned_after_s
            return time.monotonic() > stop_by[0]

        sleep = self.stopping.wait if doing == "starting" else time.sleep
        return self.outage.call(fn, doing, sleep=sleep, give_up=give_up)

    # --- the hot loop ---
    def _work_loop(self) -> None:
        done: Done | None = None
        try:
            while not self.stopping.is_set():
                job = self._next_held()
                if job is None and self.inflight is not None:
                    self._read_inflight()  # a refill claimed with the last finish
                    job = self._next_held()
                if job is None:
                    claimed = self._take(self._record(done, claim=self._claim_count()))
                    done = None
                    if not claimed:
                        self.last_run_s = 1.0  # after idling, claim one job at a time until jobs prove short
                        # a wake-up, or the poll that catches plain RQ's jobs (sooner when another node's offer ends)
                        self.wake.wait(idle_wait_s(claimed.offer_wait_s, self.settings.idle_poll_s))
                        continue
                    with self.held_lock:
                        self.held.extend(claimed[1:])
                    job = claimed[0]
                elif done is not None:
                    self._read_inflight()
                    if done.failure is None:
                        # the last prefetched job: claim the next ones with this finish, read it after `job` ran
                        refill = self._claim_count() if not self.held and self._claim_count() > 1 else 0
                        self._send_finish(done, next_job=job.id, claim=refill)
                    else:
                        self._record(done, claim=0, next_job=job.id)
                    done = None
                done = self._execute(job)
            self._read_inflight()
            if done is not None:
                self._record(done, claim=0)
                done = None
            self._give_back_held("the process is stopping")
            given_back = self._retry(lambda: self.lifecycle.retire(self.name), "giving back dispatched jobs")
            if given_back:
                log.info("worker %s: gave back %d job(s) dispatched to it while it stopped", self.name, len(given_back))
        except GaveUp:
            log.warning("worker %s: stopping with Redis unreachable for %ds; the reaper will requeue what it held",
                        self.name, self.settings.abandoned_after_s)

    def _take(self, claims: Claims) -> Claims:
        """The jobs of an idle claim this process runs. A job dispatched to it (lua `dispatch`) comes on the
        control channel and, if the claim ran first, in the claim's reply too: whichever arrives first is
        taken, in the order of the claim record (the order a dead worker's jobs are settled in)."""
        if not any(job.dispatched for job in claims):
            return claims
        with self.held_lock:
            for job in claims:
                if job.dispatched:
                    if job.execution_id in self.dispatched:
                        self.held = deque(held for held in self.held if held.execution_id != job.execution_id)
                    self._note_dispatched(job.execution_id)
        return claims

    def _note_dispatched(self, execution_id: str) -> None:
        self.dispatched[execution_id] = None
        while len(self.dispatched) > 64:  # a duplicate follows within one claim: a few recent ids are enough
            del self.dispatched[next(iter(self.dispatched))]

    def _on_dispatch(self, job: Claimed) -> None:
        """A job the enqueue claimed for this idle process: run it next (unless a claim reply brought it)."""
        with self.held_lock:
            if job.execution_id in self.dispatched:
                return
            self._note_dispatched(job.execution_id)
            self.held.append(job)
        self.wake.set()

    def _next_held(self) -> Claimed | None:
        with self.held_lock:
            return self.held.popleft() if self.held else None

    def _send_finish(self, done: Done, next_job: str, claim: int = 0) -> None:
        """Write the finish of `done` (and, with `claim`, a claim of the next jobs) and go on with the next
        prefetched job without waiting for the reply.

        The command is in the socket before the next job starts, so even a SIGKILL cannot lose the outcome
        of a completed body; the reply is read before anything else is sent (`_read_inflight`). Redis runs
        the script while this process runs the next job: on a busy queue the round trip is hidden.
        """
        job = done.job
        execution_id = new_execution_id() if claim else ""
        args = self.lifecycle.finish_args(job, self.name, done.payload, done.started, done.ended, done.timing,
                                          keys.node_stats(self.settings.node_id), done.stats, next_job=next_job,
                                          claim_from=self.queues if claim else (), claim_count=claim,
                                          next_execution_id=execution_id)
        with self.pipe_lock:
            try:
                self.lifecycle.send_finish(self.pipe, args)
                self.inflight = (done, args, execution_id)
                return
            except redis.RedisError as exc:
                self.pipe.disconnect()
                self.outage.failed(exc, "recording a result")
            self._finish_again(done, args, execution_id)

    def _read_inflight(self) -> None:
        """Read the reply of the pipelined finish; on any error send it again, unchanged (it is idempotent)."""
        with self.pipe_lock:
            if self.inflight is None:
                return
            done, args, execution_id = self.inflight
            self.inflight = None
            try:
                outcome, claimed = self.lifecycle.read_finish(self.pipe, done.job.id, execution_id)
            except redis.exceptions.NoScriptError:  # the server lost its scripts (restart, SCRIPT FLUSH)
                self._retry(self.lifecycle.load, "loading scripts")
                self._finish_again(done, args, execution_id)
                return
            except redis.RedisError as exc:
                self.pipe.disconnect()
                self.outage.failed(exc, "recording a result")
                self._finish_again(done, args, execution_id)
                return
            self._finished(done, outcome.outcome, claimed)

    def _finish_again(self, done: Done, args: list[Any], execution_id: str) -> None:
        outcome, claimed = self._retry(lambda: self.lifecycle.finish_again(done.job.id, execution_id, args),
                                       "recording a result")
        self._finished(done, outcome.outcome, claimed)

    def _finished(self, done: Done, outcome: str, claimed: list[Claimed]) -> None:
        if claimed:
            with self.held_lock:
                self.held.extend(claimed)
        self._log_finish(done, outcome)

    def _log_finish(self, done: Done, outcome: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("worker %s: job %s %s", self.name, done.job.id, outcome, extra=self._extra(done.job, done))

    def _claim_count(self) -> int:
        return self.settings.prefetch_jobs if self.last_run_s < PREFETCH_BELOW_S else 1

    def _record(self, done: Done | None, claim: int, next_job: str = "") -> Claims:
        """Send `done` (if any) and claim up to `claim` jobs, in one round trip when possible; retried until it works.

        The execution id is fixed before the first attempt, so a repeat returns the same claim.
        """
        execution_id = new_execution_id()
        if claim:
            self.wake.clear()  # before the claim: a wake-up after it (we are registered idle) is not lost
        if done is None:
            return self._retry(lambda: self.lifecycle.claim(self.name, self.queues, execution_id, claim), "claiming")
        job = done.job
        if done.failure is None and claim and not next_job:  # out of jobs: the result first, then look for more
            outcome, claimed = self._retry(lambda: self.lifecycle.finish_then_claim(
                job, self.name, done.payload, done.started, done.ended, done.timing,
                keys.node_stats(self.settings.node_id), done.stats, self.queues, claim, execution_id),
                "recording a result")
            self._log_finish(done, outcome.outcome)
            return claimed
        if done.failure is None:
            outcome, claimed = self._retry(lambda: self.lifecycle.finish(
                job, self.name, done.payload, done.started, done.ended, done.timing,
                keys.node_stats(self.settings.node_id), done.stats, next_job=next_job,
                claim_from=self.queues if claim else (), claim_count=claim, next_execution_id=execution_id),
                "recording a result")
            self._log_finish(done, outcome.outcome)
            return claimed
        failure = done.failure
        if failure.retryable:  # the back-off is fixed once, here: a re-sent settle carries the same wait
            failure = self._retry(lambda: self._with_backoff(job, failure),
                                  "reading the job's retry back-off")
        if done.stats:
            self._retry(lambda: self._flush_stats(done.stats or {}), "recording cache counters")
        settled = self._retry(lambda: self.lifecycle.settle(job, self.name, failure, done.timing),
                              "recording a failure")
        self._retry(lambda: self.conn.hincrby(self.key, "failed_job_count", 1), "counting a failure")
        level = logging.INFO if settled.outcome in ("retried", "failed", "canceled") else logging.DEBUG
        log.log(level, "worker %s: job %s %s: %s", self.name, job.id, settled.outcome, failure.short,
                extra=self._extra(job, done))
        if not claim:
            return Claims()
        return self._retry(lambda: self.lifecycle.claim(self.name, self.queues, execution_id, claim), "claiming")

    def _with_backoff(self, job: Claimed, failure: Failure) -> Failure:
        """`failure` with the job's wait before its next attempt (shared/backoff.py; unchanged when none)."""
        tasks = self.executor.tasks
        default = tasks.get(job.task).retry_backoff if job.task in tasks.names() else None
        delay = retry_delay_s(self.conn, job.id, default)
        return dataclasses.replace(failure, delay_s=delay) if delay > 0 else failure

    def _extra(self, job: Claimed, done: Done | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {"job_id": job.id, "task": job.task, "queue": job.queue, "node": self.settings.node_id,
                                 "worker": self.name}
        if done is not None:
            extra["duration_s"] = round(done.ended - done.started, 6)
        return extra

    def _execute(self, job: Claimed) -> Done:
        """Run one job; its outcome, to record."""
        job = self.executor.with_task_ttls(job)
        started = unix_now()
        clock = time.perf_counter()
        timing_task = job.task or "unknown"
        if log.isEnabledFor(logging.DEBUG):
            log.debug("worker %s: job %s claimed", self.name, job.id, extra=self._extra(job))
        self.current, self.current_since = job, time.monotonic()
        failure: Failure | None = None
        payload = b""
        try:
            if job.cancel_requested or self.executor.interrupts.cancel_requested(job.id):  # before its data is read
                raise JobCanceled("job was canceled before it started")
            task, payload = self.executor.run(job)
            timing_task = task
        except BaseException as exc:  # noqa: BLE001 - every failure is settled, none is lost
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self.stopping.set()
            failure = self._failure(exc)
        finally:
            self.current = None
            self.executor.interrupts.forget(job.id)
            self.cache.release_stale()
        run_s = time.perf_counter() - clock
        self.last_run_s = run_s
        self.working_time.add(run_s)
        timing = Timing(timing_task, run_s, job.wait_s(started))
        stats = self.cache.drain_counters() or None
        if stats:
            stats["resident_bytes"] = self.cache.resident_bytes()  # set, not added (see the finish script)
        return Done(job, timing, started, started + run_s, payload, failure, stats)

    @staticmethod
    def _failure(exc: BaseException) -> Failure:
        short = exc.message if isinstance(exc, FerryError) else f"{type(exc).__name__}: {exc}"
        text = short if isinstance(exc, PERMANENT_ERRORS + (ShmFull,)) else "".join(traceback.format_exception(exc))
        return Failure(short, text, retryable=not isinstance(exc, PERMANENT_ERRORS),
                       reason=TIMEOUT if isinstance(exc, JobTimeout) else "")

    def _flush_stats(self, stats: dict[str, int]) -> None:
        stats_key = keys.node_stats(self.settings.node_id)
        pipe = self.conn.pipeline(transaction=False)
        for name, value in stats.items():
            if name == "resident_bytes":
                pipe.hset(stats_key, name, value)
            else:
                pipe.hincrby(stats_key, name, value)
        pipe.execute()

    def _give_back_held(self, why: str) -> None:
        """Prefetched jobs that never started go back to the front of their queues."""
        with self.held_lock:
            jobs = list(self.held)
            self.held.clear()
        if not jobs:
            return
        try:
            by_execution: dict[str, list[Claimed]] = {}
            for job in jobs:
                by_execution.setdefault(job.execution_id, []).append(job)
            for execution_id, group in by_execution.items():
                self._retry(lambda: self.lifecycle.release(self.name, execution_id, group),  # noqa: B023 - called now
                            "giving back prefetched jobs")
            log.debug("worker %s: gave back %d prefetched jobs (%s)", self.name, len(jobs), why)
        except GaveUp:
            with self.held_lock:
                self.held.extendleft(reversed(jobs))

    # --- side thread: heartbeat, wake-ups, cancel requests, parent check, prefetch give-back ---
    def _subscribe(self) -> redis.client.PubSub:
        pubsub = self.conn.pubsub()
        pubsub.subscribe(keys.WAKE_CHANNEL, keys.control_channel(self.name), keys.rq_pubsub(self.name))
        confirmed = 0
        deadline = time.monotonic() + 5
        while confirmed < 3 and time.monotonic() < deadline:  # subscribed before the first claim: no lost wake-up
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "subscribe":
                confirmed += 1
        return pubsub

    def _side_loop(self) -> None:
        next_beat = 0.0
        backoff = 0.05
        lost = False  # the subscription broke: a job dispatched meanwhile is found by the next idle claim
        while not self.stopping.is_set():
            self._check_parent()
            try:
                wait_s = HOLD_CHECK_S if self.held or self.inflight else self.settings.heartbeat_interval_s
                timeout = max(0.0, min(wait_s, next_beat - time.monotonic()))
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                if message:
                    self._on_message(message["channel"], message["data"])
                running_s = time.monotonic() - self.current_since
                if self.current is not None and running_s > PREFETCH_BELOW_S * 2:
                    inflight = self.inflight
                    if inflight is not None and inflight[2]:
                        self._read_inflight()  # a refill claimed with the last finish: learn what it took
                    if self.held:
                        self._give_back_held("the running job is long")
                if time.monotonic() >= next_beat:
                    self.executor.progress.flush_current()
                    self._heartbeat()
                    next_beat = time.monotonic() + self.settings.heartbeat_interval_s
                self.outage.ok()
                backoff = 0.05
                if lost:
                    lost = False
                    self.wake.set()
            except redis.RedisError as exc:
                lost = True
                self.outage.failed(exc, "sending a heartbeat")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, self.settings.heartbeat_interval_s)

    def _check_parent(self) -> None:
        """Fallback for PR_SET_PDEATHSIG: a worker never outlives its supervisor by more than a heartbeat interval."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("worker %s: its supervisor (pid %d) is gone; exiting", self.name, self.parent_pid)
            os.kill(os.getpid(), signal.SIGKILL)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == keys.WAKE_CHANNEL.encode():
            self.wake.set()
            return
        if channel == keys.rq_pubsub(self.name).encode():  # RQ's send_stop_job_command: Ferry's cancel
            stop = rq_commands.stop_job_id(data)
            if stop is not None:
                log.info("worker %s: RQ stop-job command for job %s: canceling it", self.name, stop)
                self.lifecycle.cancel(stop)  # publishes the cancel on our control channel: handled below
            return
        job = Claimed.from_dispatch(data)
        if job is not None:
            self._on_dispatch(job)
            return
        command, _, job_id = data.decode(errors="replace").partition(" ")
        if command == "wake":  # an enqueue picked this idle worker (lifecycle `wake`): one wake-up per job
            self.wake.set()
            return
        if command != "cancel":
            return
        if self.executor.interrupts.request_cancel(job_id):  # else remembered: the job is canceled when it starts
            log.info("worker %s: interrupting job %s (cancel requested)", self.name, job_id, extra={"job_id": job_id})

    def _heartbeat(self) -> None:
        now = rq_now()
        deadline = unix_now() + self.settings.abandoned_after_s
        pipe = self.conn.pipeline(transaction=False)
        pipe.hset(self.key, "last_heartbeat", now)
        pipe.expire(self.key, self.settings.abandoned_after_s + 60)
        pipe.expire(keys.claim(self.name), self.settings.abandoned_after_s + 60)
        job = self.current
        with self.held_lock:
            holding = list(self.held)
        for held in ([job] if job is not None else []) + holding:
            pipe.zadd(keys.started(held.queue), {held.member: deadline}, xx=True)
        rq_commands.refresh(pipe, self.name, ([job] if job is not None else []) + holding, self.lifecycle.record_ttl_s,
                            self.working_time)
        if job is not None:
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
    pipe.hdel(keys.IDLE_WORKERS, name)
    for queue in queues:
        pipe.srem(keys.idle_on(queue), name)
        pipe.srem(keys.workers_by_queue(queue), key)
    pipe.delete(keys.worker_executions(name))
    pipe.hset(key, mapping={"death": rq_now(), "state": "dead"})
    pipe.expire(key, 60)
    pipe.execute()


def main(settings: Settings, redis_url: str, slot: int, queues: list[str], budget_bytes: int,
         parent_pid: int | None = None, ready: ProcessEvent | None = None) -> None:
    """Entry point of a forked worker process."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    from shared.logs import configure

    configure(settings.log_level)
    try:
        code = WorkerProcess(settings, redis_url, slot, queues, budget_bytes, parent_pid, ready).run()
    except Exception:  # noqa: BLE001 - log it; the supervisor restarts us
        log.exception("worker process slot %d crashed", slot)
        code = 1
    sys.exit(code)
