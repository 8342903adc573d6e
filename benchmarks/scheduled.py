"""Delayed jobs all due in the same second: how late they start, Ferry's promoter vs RQ's scheduler.

    python -m benchmarks.scheduled [--jobs 10000] [--lead-s 15] [--systems ferry,rq]

For each system, on one private Redis flushed in between, with 2 worker processes already running:
enqueue --jobs no-op jobs all due at the same whole second (at least --lead-s from now, so that every
job is in the scheduled registry before it is due), wait for all of them to finish, and read each job's
own `started_at` (and `enqueued_at`: when it was moved from the scheduled registry to its queue).

- ferry: `ferry worker --processes 2` (its promoter moves due jobs); jobs via `Client.submit_many(run_at=...)`.
- rq: two `rq worker --with-scheduler -w rq.worker.SimpleWorker` (one of them holds RQ's scheduler lock
  for the queue); jobs via `Queue.enqueue_at` in pipelines. RQ's registry scores are whole seconds.

Start lateness = when the job's body started - due time, per job (Ferry: the result entry's
`execution_started_at`; RQ: `started_at`): p50, p99 and max; "moved" = the last job's enqueued_at
- due (how long the promotion of the whole batch took). Every job must be `finished` with exactly one
result entry, or the run fails.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import UTC, datetime

import redis
from rq import Queue

from benchmarks.common import REPO, Workers, connect, json_line, machine, percentile, table, tool, wait_until
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.timeutil import rq_parse

SYSTEMS = ("ferry", "rq")
QUEUE = "default"
RQ_FUNC = "benchmarks.noop.noop"
RQ_PIPELINE = 1000


def start_workers(system: str, url: str) -> Workers:
    env = dict(os.environ, FERRY_REDIS_URL=url, FERRY_NODE_ID=f"bench-{os.getpid()}")
    if system == "ferry":
        return Workers(system, [[tool("ferry"), "worker", "--processes", "2"]], env, count_children_only=True)
    rq_worker = [tool("rq"), "worker", "-u", url, "--quiet", "--path", str(REPO), "-w", "rq.worker.SimpleWorker",
                 "--with-scheduler", QUEUE]
    return Workers(system, [rq_worker, rq_worker], env)


def ready(system: str, conn: redis.Redis) -> bool:
    if int(conn.scard("rq:workers")) < 2:
        return False
    if system == "ferry":
        return conn.exists("ferry:promoter") == 1  # the node's promoter holds the lease
    return conn.exists(f"rq:scheduler-lock:{QUEUE}") == 1  # one worker's scheduler holds RQ's lock


def enqueue(system: str, url: str, conn: redis.Redis, jobs: int, due: datetime) -> list[str]:
    if system == "ferry":
        with Client(url) as client:
            request = {"task": "echo", "args": {"value": None}, "run_at": due.isoformat()}
            return [s.id for s in client.submit_many([request] * jobs)]
    queue = Queue(QUEUE, connection=conn)
    ids: list[str] = []
    for start in range(0, jobs, RQ_PIPELINE):
        with conn.pipeline() as pipe:
            ids += [queue.enqueue_at(due, RQ_FUNC, pipeline=pipe).id for _ in range(min(RQ_PIPELINE, jobs - start))]
            pipe.execute()
    return ids


def finished(conn: redis.Redis) -> int:
    return int(conn.zcard(f"rq:finished:{QUEUE}")) + int(conn.zcard(f"rq:failed:{QUEUE}"))


def lateness(conn: redis.Redis, system: str, ids: list[str], due: float) -> tuple[list[float], float]:
    """Per job, seconds from due to start; and seconds from due to the last job's move onto the queue."""
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", "status", "started_at", "enqueued_at")
        pipe.xrange(f"rq:results:{job_id}")
    replies = pipe.execute()
    late, moved, bad = [], [], []
    for job_id, (status, started_at, enqueued_at), results in zip(ids, replies[::2], replies[1::2], strict=True):
        started, queued = rq_parse(started_at), rq_parse(enqueued_at)
        if status != b"finished" or len(results) != 1 or started is None or queued is None:
            bad.append((job_id, status, len(results)))
            continue
        # Ferry writes started_at when a worker claims the job (a prefetch may claim a few at once); its result
        # entry has the moment the body started, which is what RQ's started_at is.
        ran = results[0][1].get(b"execution_started_at")
        late.append((float(ran) if system == "ferry" and ran else started.timestamp()) - due)
        moved.append(queued.timestamp() - due)
    if bad:
        raise RuntimeError(f"{system}: {len(bad)} of {len(ids)} jobs not finished exactly once, e.g. {bad[:3]}")
    return late, max(moved)


def run_system(system: str, url: str, conn: redis.Redis, jobs: int, lead_s: float) -> dict[str, object]:
    conn.flushall()
    workers = start_workers(system, url)
    try:
        wait_until(lambda: ready(system, conn), 60, f"{system} workers (and scheduler) to be ready",
                   check=workers.check_alive)
        due_unix = math.ceil(time.time() + lead_s)
        due = datetime.fromtimestamp(due_unix, tz=UTC)
        start = time.perf_counter()
        ids = enqueue(system, url, conn, jobs, due)
        enqueue_s = time.perf_counter() - start
        if time.time() >= due_unix:
            raise RuntimeError(f"{system}: enqueueing {jobs} jobs took {enqueue_s:.1f}s, past the due time; "
                               "raise --lead-s")
        wait_until(lambda: finished(conn) >= jobs, lead_s + 120 + jobs / 50, f"{system} to run {jobs} jobs",
                   interval_s=0.2, check=workers.check_alive)
    finally:
        workers.stop()
    late, moved_s = lateness(conn, system, ids, due_unix)
    result = {"jobs": jobs, "enqueue_s": round(enqueue_s, 2), "early": sum(1 for x in late if x < 0),
              "lateness_s": {"p50": round(percentile(late, 50), 3), "p99": round(percentile(late, 99), 3),
                             "max": round(max(late), 3), "first": round(min(late), 3)},
              "all_moved_after_s": round(moved_s, 3)}
    print(f"  {system}: {jobs} jobs, start lateness p50 {result['lateness_s']['p50']}s "  # type: ignore[index]
          f"p99 {result['lateness_s']['p99']}s", file=sys.stderr)  # type: ignore[index]
    return result


def report(results: dict[str, dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    rows = []
    for name, r in results.items():
        lat: dict[str, float] = r["lateness_s"]  # type: ignore[assignment]
        rows.append([name, f"{r['jobs']:,}", f"{lat['first']:.3f}", f"{lat['p50']:.3f}", f"{lat['p99']:.3f}",
                     f"{lat['max']:.3f}", f"{r['all_moved_after_s']:.3f}", str(r["early"])])
    print(table(["system", "jobs", "first start after due (s)", "lateness p50 (s)", "lateness p99 (s)",
                 "lateness max (s)", "all moved to the queue after (s)", "started early"], rows))
    ratios = {}
    if "ferry" in results and "rq" in results:
        ferry, rq = results["ferry"]["lateness_s"], results["rq"]["lateness_s"]
        for key in ("p50", "p99"):
            ratios[f"rq_over_ferry_{key}"] = round(rq[key] / ferry[key], 2) if ferry[key] > 0 else None  # type: ignore[index]
        print(f"\nRQ's lateness / Ferry's: p50 {ratios['rq_over_ferry_p50']}x, p99 {ratios['rq_over_ferry_p99']}x")
    return {"benchmark": "scheduled", "jobs": args.jobs, "workers": 2, "lead_s": args.lead_s,
            "method": "all jobs due at one whole second; lateness = each job's body start - due "
                      "(Ferry: result entry's execution_started_at; RQ: started_at)",
            "machine": machine(), "systems": results, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs, all due in the same second")
    parser.add_argument("--lead-s", type=float, default=15.0, help="at least this long from now to the due time")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(systems) - set(SYSTEMS) or args.jobs < 1:
        parser.error(f"systems must be among {','.join(SYSTEMS)} and --jobs at least 1")
    server = EmbeddedRedis().start()
    try:
        conn = connect(server.url)
        print(f"redis {conn.info('server')['redis_version']} at {server.url}; {args.jobs} jobs due in one second, "
              "2 worker processes", file=sys.stderr)
        results = {system: run_system(system, server.url, conn, args.jobs, args.lead_s) for system in systems}
    finally:
        server.cleanup()
    print(json_line(report(results, args)))


if __name__ == "__main__":
    main()
