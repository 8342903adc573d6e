"""The cost of concurrency limits: drain rate of no-op jobs with and without a limit, on 2 worker processes.

    python -m benchmarks.limits [--jobs 5000] [--repeat 1]

Cases, interleaved per repeat, each on the same private Redis flushed in between:
- none: `echo`, no limit (the baseline: the claim reads one more field of the job hash, nothing else);
- task concurrency=2: `bench.limited_noop` (`@task(..., concurrency=2)`): with 2 processes the limit is
  checked and slots taken and given back on every job, but it never holds a job back;
- key concurrency=2: `echo` with `limit_key="bench"`, `concurrency_limit=2`: the same, given with the job;
- key concurrency=1 (limiting): the limit holds every other job back: jobs are set aside and promoted.
A node is started first, every queue paused (`ferry pause`), the jobs enqueued in bulk (so the task's
limits come from the live catalog), then resumed. Drain rate = (jobs - 1) / (last - first `ended_at`),
as in benchmarks/throughput.py; every job must be finished exactly once. The cost of a limit is reported
in µs per job against the `none` case of the same repeat.

Part 2, the scripts alone (no worker processes, so much less noisy): one in-process loop claims one job
and finishes it with the claim of the next (what a worker sends per job when it cannot prefetch), for
--script-jobs jobs per case; Redis's own `usec_per_call` of EVALSHA (INFO commandstats) is the server
time of one claim + finish script with and without the limit's Lua.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import redis

from benchmarks.common import Workers, connect, json_line, machine, registered_workers, table, tool, wait_until
from benchmarks.throughput import done_count, verify_and_time
from shared.client import Client
from shared.embedded import EmbeddedRedis

CASES: dict[str, dict[str, Any]] = {
    "none": {"task": "echo"},
    "task concurrency=2": {"task": "bench.limited_noop"},
    "key concurrency=2": {"task": "echo", "limit_key": "bench", "concurrency_limit": 2},
    "key concurrency=1 (limiting)": {"task": "echo", "limit_key": "bench", "concurrency_limit": 1},
}


def run_case(case: str, url: str, conn: redis.Redis, jobs: int) -> float:
    conn.flushall()
    env = dict(os.environ, FERRY_REDIS_URL=url, FERRY_NODE_ID=f"bench-{os.getpid()}",
               FERRY_TASK_MODULES="benchmarks.limit_tasks")
    workers = Workers(f"limits-{case.split()[0]}", [[tool("ferry"), "worker", "--processes", "2"]], env,
                      count_children_only=True)
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 60, "2 worker processes", check=workers.check_alive)
        with Client(url) as client:
            wait_until(lambda: "bench.limited_noop" in client.catalog().names(), 30, "the task catalog")
            client.pause()
            ids = []
            for start in range(0, jobs, 1000):
                request = {**CASES[case], "args": {"value": None}}
                ids += [s.id for s in client.submit_many([request] * min(1000, jobs - start))]
            client.resume()
        wait_until(lambda: done_count(conn) >= jobs, 120 + jobs / 50, f"{case}: every job", check=workers.check_alive)
        completed, first, last = verify_and_time(conn, case, ids)
    finally:
        workers.stop()
    return (completed - 1) / max((last - first).total_seconds(), 1e-9)


def script_cost(case: str, url: str, conn: redis.Redis, jobs: int) -> float:
    """Redis server µs per finish-and-claim script call, for `jobs` jobs of `case` run by one in-process loop."""
    from shared import catalog, keys
    from shared.lifecycle import Lifecycle, Timing, new_execution_id
    from shared.settings import Settings
    from shared.tasks import load_tasks
    from shared.timeutil import unix_now

    conn.flushall()
    conn.zadd(keys.NODES, {"bench-catalog": unix_now()})
    catalog.publish(conn, "bench-catalog", ["default"], load_tasks(["benchmarks.limit_tasks"]), ttl_s=300)
    with Client(url) as client:
        for start in range(0, jobs, 1000):
            client.submit_many([{**CASES[case], "args": {"value": None}}] * min(1000, jobs - start))
        lifecycle = Lifecycle(client.conn, Settings(redis_url=url))
        worker, timing = "bench-catalog.0.1", Timing("echo", 0.00001, 0.0)
        held = lifecycle.claim(worker, ["default"], new_execution_id(), 1)
        conn.config_resetstat()
        done = 0
        while held:
            now = unix_now()
            _, held = lifecycle.finish(held[0], worker, b"null", now, now, timing, claim_from=["default"],
                                       claim_count=1, next_execution_id=new_execution_id())
            done += 1
    stats = conn.info("commandstats").get("cmdstat_evalsha", {})
    if done < jobs:
        raise RuntimeError(f"{case}: the loop ran {done} of {jobs} jobs")
    return float(stats.get("usec_per_call", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per case")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is reported")
    parser.add_argument("--script-jobs", type=int, default=5000, help="jobs per case of part 2 (0: skip it)")
    args = parser.parse_args()
    server = EmbeddedRedis().start()
    rates: dict[str, list[float]] = {case: [] for case in CASES}
    script_us: dict[str, list[float]] = {case: [] for case in CASES if "limiting" not in case}
    try:
        conn = connect(server.url)
        print(f"redis {conn.info('server')['redis_version']}; {args.jobs} jobs per case, 2 worker processes",
              file=sys.stderr)
        for _ in range(args.repeat):
            for case in CASES:
                rates[case].append(run_case(case, server.url, conn, args.jobs))
                print(f"  {case}: {rates[case][-1]:,.0f} jobs/s", file=sys.stderr)
            for case in script_us if args.script_jobs else ():
                script_us[case].append(script_cost(case, server.url, conn, args.script_jobs))
                print(f"  {case}: {script_us[case][-1]:.1f} µs of Redis time per finish+claim", file=sys.stderr)
    finally:
        server.cleanup()
    median = {case: sorted(r)[len(r) // 2] for case, r in rates.items()}
    base_us = 1e6 / median["none"]
    rows = [[case, f"{rate:,.0f}", f"{rate / median['none']:.2f}", f"{1e6 / rate - base_us:+.0f}"]
            for case, rate in median.items()]
    print(table(["case", "jobs/s", "vs none", "µs/job vs none"], rows), file=sys.stderr)
    scripts = {case: sorted(v)[len(v) // 2] for case, v in script_us.items() if v}
    if scripts:
        print(table(["case", "Redis µs per finish+claim", "vs none"],
                    [[case, f"{us:.1f}", f"{us - scripts['none']:+.1f}"] for case, us in scripts.items()]),
              file=sys.stderr)
    print(json_line({"benchmark": "limits", "jobs": args.jobs, "repeat": args.repeat, "machine": machine(),
                     "drain_jobs_per_s": {c: round(r, 1) for c, r in median.items()},
                     "all_runs": {c: [round(x, 1) for x in r] for c, r in rates.items()},
                     "cost_us_per_job": {c: round(1e6 / r - base_us, 1) for c, r in median.items()},
                     "redis_us_per_finish_and_claim": {c: round(v, 1) for c, v in scripts.items()}}))


if __name__ == "__main__":
    main()
