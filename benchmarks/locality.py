"""Data-aware placement and the hand-off between steps: Ferry against Ray, and Ferry with each feature off.

    python -m benchmarks.locality [--pipeline-mb 100] [--pipelines 7] [--objects 8] [--object-mb 50] [--rounds 4]
                                  [--parts pipeline,rounds] [--timeout 600]

(a) pipeline: step A returns a new float64 array of --pipeline-mb MB (new data each run), step B sums it; the
    client chains them (submits B with A's result reference once A has finished). Variants:
      ferry               one node, 2 worker processes; A's result is written to Redis behind its finish
      ferry-write-first   the same with FERRY_RESULT_WRITE_BEHIND=false (hashed and written before the finish)
      ray                 ray.init(num_cpus=2); B.remote(A.remote(n)), A's ObjectRef passed to B
    Time per pipeline: median of --pipelines runs after one warm-up (client-side, submit A to B's result).
(b) rounds: 2 nodes of 2 worker processes, --objects objects of --object-mb MB put once, then --rounds rounds
    of one `bench.reduce` job per object (a round waits for the previous one). Bytes out of Redis (the nodes'
    `bytes_from_redis` counters, and Redis's own output counter) against the ideal (each object fetched once),
    and the wall time from the first round's submit to the last result, with placement on
    (FERRY_PLACEMENT_DELAY_S=0.2, the default) and off (0).

The machine is shared by whatever else runs: figures are noisy; ratios measured in one run are the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import (
    Workers,
    connect,
    json_line,
    machine,
    net_output_bytes,
    ray_session,
    registered_workers,
    table,
    tool,
    wait_ferry,
    wait_until,
)
from benchmarks.locality_tasks import make_array, reduce_array
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.objects.ref import REF_MARKER, ObjectRef
from shared.settings import Settings

TASKS = "benchmarks.locality_tasks"
TARGETS = {"pipeline_ferry_over_ray": 1.5, "rounds_bytes_over_ideal": 1.1}


def _nodes(url: str, label: str, count: int, env_extra: dict[str, str]) -> list[Workers]:
    nodes = []
    for i in range(count):
        env = dict(os.environ, FERRY_REDIS_URL=url, FERRY_NODE_ID=f"bench{os.getpid()}-{label}-{i}",
                   FERRY_TASK_MODULES=TASKS, **env_extra)
        nodes.append(Workers(f"locality-{label}-{i}", [[tool("ferry"), "worker", "--processes", "2"]], env,
                             count_children_only=True))
    return nodes


def _client(url: str, **settings: Any) -> Client:
    return Client(url, Settings(redis_url=url, task_modules=[TASKS], **settings))


# --- (a) the two-step pipeline ---
def pipeline_ferry(url: str, n: int, runs: int, timeout_s: float, write_behind: bool) -> dict[str, Any]:
    conn = connect(url)
    conn.flushall()
    [node] = _nodes(url, "pipe", 1, {"FERRY_RESULT_WRITE_BEHIND": "true" if write_behind else "false"})
    client = _client(url)
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 30, "ferry workers", check=node.check_alive)
        times = []
        for run in range(runs + 1):
            expected = reduce_array(make_array(n, run))
            deadline = time.monotonic() + timeout_s
            start = time.perf_counter()
            [a] = wait_ferry(client, [client.submit("bench.make", {"n": n, "offset": run})], deadline)
            ref = ObjectRef.model_validate(a[REF_MARKER])
            [total] = wait_ferry(client, [client.submit("bench.reduce", {"data": ref})], deadline)
            times.append(time.perf_counter() - start)
            if total != expected:
                raise RuntimeError(f"pipeline sum {total} != {expected}")
        stats = {k.decode(): int(v) for k, v in conn.hgetall(f"ferry:node:bench{os.getpid()}-pipe-0:stats").items()}
        return {"median_s": statistics.median(times[1:]), "best_s": min(times[1:]), "runs": len(times) - 1,
                "bytes_from_redis": stats.get("bytes_from_redis", 0), "bytes_from_shm": stats.get("bytes_from_shm", 0)}
    finally:
        client.close()
        node.stop()
        conn.flushall()


def pipeline_ray(n: int, runs: int, timeout_s: float) -> dict[str, Any]:
    with ray_session() as ray:
        if ray is None:
            return {"status": "unavailable"}
        make, reduce = ray.remote(make_array), ray.remote(reduce_array)
        times = []
        for run in range(runs + 1):
            expected = reduce_array(make_array(n, run))
            start = time.perf_counter()
            total = ray.get(reduce.remote(make.remote(n, run)), timeout=timeout_s)
            times.append(time.perf_counter() - start)
            if total != expected:
                raise RuntimeError(f"ray pipeline sum {total} != {expected}")
        return {"median_s": statistics.median(times[1:]), "best_s": min(times[1:]), "runs": len(times) - 1}


# --- (b) rounds over objects on two nodes ---
def rounds(url: str, objects: int, object_mb: int, count: int, delay_s: float, timeout_s: float) -> dict[str, Any]:
    conn = connect(url)
    conn.flushall()
    label = f"rounds{int(delay_s * 1000)}"
    nodes = _nodes(url, label, 2, {})
    client = _client(url, placement_delay_s=delay_s)
    try:
        wait_until(lambda: registered_workers(conn) >= 4, 30, "ferry workers",
                   check=lambda: [n.check_alive() for n in nodes])
        arrays = [np.random.default_rng(i).random(object_mb * 1_000_000 // 8) for i in range(objects)]
        refs = [client.put(a) for a in arrays]
        expected = [reduce_array(a) for a in arrays]
        del arrays
        out_before = net_output_bytes(conn)
        deadline = time.monotonic() + timeout_s
        start = time.perf_counter()
        for _ in range(count):
            totals = wait_ferry(client, client.submit_many([{"task": "bench.reduce", "args": {"data": r}}
                                                            for r in refs]), deadline)
            if totals != expected:
                raise RuntimeError("a round's sums differ from numpy's")
        wall = time.perf_counter() - start
        net = net_output_bytes(conn) - out_before
        fetched = sum(int(conn.hget(f"ferry:node:bench{os.getpid()}-{label}-{i}:stats", "bytes_from_redis") or 0)
                      for i in range(2))
        ideal = sum(r.nbytes for r in refs)
        return {"wall_s": wall, "bytes_from_redis": fetched, "redis_output_bytes": net, "ideal_bytes": ideal,
                "over_ideal": fetched / ideal, "redis_output_over_ideal": net / ideal}
    finally:
        client.close()
        for node in nodes:
            node.stop()
        conn.flushall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="pipeline,rounds", help="comma-separated: pipeline, rounds")
    parser.add_argument("--pipeline-mb", type=int, default=100, help="size of step A's result, MB (10^6 bytes)")
    parser.add_argument("--pipelines", type=int, default=7, help="timed pipeline runs per variant (after a warm-up)")
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--object-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per variant before it is abandoned")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    report: dict[str, Any] = {"benchmark": "locality", "machine": machine()}
    server = EmbeddedRedis().start()
    try:
        if "pipeline" in parts:
            n = args.pipeline_mb * 1_000_000 // 8
            timed = args.pipelines
            runs = {"ferry": pipeline_ferry(server.url, n, timed, args.timeout, write_behind=True),
                    "ferry-write-first": pipeline_ferry(server.url, n, timed, args.timeout, write_behind=False),
                    "ray": pipeline_ray(n, args.pipelines, args.timeout)}
            ray_s = runs["ray"].get("median_s")
            rows = [[name, f"{r['median_s'] * 1000:.1f}", f"{r['best_s'] * 1000:.1f}",
                     f"{r['median_s'] / ray_s:.2f}" if ray_s else "n/a", r.get("bytes_from_redis", "")]
                    for name, r in runs.items() if "median_s" in r]
            print(f"(a) pipeline: A returns {args.pipeline_mb} MB float64, B sums it; client-chained; "
                  f"median of {args.pipelines}")
            print(table(["variant", "median ms", "best ms", "time / Ray's", "node bytes from Redis"], rows))
            ratio = runs["ferry"]["median_s"] / ray_s if ray_s else None
            report["pipeline"] = {"mb": args.pipeline_mb, "variants": runs, "ferry_over_ray": ratio}
            if ratio is not None:
                print(f"target ferry/ray <= {TARGETS['pipeline_ferry_over_ray']}: {ratio:.2f} -> "
                      f"{'met' if ratio <= TARGETS['pipeline_ferry_over_ray'] else 'MISSED'}")
        if "rounds" in parts:
            on = rounds(server.url, args.objects, args.object_mb, args.rounds, 0.2, args.timeout)
            off = rounds(server.url, args.objects, args.object_mb, args.rounds, 0.0, args.timeout)
            print(f"(b) 2 nodes x 2 processes, {args.objects} objects x {args.object_mb} MB, {args.rounds} rounds "
                  "of one job per object")
            both = (("placement on", on), ("placement off", off))
            rows = [[name, f"{r['wall_s']:.2f}", f"{r['bytes_from_redis'] / 1e6:.0f}", f"{r['over_ideal']:.2f}",
                     f"{r['redis_output_over_ideal']:.2f}"] for name, r in both]
            headers = ["variant", "wall s", "MB fetched from Redis", "fetched / ideal", "Redis output / ideal"]
            print(table(headers, rows))
            print(f"target fetched/ideal <= {TARGETS['rounds_bytes_over_ideal']}: {on['over_ideal']:.2f} -> "
                  f"{'met' if on['over_ideal'] <= TARGETS['rounds_bytes_over_ideal'] else 'MISSED'}")
            report["rounds"] = {"placement_on": on, "placement_off": off,
                                "wall_on_over_off": on["wall_s"] / off["wall_s"]}
    finally:
        server.cleanup()
    print(json_line(report))


if __name__ == "__main__":
    main()
