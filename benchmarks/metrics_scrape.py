"""How long a /metrics scrape takes on a big deployment: Redis holding N finished jobs (default 100,000).

The Redis is filled directly (job hashes, result streams, finished registries, the `ferry:metrics`
counters of every job, nodes, workers and objects), as a deployment that ran N jobs would hold them;
then the exporter (shared/metrics.py) is timed in-process, and through a real producer over HTTP.

    python -m benchmarks.metrics_scrape --jobs 100000 --scrapes 50

Target: under 100 ms per scrape. The exporter reads no job, so the time should not grow with --jobs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

import httpx

from benchmarks.common import REPO, connect, json_line, machine, percentile, table
from shared import job_metrics as jm
from shared import keys, wire
from shared.embedded import EmbeddedRedis, free_port
from shared.metrics import collect
from shared.processes import terminate
from shared.settings import Settings
from shared.timeutil import rq_now

QUEUES = ("high", "default", "low")
TASKS = tuple(f"bench.task{i}" for i in range(20))


def fill(conn, jobs: int, nodes: int, workers_per_node: int, objects: int) -> None:
    rng = random.Random(1)
    pipe = conn.pipeline(transaction=False)
    now = time.time()
    for index in range(jobs):
        queue, task = QUEUES[index % len(QUEUES)], TASKS[index % len(TASKS)]
        job_id = f"bench{index:08d}"
        fields = wire.job_fields(task, {"value": index}, queue, 300, 0, 86_400, 604_800)
        fields.update(status="finished", started_at=rq_now(), ended_at=rq_now(), worker_name="n0.0.1")
        pipe.hset(keys.job(job_id), mapping=fields)
        pipe.xadd(keys.results(job_id), {"type": "1", "return_value": wire.b64(b"1")})
        pipe.zadd(keys.finished(queue), {job_id: now + 86_400})
        pipe.hincrby(jm.METRICS_KEY, jm.jobs_field(queue, task, "finished"), 1)
        pipe.hincrby(jm.METRICS_KEY, jm.bucket_field("run", task, rng.expovariate(10)), 1)
        pipe.hincrby(jm.METRICS_KEY, jm.bucket_field("wait", task, rng.expovariate(100)), 1)
        if index % 1000 == 999:
            pipe.execute()
    for task in TASKS:
        pipe.hincrbyfloat(jm.METRICS_KEY, jm.sum_field("run", task), 0.1 * jobs / len(TASKS))
        pipe.hincrbyfloat(jm.METRICS_KEY, jm.sum_field("wait", task), 0.01 * jobs / len(TASKS))
    for queue in QUEUES:
        pipe.sadd(keys.RQ_QUEUES, keys.queue(queue))
        for i in range(100):  # a backlog, so the oldest-job age has a head to read
            pipe.rpush(keys.queue(queue), f"bench{i:08d}")
    for n in range(nodes):
        node_id = f"node{n}"
        pipe.zadd(keys.NODES, {node_id: now})
        pipe.hset(keys.node(node_id), mapping={"host": "bench", "pid": 1, "processes": workers_per_node,
                                                "queues": '["default"]',
                                                "started_at": now, "last_heartbeat": now, "state": "running",
                                                "shm_budget_bytes": 8 << 30})
        pipe.hset(keys.node_stats(node_id), mapping={"bytes_from_redis": 1 << 30, "bytes_from_shm": 8 << 30,
                                                      "hits": 900,
                                                      "misses": 100, "evictions": 3, "resident_bytes": 1 << 30})
        for w in range(workers_per_node):
            name = f"{node_id}.{w}.{1000 + w}"
            pipe.sadd(keys.RQ_WORKERS, keys.worker(name))
            pipe.hset(keys.worker(name), mapping={"state": "idle", "ferry_node": node_id})
    for o in range(objects):
        object_id = f"{o:032x}"
        pipe.zadd(keys.OBJECTS, {object_id: now})
        pipe.hset(keys.object_meta(object_id),
                  mapping={"kind": "array", "dtype": "<f8", "shape": "1000", "nbytes": 8000})
    pipe.execute()


def time_in_process(conn, settings: Settings, scrapes: int) -> list[float]:
    times = []
    for _ in range(scrapes):
        started = time.perf_counter()
        collect(conn, settings)
        times.append(time.perf_counter() - started)
    return times


def time_over_http(url: str, scrapes: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    port = free_port()
    env.update(FERRY_REDIS_URL=url, FERRY_ACCESS_LOG="false", FERRY_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "services.producer", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the producer did not start")
                time.sleep(0.1)
            http.get("/metrics").raise_for_status()  # warm-up
            times = []
            for _ in range(scrapes):
                started = time.perf_counter()
                http.get("/metrics").raise_for_status()
                times.append(time.perf_counter() - started)
            return times
    finally:
        terminate(proc, grace_s=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="finished jobs Redis holds")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--workers-per-node", type=int, default=8)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    options = parser.parse_args()

    server = EmbeddedRedis().start()
    try:
        conn = connect(server.url)
        started = time.perf_counter()
        fill(conn, options.jobs, options.nodes, options.workers_per_node, options.objects)
        fill_s = time.perf_counter() - started
        settings = Settings(redis_url=server.url)
        text = collect(conn, settings)
        keys_held = conn.dbsize()
        local = time_in_process(conn, settings, options.scrapes)
        http = time_over_http(server.url, options.scrapes)
    finally:
        server.cleanup()
    rows = [(label, f"{statistics.median(t) * 1000:.1f}", f"{percentile(t, 95) * 1000:.1f}", f"{max(t) * 1000:.1f}")
            for label, t in (("collect() in process", local), ("GET /metrics over HTTP", http))]
    print(f"Redis: {keys_held} keys, {options.jobs} finished jobs (filled in {fill_s:.1f} s); "
          f"exposition {len(text)} bytes, {sum(1 for line in text.splitlines() if not line.startswith('#'))} samples")
    print(table(["scrape", "median ms", "p95 ms", "max ms"], rows))
    print(json_line({"benchmark": "metrics_scrape", "jobs": options.jobs, "keys": keys_held,
                     "median_ms_in_process": round(statistics.median(local) * 1000, 2),
                     "median_ms_http": round(statistics.median(http) * 1000, 2),
                     "p95_ms_http": round(percentile(http, 95) * 1000, 2), "machine": machine()}))


if __name__ == "__main__":
    main()
