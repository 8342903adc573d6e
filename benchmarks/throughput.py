"""No-op jobs through Ferry, RQ `Worker` and RQ `SimpleWorker`: drain rate of a full queue, and latency.

    python -m benchmarks.throughput [--jobs 5000] [--latency-jobs 300] [--repeat 1] [--systems ferry,rq-worker,rq-simple]

For each system, on one private Redis flushed in between:
1. drain: enqueue --jobs no-op jobs in bulk, then start 2 worker processes and wait for every job.
   Drain rate = (jobs - 1) / (last `ended_at` - first `ended_at`), read from the job hashes
   (steady state: first to last completion, so process start-up is not counted). The rate from
   worker start to last completion is printed too. Every job must be `finished` with exactly one
   result entry, or the run fails: no silent loss, no double run.
2. latency: with the same 2 workers idle, one job at a time, enqueue -> result visible, measured
   by the producer (RQ: `job.latest_result(timeout=5)`, Ferry: `client.result(id, wait_s=5)`;
   both block on the job's result stream with XREAD). The first 10 jobs are a warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis
from rq import Queue
from rq.results import Result

from benchmarks.common import (REPO, Workers, connect, json_line, machine, percentile, registered_workers, table, tool,
                               wait_until)
from benchmarks import profiled_worker
from shared.client import Client
from shared.embedded import EmbeddedRedis

SYSTEMS = ("ferry", "rq-worker", "rq-simple")
QUEUE = "default"
WARMUP_JOBS = 10
RQ_FUNC = "benchmarks.noop.noop"
TARGETS = {"ferry_over_simpleworker": 2.0, "ferry_over_worker": 8.0}


@dataclass
class Outcome:
    system: str
    jobs: int
    enqueue_s: float = 0.0
    drain_s: float = 0.0  # first to last completion
    from_start_s: float = 0.0  # worker start to last completion
    completed: int = 0
    redis_commands: int = 0  # Redis commands processed while draining (workers' side, plus a little polling)
    latencies_ms: list[float] = field(default_factory=list)
    drain_rates: list[float] = field(default_factory=list)  # of every repeat; this outcome is the median one

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
    if system == "ferry":
        with Client(url) as client:
            return [s.id for s in client.submit_many([{"task": "echo", "args": {"value": None}}] * n)]
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
            ended.append(datetime.strptime(ended_at.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc))
    if bad:
        raise RuntimeError(f"{system}: {len(bad)} of {len(ids)} jobs not finished exactly once, e.g. {bad[:3]}")
    return len(ended), min(ended), max(ended)


def run_system(system: str, url: str, conn: redis.Redis, jobs: int, latency_jobs: int) -> Outcome:
    conn.flushall()
    outcome = Outcome(system, jobs)
    start = time.perf_counter()
    ids = enqueue_bulk(system, url, conn, jobs)
    outcome.enqueue_s = time.perf_counter() - start
    if conn.llen(f"rq:queue:{QUEUE}") != jobs:
        raise RuntimeError(f"{system}: {conn.llen(f'rq:queue:{QUEUE}')} jobs queued, expected {jobs}")

    commands_before = commands_processed(conn)
    spawned = datetime.now(timezone.utc)
    workers = start_workers(system, url)
    try:
        wait_until(lambda: done_count(conn) >= jobs, timeout_s=60 + jobs / 20, what=f"{system} to drain {jobs} jobs",
                   check=workers.check_alive)
        outcome.redis_commands = commands_processed(conn) - commands_before
        outcome.completed, first, last = verify_and_time(conn, system, ids)
        outcome.drain_s = (last - first).total_seconds()
        outcome.from_start_s = (last - spawned).total_seconds()
        print(f"  {system}: drained {outcome.completed} jobs at {outcome.drain_rate:,.0f} jobs/s", file=sys.stderr)
        if latency_jobs:
            wait_until(lambda: registered_workers(conn) >= 2, 30, f"{system} workers to register", check=workers.check_alive)
            outcome.latencies_ms = one_job_latency(system, url, conn, latency_jobs)
    finally:
        workers.stop()
    return outcome


def report(outcomes: dict[str, Outcome], args: argparse.Namespace) -> dict[str, object]:
    rows = []
    for name, o in outcomes.items():
        lat = o.latencies_ms
        rows.append([
            name, f"{o.completed:,}/{o.jobs:,}", f"{o.drain_rate:,.0f}", f"{o.jobs / o.from_start_s:,.0f}",
            f"{o.jobs / o.enqueue_s:,.0f}", f"{o.redis_commands / o.jobs:.1f}",
            f"{percentile(lat, 50):.2f}" if lat else "-", f"{percentile(lat, 99):.2f}" if lat else "-",
        ])
    print(table(["system", "completed", "drain jobs/s (first→last completion)", "jobs/s from worker start",
                 "bulk enqueue jobs/s", "Redis cmds/job (drain)", "latency p50 ms", "latency p99 ms"], rows))

    ratios: dict[str, float | None] = {}
    ferry = outcomes.get("ferry")
    for key, other in (("ferry_over_simpleworker", "rq-simple"), ("ferry_over_worker", "rq-worker")):
        ratios[key] = round(ferry.drain_rate / outcomes[other].drain_rate, 2) if ferry and other in outcomes else None
    targets = {f"{k}>={v:g}": (ratios[k] >= v if ratios[k] is not None else None) for k, v in TARGETS.items()}
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
        "targets_met": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs queued before the workers start")
    parser.add_argument("--latency-jobs", type=int, default=300, help="one-at-a-time jobs for latency (0: skip)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per system; the median run (by drain rate) is reported")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    args = parser.parse_args()
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
        for system in systems:
            runs = sorted((run_system(system, server.url, conn, args.jobs, args.latency_jobs) for _ in range(args.repeat)),
                          key=lambda o: o.drain_rate)
            outcomes[system] = runs[len(runs) // 2]  # the median run, figures and latencies from the same run
            outcomes[system].drain_rates = [o.drain_rate for o in runs]
    finally:
        server.cleanup()
    print(json_line(report(outcomes, args)))


if __name__ == "__main__":
    main()
