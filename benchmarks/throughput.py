"""No-op jobs through Ferry, RQ `Worker` and RQ `SimpleWorker`: drain rate of a full queue, and latency.

    python -m benchmarks.throughput [--jobs 5000] [--latency-jobs 300] [--repeat 1]
        [--systems ferry,ferry-ceiling,rq-worker,rq-simple] [--submit-rate 3000]

For each system, on one private Redis flushed in between:
1. drain: enqueue --jobs no-op jobs in bulk, then start 2 worker processes and wait for every job.
   Drain rate = (jobs - 1) / (last `ended_at` - first `ended_at`), read from the job hashes
   (steady state: first to last completion, so process start-up is not counted). The rate from
   worker start to last completion is printed too. Every job must be `finished` with exactly one
   result entry, or the run fails: no silent loss, no double run.
2. latency: with the same 2 workers idle, one job at a time, enqueue -> result visible, measured
   by the producer (RQ: `job.latest_result(timeout=5)`, Ferry: `client.result(id, wait_s=5)`;
   both block on the job's result stream with XREAD). The first 10 jobs are a warm-up.
3. ferry-ceiling: the ceiling of Ferry's worker design on this machine, measured in the same run: two
   processes doing only the worker's round trips (claim with prefetch, pipelined finish, finish combined
   with the next claim; the same scripts, the same arguments), no task, no decoding. Ferry's drain rate
   is reported as a fraction of it (the median of run-by-run ratios, each Ferry run against the ceiling
   run right after it), which is what a shared, noisy machine can still compare.
4. submitter (with ferry, unless --submit-rate 0): worker CPU per job (user + system seconds of the
   worker processes / jobs) draining the same backlog with a client submitting --submit-rate jobs/s, one
   call each, while the workers run, against the same drain without it; --repeat pairs (alone, then with
   the client, fresh workers each), the ratio taken pair by pair (median). User and system time and the
   workers' voluntary context switches (sleeps) per job are printed for both.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from rq import Queue
from rq.results import Result

from benchmarks import profiled_worker
from benchmarks.common import (
    REPO,
    Workers,
    connect,
    json_line,
    machine,
    percentile,
    registered_workers,
    table,
    tool,
    wait_until,
)
from shared.async_client import AsyncClient
from shared.client import Client
from shared.embedded import EmbeddedRedis

SYSTEMS = ("ferry", "ferry-ceiling", "rq-worker", "rq-simple")
QUEUE = "default"
WARMUP_JOBS = 10
RQ_FUNC = "benchmarks.noop.noop"
TARGETS = {"ferry_over_simpleworker": 2.0, "ferry_over_worker": 8.0, "ferry_over_ceiling": 0.8}


@dataclass
class Outcome:
    system: str
    jobs: int
    enqueue_s: float = 0.0
    drain_s: float = 0.0  # first to last completion
    from_start_s: float = 0.0  # worker start to last completion
    completed: int = 0
    redis_commands: int = 0  # Redis commands processed while draining (workers' side, plus a little polling)
    worker_cpu_s: float = 0.0  # user + system seconds of the worker processes, first to last completion
    cpu_jobs: int = 0  # jobs completed in that window
    latencies_ms: list[float] = field(default_factory=list)
    drain_rates: list[float] = field(default_factory=list)  # of every repeat, in run order; this outcome is the median

    @property
    def cpu_per_job_us(self) -> float:
        return self.worker_cpu_s / self.cpu_jobs * 1e6 if self.cpu_jobs else 0.0

    @property
    def drain_rate(self) -> float:
        return (self.jobs - 1) / self.drain_s if self.drain_s > 0 else 0.0

    def summary(self) -> dict[str, object]:
        lat = self.latencies_ms
        return {
            "jobs": self.jobs,
            "completed": self.completed,
            "drain_jobs_per_s": round(self.drain_rate, 1),
            "drain_jobs_per_s_all_repeats": [round(r, 1) for r in self.drain_rates],
            "from_worker_start_jobs_per_s": round(self.jobs / self.from_start_s, 1),
            "enqueue_jobs_per_s": round(self.jobs / self.enqueue_s, 1),
            "redis_commands_per_job": round(self.redis_commands / self.jobs, 1),
            "worker_cpu_us_per_job": round(self.cpu_per_job_us, 1) if self.cpu_jobs else None,
            "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3), "n": len(lat)}
            if lat else None,
        }


# --- the systems ---
def start_workers(system: str, url: str) -> Workers:
    env = dict(os.environ, FERRY_REDIS_URL=url, FERRY_NODE_ID=f"bench-{os.getpid()}")
    if system == "ferry":
        node = profiled_worker.command() or [tool("ferry"), "worker"]
        return Workers(system, [[*node, "--processes", "2"]], env, count_children_only=True)
    rq_worker = [tool("rq"), "worker", "-u", url, "--quiet", "--path", str(REPO), QUEUE]
    if system == "rq-simple":
        rq_worker[2:2] = ["-w", "rq.worker.SimpleWorker"]
    return Workers(system, [rq_worker, rq_worker], env)


def enqueue_bulk(system: str, url: str, conn: redis.Redis, n: int) -> list[str]:
    if system.startswith("ferry"):
        with Client(url) as client:
            return [s.id for s in client.submit_many([{"task": "echo", "args": {"value": None}, "allow_unserved": True}] * n)]
    queue = Queue(QUEUE, connection=conn)
    return [job.id for job in queue.enqueue_many([Queue.prepare_data(RQ_FUNC) for _ in range(n)])]


def one_job_latency(system: str, url: str, conn: redis.Redis, n: int) -> list[float]:
    """Milliseconds from the start of the enqueue call to the result being read back, one job at a time."""
    latencies = []
    client = Client(url) if system == "ferry" else None
    queue = Queue(QUEUE, connection=conn)
    try:
        for i in range(n + WARMUP_JOBS):
            start = time.perf_counter()
            if client is not None:
                result = client.result(client.submit("echo", {"value": None}).id, wait_s=5)
                ok = result.ready and result.status == "finished"
            else:
                latest = queue.enqueue(RQ_FUNC).latest_result(timeout=5)
                ok = latest is not None and latest.type == Result.Type.SUCCESSFUL
            elapsed = (time.perf_counter() - start) * 1000
            if not ok:
                raise RuntimeError(f"{system}: latency job {i} did not finish within 5 s")
            if i >= WARMUP_JOBS:
                latencies.append(elapsed)
    finally:
        if client is not None:
            client.close()
    return latencies


# --- measuring ---
def done_count(conn: redis.Redis) -> int:
    pipe = conn.pipeline(transaction=False)
    pipe.zcard(f"rq:finished:{QUEUE}")
    pipe.zcard(f"rq:failed:{QUEUE}")
    return sum(pipe.execute())


def commands_processed(conn: redis.Redis) -> int:
    return int(conn.info("stats")["total_commands_processed"])


def verify_and_time(conn: redis.Redis, system: str, ids: list[str]) -> tuple[int, datetime, datetime]:
    """Every job finished, each with exactly one result entry; the first and last `ended_at`."""
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", "status", "ended_at")
        pipe.xlen(f"rq:results:{job_id}")
    replies = pipe.execute()
    ended, bad = [], []
    for job_id, (status, ended_at), results in zip(ids, replies[::2], replies[1::2]):
        if status != b"finished" or results != 1 or not ended_at:
            bad.append((job_id, status, results))
        else:
            ended.append(datetime.strptime(ended_at.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC))
    if bad:
        raise RuntimeError(f"{system}: {len(bad)} of {len(ids)} jobs not finished exactly once, e.g. {bad[:3]}")
    return len(ended), min(ended), max(ended)


def drain_cpu(conn: redis.Redis, pids: Any, total: int, what: str, check: Any = None) -> tuple[float, int]:
    """Worker CPU seconds from the first completion to the last, and the jobs completed in that window
    (start-up excluded, as in the drain rate)."""
    wait_until(lambda: done_count(conn) >= 1, timeout_s=60, what=f"{what}: a first completion", interval_s=0.002,
               check=check)
    cpu0, done0 = cpu_seconds(pids()), done_count(conn)
    wait_until(lambda: done_count(conn) >= total, timeout_s=60 + total / 20, what=what, check=check)
    return cpu_seconds(pids()) - cpu0, total - done0


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


# --- the ceiling: the worker's round trips alone ---
def ceiling_loop(url: str, index: int) -> None:
    """What a worker process sends per job, minus the task: claim (prefetch); a pipelined finish while prefetched
    jobs remain (its reply read before the next command), else finish + claim of the next jobs in one call."""
    from shared.lifecycle import Lifecycle, Timing, new_execution_id
    from shared.redis_conn import connect as ferry_connect
    from shared.settings import Settings

    settings = Settings(redis_url=url)
    conn = ferry_connect(url)
    lifecycle = Lifecycle(conn, settings)
    lifecycle.load()
    pipe = conn.connection_pool.get_connection()
    worker, queues, timing = f"ceiling.{index}.{os.getpid()}", [QUEUE], Timing("echo", 0.00001, 0.0)
    held = lifecycle.claim(worker, queues, new_execution_id(), 1)
    inflight = ""
    while held:
        job, held = held[0], held[1:]
        now = time.time()
        if inflight:
            lifecycle.read_finish(pipe, inflight)
            inflight = ""
        if held:
            args = lifecycle.finish_args(job, worker, b"null", now, now, timing, next_job=held[0].id)
            lifecycle.send_finish(pipe, args)
            inflight = job.id
        else:
            _, held = lifecycle.finish(job, worker, b"null", now, now, timing, claim_from=queues,
                                       claim_count=settings.prefetch_jobs, next_execution_id=new_execution_id())
    os._exit(0)


def run_ceiling(url: str, conn: redis.Redis, jobs: int) -> Outcome:
    conn.flushall()
    outcome = Outcome("ferry-ceiling", jobs)
    start = time.perf_counter()
    ids = enqueue_bulk("ferry", url, conn, jobs)
    outcome.enqueue_s = time.perf_counter() - start
    commands_before = commands_processed(conn)
    spawned = datetime.now(UTC)
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=ceiling_loop, args=(url, i)) for i in range(2)]
    for proc in procs:
        proc.start()
    try:
        outcome.worker_cpu_s, outcome.cpu_jobs = drain_cpu(conn, lambda: [p.pid for p in procs if p.pid], jobs,
                                                           "the ceiling loops to drain")
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    outcome.redis_commands = commands_processed(conn) - commands_before
    outcome.completed, first, last = verify_and_time(conn, "ferry-ceiling", ids)
    outcome.drain_s = (last - first).total_seconds()
    outcome.from_start_s = (last - spawned).total_seconds()
    print(f"  ferry-ceiling: drained {outcome.completed} jobs at {outcome.drain_rate:,.0f} jobs/s", file=sys.stderr)
    return outcome


# --- worker CPU per job with a client submitting while the workers run ---
@dataclass
class CpuRun:
    """Worker CPU over one drain: user and system seconds, voluntary context switches, jobs completed."""

    user_s: float = 0.0
    system_s: float = 0.0
    switches: int = 0
    jobs: int = 0
    submitted: int = 0
    submit_rate: float = 0.0

    def per_job_us(self) -> float:
        return (self.user_s + self.system_s) / self.jobs * 1e6 if self.jobs else 0.0

    def summary(self) -> dict[str, object]:
        return {"worker_cpu_us_per_job": round(self.per_job_us(), 1),
                "user_us_per_job": round(self.user_s / self.jobs * 1e6, 1) if self.jobs else None,
                "system_us_per_job": round(self.system_s / self.jobs * 1e6, 1) if self.jobs else None,
                "voluntary_switches_per_job": round(self.switches / self.jobs, 2) if self.jobs else None,
                "jobs": self.jobs, "submitted": self.submitted, "submit_rate_jobs_per_s": round(self.submit_rate, 1)}


def cpu_sample(pids: list[int]) -> tuple[float, float, int]:
    user = system = 0.0
    switches = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            times = process.cpu_times()
            user, system = user + times.user, system + times.system
            switches += process.num_ctx_switches().voluntary
        except psutil.Error:
            pass
    return user, system, switches


UNSERVED = "unserved"  # a queue no worker of the run serves: the control case's client submits there


def drain_with_client(url: str, conn: redis.Redis, jobs: int, rate: float, queue: str = "default") -> CpuRun:
    """Drain a backlog of `jobs` no-op jobs with 2 fresh worker processes while one client submits `rate`
    jobs/s to `queue` (one call each; 0: no client) until the backlog's worth is done; worker CPU from the
    first completion to the last job (the backlog and every job submitted to the workers' queue)."""
    conn.flushall()
    enqueue_bulk("ferry", url, conn, jobs)
    workers = start_workers("ferry", url)
    run = CpuRun()
    try:
        wait_until(lambda: done_count(conn) >= 1, timeout_s=60, what="a first completion", interval_s=0.002,
                   check=workers.check_alive)
        (user0, system0, switches0), done0 = cpu_sample(workers.pids()), done_count(conn)
        start = time.perf_counter()
        if rate > 0 and SUBMITTER["client"] == "async":
            run.submitted = asyncio.run(submit_async(url, conn, jobs, rate, queue, workers.check_alive))
        elif rate > 0:
            job = {"task": "echo", "args": {"value": None}, "queue": queue, "allow_unserved": queue == UNSERVED}
            with Client(url) as client:
                def one_call_each(n: int) -> None:
                    for _ in range(n):
                        client.submit(job["task"], job["args"], queue=queue, allow_unserved=queue == UNSERVED)

                send = (lambda n: client.submit_many([job] * n)) if SUBMITTER["client"] == "batch" else one_call_each
                while done_count(conn) < jobs:
                    due = int((time.perf_counter() - start) * rate) - run.submitted
                    if due > 0:
                        send(due)
                        run.submitted += due
                    time.sleep(0.001)
                    workers.check_alive()
        run.submit_rate = run.submitted / (time.perf_counter() - start) if rate > 0 else 0.0
        served = 0 if queue == UNSERVED else run.submitted
        wait_until(lambda: done_count(conn) >= jobs + served, 60 + jobs / 20, "every job to finish",
                   check=workers.check_alive)
        user, system, switches = cpu_sample(workers.pids())
    finally:
        workers.stop()
    run.user_s, run.system_s, run.switches = user - user0, system - system0, switches - switches0
    run.jobs = jobs + served - done0
    return run


SUBMITTER = {"client": "async"}  # --submitter: which of Ferry's clients submits (set by main)


async def submit_async(url: str, conn: redis.Redis, jobs: int, rate: float, queue: str, check: Any) -> int:
    """One AsyncClient submitting `rate` jobs/s (one `submit` call per job; the calls of one tick run
    concurrently, so its batcher sends them in one write) until the backlog's worth is done."""
    submitted = 0
    async with AsyncClient(url) as client:
        start = time.perf_counter()
        while done_count(conn) < jobs:
            due = int((time.perf_counter() - start) * rate) - submitted
            if due > 0:
                await asyncio.gather(*(client.submit("echo", {"value": None}, queue=queue,
                                                     allow_unserved=queue == UNSERVED) for _ in range(due)))
                submitted += due
            await asyncio.sleep(0.001)
            check()
    return submitted


def run_submitter(url: str, conn: redis.Redis, jobs: int, rate: float, repeat: int) -> dict[str, object]:
    """Worker CPU per job draining `jobs` with a client submitting `rate` jobs/s, against the same drain
    without it: enqueues must not cost busy workers anything (they are woken only when idle). Runs in pairs
    (without, then with, same code path, fresh workers each), the ratio taken pair by pair (the median),
    as on a shared machine only adjacent runs compare. A control run per pair has the same client submit
    to a queue no worker serves: the cost of sharing 2 cores with a busy client, without its jobs."""
    pairs, controls = [], []
    for _ in range(repeat):
        pairs.append((drain_with_client(url, conn, jobs, 0), drain_with_client(url, conn, jobs, rate)))
        control = drain_with_client(url, conn, jobs, rate, queue=UNSERVED)
        controls.append(control.per_job_us() / pairs[-1][0].per_job_us())
    pairs.sort(key=lambda pair: pair[1].per_job_us() / pair[0].per_job_us())
    ratios = [with_client.per_job_us() / alone.per_job_us() for alone, with_client in pairs]
    alone, with_client = pairs[len(pairs) // 2]
    for index, (a, w) in enumerate(pairs):
        print(f"  pair {index + 1}: worker CPU {a.per_job_us():.1f} µs/job alone, {w.per_job_us():.1f} µs/job with a "
              f"client submitting {w.submit_rate:,.0f} jobs/s", file=sys.stderr)
    return {"backlog": jobs, "alone": alone.summary(), "with_client": with_client.summary(),
            "submitted": with_client.submitted, "submit_rate_jobs_per_s": round(with_client.submit_rate, 1),
            "worker_cpu_us_per_job": round(with_client.per_job_us(), 1),
            "worker_cpu_us_per_job_alone": round(alone.per_job_us(), 1),
            "with_client_over_alone": round(ratios[len(ratios) // 2], 3),
            "with_client_over_alone_per_pair": [round(r, 3) for r in ratios],
            "control_client_elsewhere_over_alone": round(sorted(controls)[len(controls) // 2], 3),
            "control_per_pair": [round(r, 3) for r in controls]}


def run_system(system: str, url: str, conn: redis.Redis, jobs: int, latency_jobs: int) -> Outcome:
    if system == "ferry-ceiling":
        return run_ceiling(url, conn, jobs)
    conn.flushall()
    outcome = Outcome(system, jobs)
    start = time.perf_counter()
    ids = enqueue_bulk(system, url, conn, jobs)
    outcome.enqueue_s = time.perf_counter() - start
    if conn.llen(f"rq:queue:{QUEUE}") != jobs:
        raise RuntimeError(f"{system}: {conn.llen(f'rq:queue:{QUEUE}')} jobs queued, expected {jobs}")

    commands_before = commands_processed(conn)
    spawned = datetime.now(UTC)
    workers = start_workers(system, url)
    try:
        outcome.worker_cpu_s, outcome.cpu_jobs = drain_cpu(conn, workers.pids, jobs, f"{system} to drain {jobs} jobs",
                                                           check=workers.check_alive)
        outcome.redis_commands = commands_processed(conn) - commands_before
        outcome.completed, first, last = verify_and_time(conn, system, ids)
        outcome.drain_s = (last - first).total_seconds()
        outcome.from_start_s = (last - spawned).total_seconds()
        print(f"  {system}: drained {outcome.completed} jobs at {outcome.drain_rate:,.0f} jobs/s", file=sys.stderr)
        if latency_jobs:
            wait_until(lambda: registered_workers(conn) >= 2, 30, f"{system} workers to register",
                       check=workers.check_alive)
            outcome.latencies_ms = one_job_latency(system, url, conn, latency_jobs)
    finally:
        workers.stop()
    return outcome


def report(outcomes: dict[str, Outcome], args: argparse.Namespace, submitter: dict[str, object] | None = None
           ) -> dict[str, object]:
    rows = []
    for name, o in outcomes.items():
        lat = o.latencies_ms
        rows.append([
            name, f"{o.completed:,}/{o.jobs:,}", f"{o.drain_rate:,.0f}", f"{o.jobs / o.from_start_s:,.0f}",
            f"{o.jobs / o.enqueue_s:,.0f}", f"{o.redis_commands / o.jobs:.1f}",
            f"{o.cpu_per_job_us:.0f}" if o.cpu_jobs else "-",
            f"{percentile(lat, 50):.2f}" if lat else "-", f"{percentile(lat, 99):.2f}" if lat else "-",
        ])
    print(table(["system", "completed", "drain jobs/s (first→last completion)", "jobs/s from worker start",
                 "bulk enqueue jobs/s", "Redis cmds/job (drain)", "worker CPU µs/job (drain)", "latency p50 ms",
                 "latency p99 ms"], rows))

    ratios: dict[str, Any] = {}
    ferry = outcomes.get("ferry")
    for key, other in (("ferry_over_simpleworker", "rq-simple"), ("ferry_over_worker", "rq-worker"),
                       ("ferry_over_ceiling", "ferry-ceiling")):
        ratios[key] = round(ferry.drain_rate / outcomes[other].drain_rate, 2) if ferry and other in outcomes else None
    ceiling = outcomes.get("ferry-ceiling")
    if ferry and ceiling and len(ferry.drain_rates) == len(ceiling.drain_rates):
        # each Ferry run against the ceiling run right after it (same minute of a shared machine's load)
        pairs = sorted(f / c for f, c in zip(ferry.drain_rates, ceiling.drain_rates, strict=True))
        ratios["ferry_over_ceiling"] = round(pairs[len(pairs) // 2], 2)
        ratios["ferry_over_ceiling_per_run"] = [round(r, 2) for r in pairs]
        print(f"\nFerry / ceiling, run by run: {ratios['ferry_over_ceiling_per_run']} (median {ratios[key]})")
    targets = {f"{k}>={v:g}": (ratios[k] >= v if ratios[k] is not None else None) for k, v in TARGETS.items()}
    if submitter:
        alone, with_client = submitter["alone"], submitter["with_client"]
        print(f"\nworker CPU per job (median pair of {len(submitter['with_client_over_alone_per_pair'])}): "
              f"{alone['worker_cpu_us_per_job']} µs draining alone (user {alone['user_us_per_job']}, system "
              f"{alone['system_us_per_job']}, {alone['voluntary_switches_per_job']} sleeps/job), "
              f"{with_client['worker_cpu_us_per_job']} µs with a client submitting "
              f"{with_client['submit_rate_jobs_per_s']} jobs/s (user {with_client['user_us_per_job']}, system "
              f"{with_client['system_us_per_job']}, {with_client['voluntary_switches_per_job']} sleeps/job): "
              f"{submitter['with_client_over_alone']}x, pairs {submitter['with_client_over_alone_per_pair']}; the same "
              f"client submitting to a queue no worker serves: {submitter['control_client_elsewhere_over_alone']}x, "
              f"pairs {submitter['control_per_pair']}")
    print()
    for key, met in targets.items():
        print(f"target {key}: {ratios[key.split('>=')[0]]} -> {'met' if met else 'MISSED' if met is False else 'n/a'}")
    return {
        "benchmark": "throughput",
        "jobs": args.jobs,
        "latency_jobs": args.latency_jobs,
        "repeat": args.repeat,
        "workers": 2,
        "drain_method": "first to last completion (job ended_at)",
        "latency_method": "enqueue call to result read; XREAD-blocking wait on the result stream",
        "machine": machine(),
        "systems": {name: o.summary() for name, o in outcomes.items()},
        "ratios": ratios,
        "submitter": submitter,
        "targets_met": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs queued before the workers start")
    parser.add_argument("--latency-jobs", type=int, default=300, help="one-at-a-time jobs for latency (0: skip)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per system; the median run (by drain rate) is reported")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    parser.add_argument("--submit-rate", type=float, default=3000, help="jobs/s of the submitter case (0: skip it)")
    parser.add_argument("--submitter", choices=("async", "sync", "batch"), default="async",
                        help="the submitter case's client: AsyncClient (calls of one tick concurrent), Client (one "
                             "blocking call after another; ~0.3 ms of CPU each, so ~2,600 jobs/s here), or Client."
                             "submit_many once a tick (one ENQUEUE per job, pipelined: the least client CPU)")
    args = parser.parse_args()
    SUBMITTER["client"] = args.submitter
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown or args.jobs < 2:
        parser.error(f"unknown systems {sorted(unknown)}" if unknown else "--jobs must be at least 2")

    server = EmbeddedRedis().start()
    try:
        conn = connect(server.url)
        print(f"redis {conn.info('server')['redis_version']} at {server.url}; {args.jobs} jobs, 2 worker processes",
              file=sys.stderr)
        outcomes = {}
        all_runs: dict[str, list[Outcome]] = {system: [] for system in systems}
        for _ in range(args.repeat):  # systems interleaved, so a load change on a shared machine hits them all
            for system in systems:
                all_runs[system].append(run_system(system, server.url, conn, args.jobs, args.latency_jobs))
        for system, unsorted in all_runs.items():
            runs = sorted(unsorted, key=lambda o: o.drain_rate)
            outcomes[system] = runs[len(runs) // 2]  # the median run, figures and latencies from the same run
            outcomes[system].drain_rates = [o.drain_rate for o in unsorted]
        submitter = run_submitter(server.url, conn, args.jobs, args.submit_rate, args.repeat) \
            if args.submit_rate > 0 and "ferry" in systems else None
    finally:
        server.cleanup()
    print(json_line(report(outcomes, args, submitter)))


if __name__ == "__main__":
    main()
