"""Eight jobs reduce the same large float64 array on 2 worker processes: plain RQ, Ferry and Ray side by side.

    python -m benchmarks.shared_input [--sizes 100,400,1000] [--jobs 8] [--variants rq-arg,rq-get,ferry,ray]
                                      [--skip-slow-above 400] [--timeout 600] [--repeat 1] [--rq-piece-mib 16]

Variants (every job computes the same count/sum/min/max/mean as Ferry's `array.stats`):
  rq-arg  plain RQ SimpleWorker x2, the array is the job's argument (RQ pickles + compresses it per job)
  rq-get  plain RQ SimpleWorker x2, the array SET once in Redis (as 16 MiB keys, or --rq-piece-mib: no
          huge command, and Redis caps a string at 512 MB); each job GETs every piece into one numpy buffer
  ferry   `ferry worker --processes 2`; client.put once, then `array.stats` jobs on the ObjectRef (on the node's
          host, the put copies the array into the node's memory and the node writes it to Redis behind the put;
          FERRY_PUT_WRITE_BEHIND=0: the put waits for Redis; FERRY_PUT_LOCAL_COPY=0: Redis, then the node's fetch)
  ray     ray.init(num_cpus=2), ray.put once, remote tasks (only if `import ray` works)

Workers are started and warm before the clock starts; wall time runs from the start of storing the input
(put/SET/enqueue) to the last result read. Bytes out of Redis: INFO `total_net_output_bytes` delta over
that window. PSS (psutil `memory_full_info().pss`, summed), sampled once after the last result while the
workers are alive, and as a peak every 0.1 s during the run, over: RQ, the two `rq worker` processes;
Ferry, the worker processes (children of the `ferry worker` supervisor, not the supervisor); Ray, the
worker processes that ran the tasks plus the raylet (which hosts the object store). Producers are never
counted. Every result is checked against numpy.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil
import redis
from rq import Queue

from benchmarks import profiled_worker
from benchmarks.common import (
    RAY_MISSING,
    REPO,
    PeakPss,
    Workers,
    connect,
    json_line,
    machine,
    mb,
    net_output_bytes,
    pss_bytes,
    ray_session,
    registered_workers,
    table,
    tool,
    wait_ferry,
    wait_rq,
    wait_until,
)
from benchmarks.rq_tasks import PIECE_BYTES, stats
from shared.client import Client
from shared.embedded import EmbeddedRedis

VARIANTS = ("rq-arg", "rq-get", "ferry", "ray")
LABELS = {
    "rq-arg": "(a) RQ SimpleWorker, array as job argument",
    "rq-get": "(b) RQ SimpleWorker, array in Redis once, GET per job",
    "ferry": "(c) Ferry, client.put once, array.stats",
    "ray": "(d) Ray, ray.put once",
}
ARRAY_KEY = "bench:array"
TARGETS = {  # ratio name -> (comparison, threshold): issue 7's (the first release's were pss 1.5, ray 3.0)
    "ferry_speedup_vs_rq_get": (">=", 5.0),
    "ferry_speedup_vs_rq_arg": (">=", 50.0),
    "ferry_bytes_out_over_array": ("<=", 1.05),  # one fetch per node; 5 % for the replies' own bytes
    "ferry_pss_over_array": ("<=", 1.2),
    "ferry_time_over_ray": ("<=", 1.3),
}


@dataclass
class Run:
    variant: str
    size_mb: int
    status: str = "ok"  # ok | skipped | timeout | unavailable | failed
    note: str = ""
    wall_s: float | None = None
    store_s: float | None = None  # put / SET / enqueue (rq-arg: enqueueing all jobs)
    bytes_out: int | None = None
    pss_idle: int | None = None  # the same processes just before the clock starts
    pss_end: int | None = None
    pss_peak: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """One size: the array, its expected stats, and where to run."""

    size_mb: int
    array: np.ndarray
    expected: dict[str, float | int]
    jobs: int
    url: str
    conn: redis.Redis
    timeout_s: float
    rq_piece_bytes: int = PIECE_BYTES

    def check(self, variant: str, results: list[dict[str, Any]]) -> None:
        if len(results) != self.jobs:
            raise RuntimeError(f"{variant}: {len(results)} results, expected {self.jobs}")
        want = self.expected
        for got in results:
            same = (got["count"], got["min"], got["max"]) == (want["count"], want["min"], want["max"])
            if not (same and math.isclose(got["sum"], want["sum"], rel_tol=1e-9)):
                raise RuntimeError(f"{variant}: wrong result {got}, numpy says {self.expected}")


# --- plain RQ ---
def run_rq(case: Case, variant: str, store_and_enqueue: Callable[[Queue], list[Any]]) -> Run:
    run = Run(variant, case.size_mb)
    case.conn.flushall()
    command = [tool("rq"), "worker", "-u", case.url, "--quiet", "--path", str(REPO),
               "-w", "rq.worker.SimpleWorker", "default"]
    workers = Workers(f"{variant}-{case.size_mb}", [command, command], dict(os.environ))
    try:
        wait_until(lambda: registered_workers(case.conn) >= 2, 30, "rq workers", check=workers.check_alive)
        queue = Queue("default", connection=case.conn)
        deadline = time.monotonic() + case.timeout_s
        out_before = net_output_bytes(case.conn)
        run.pss_idle = pss_bytes(workers.pids())
        with PeakPss(workers.pids) as peak:
            start = time.perf_counter()
            jobs = store_and_enqueue(queue)
            run.store_s = time.perf_counter() - start
            results = [wait_rq(job, deadline, workers) for job in jobs]
            run.wall_s = time.perf_counter() - start
            run.pss_end = pss_bytes(workers.pids())
        run.pss_peak = max(peak.peak, run.pss_end)  # a short run can end between two samples
        run.bytes_out = net_output_bytes(case.conn) - out_before
        case.check(variant, results)
    finally:
        workers.stop()
        case.conn.flushall()
    return run


def rq_arg(case: Case) -> Run:
    def enqueue(queue: Queue) -> list[Any]:
        return [queue.enqueue("benchmarks.rq_tasks.stats_of_argument", case.array, job_timeout=int(case.timeout_s))
                for _ in range(case.jobs)]

    return run_rq(case, "rq-arg", enqueue)


def rq_get(case: Case) -> Run:
    def store_and_enqueue(queue: Queue) -> list[Any]:
        raw = memoryview(case.array).cast("B")
        piece = case.rq_piece_bytes
        for index, start in enumerate(range(0, len(raw), piece)):
            queue.connection.set(f"{ARRAY_KEY}:{index}", raw[start : start + piece])
        args = (ARRAY_KEY, case.array.nbytes, case.array.dtype.str, piece)
        return [queue.enqueue("benchmarks.rq_tasks.stats_of_keys", *args, job_timeout=int(case.timeout_s))
                for _ in range(case.jobs)]

    return run_rq(case, "rq-get", store_and_enqueue)


# --- Ferry ---
def ferry(case: Case) -> Run:
    run = Run("ferry", case.size_mb)
    case.conn.flushall()
    node_id = f"bench-{os.getpid()}"
    env = dict(os.environ, FERRY_REDIS_URL=case.url, FERRY_NODE_ID=node_id)
    command = [*(profiled_worker.command() or [tool("ferry"), "worker"]), "--processes", "2"]
    node = Workers(f"ferry-{case.size_mb}", [command], env, count_children_only=True)
    client = Client(case.url)
    try:
        wait_until(lambda: registered_workers(case.conn) >= 2, 30, "ferry workers", check=node.check_alive)
        deadline = time.monotonic() + case.timeout_s
        out_before = net_output_bytes(case.conn)
        run.pss_idle = pss_bytes(node.pids())
        with PeakPss(node.pids) as peak:
            start = time.perf_counter()
            ref = client.put(case.array)
            run.store_s = time.perf_counter() - start
            submitted = client.submit_many([{"task": "array.stats", "args": {"data": ref}}] * case.jobs)
            results = wait_ferry(client, submitted, deadline)
            run.wall_s = time.perf_counter() - start
            run.pss_end = pss_bytes(node.pids())
            helpers = node.uncounted_descendants()
            helper_pss = pss_bytes(helpers)
        run.pss_peak = max(peak.peak, run.pss_end)  # a short run can end between two samples
        if helpers:
            run.note = f"+{mb(helper_pss)} PSS in {len(helpers)} resource tracker process(es), not counted"
        run.bytes_out = net_output_bytes(case.conn) - out_before
        counters = case.conn.hgetall(f"ferry:node:{node_id}:stats")
        run.extra = {**{k.decode(): int(v) for k, v in counters.items()}, "uncounted_helper_pss": helper_pss}
        case.check("ferry", results)
    finally:
        client.close()
        node.stop()
        case.conn.flushall()
    return run


# --- Ray ---
def _ray_stats(data: np.ndarray) -> tuple[dict[str, float | int], int]:
    return stats(data), os.getpid()


def _ray_pid() -> int:
    time.sleep(0.2)  # long enough that the 4 warm-up tasks spread over both workers
    return os.getpid()


def ray_variant(case: Case) -> Run:
    run = Run("ray", case.size_mb)
    with ray_session() as ray:
        if ray is None:
            run.status, run.note = "unavailable", RAY_MISSING
            return run
        remote_stats, remote_pid = ray.remote(_ray_stats), ray.remote(_ray_pid)
        warm_pids = set(ray.get([remote_pid.remote() for _ in range(4)]))
        raylet = [p.pid for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
        run.pss_idle = pss_bytes([*warm_pids, *raylet])
        with PeakPss(lambda: [*warm_pids, *raylet]) as peak:
            start = time.perf_counter()
            ref = ray.put(case.array)
            run.store_s = time.perf_counter() - start
            outputs = ray.get([remote_stats.remote(ref) for _ in range(case.jobs)], timeout=case.timeout_s)
            run.wall_s = time.perf_counter() - start
            ran = {pid for _, pid in outputs}
            run.pss_end = pss_bytes([*ran, *raylet])
        run.pss_peak = max(peak.peak, run.pss_end)  # a short run can end between two samples
        run.extra = {"worker_pids_ran_tasks": len(ran), "raylet_found": bool(raylet)}
        case.check("ray", [result for result, _ in outputs])
    return run


RUNNERS: dict[str, Callable[[Case], Run]] = {"rq-arg": rq_arg, "rq-get": rq_get, "ferry": ferry, "ray": ray_variant}


def median_run(case: Case, variant: str, skip_slow_above: int, repeat: int) -> Run:
    """Run a variant `repeat` times; the run with the median wall time (or the first failure) is reported."""
    runs = [run_variant(case, variant, skip_slow_above) for _ in range(repeat)]
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        return failed[0]
    runs.sort(key=lambda r: r.wall_s or 0.0)
    chosen = runs[len(runs) // 2]
    chosen.extra["wall_s_all_repeats"] = [round(r.wall_s or 0.0, 3) for r in runs]
    return chosen


def run_variant(case: Case, variant: str, skip_slow_above: int) -> Run:
    if variant == "rq-arg" and case.size_mb > skip_slow_above:
        return Run(variant, case.size_mb, status="skipped", note=f"size > --skip-slow-above {skip_slow_above} MB")
    print(f"  {case.size_mb} MB: {variant} ...", file=sys.stderr, flush=True)
    try:
        run = RUNNERS[variant](case)
    except TimeoutError as exc:
        return Run(variant, case.size_mb, status="timeout", note=f"{exc} ({case.timeout_s:.0f}s)")
    except Exception as exc:  # noqa: BLE001 - one broken variant must not hide the others' figures
        return Run(variant, case.size_mb, status="failed", note=f"{type(exc).__name__}: {exc}"[:300])
    print(f"  {case.size_mb} MB: {variant} {run.wall_s:.2f}s", file=sys.stderr, flush=True)
    return run


# --- report ---
def ratios(runs: dict[str, Run], nbytes: int) -> dict[str, float | None]:
    def wall(name: str) -> float | None:
        run = runs.get(name)
        return run.wall_s if run and run.status == "ok" else None

    f = wall("ferry")
    ferry_run = runs.get("ferry")
    div = lambda a, b: round(a / b, 3) if a is not None and b else None  # noqa: E731
    return {
        "ferry_speedup_vs_rq_get": div(wall("rq-get"), f),
        "ferry_speedup_vs_rq_arg": div(wall("rq-arg"), f),
        "ferry_bytes_out_over_array": div(ferry_run.bytes_out, nbytes) if f else None,
        "ferry_pss_over_array": div(ferry_run.pss_end, nbytes) if f else None,
        "ferry_pss_growth_over_array": div(ferry_run.pss_end - ferry_run.pss_idle, nbytes) if f else None,  # not a target
        "ferry_time_over_ray": div(f, wall("ray")),
    }


def verdicts(values: dict[str, float | None]) -> dict[str, bool | None]:
    out = {}
    for name, (op, threshold) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out[f"{name}{op}{threshold:g}"] = met
    return out


def print_tables(size_mb: int, nbytes: int, runs: dict[str, Run], values: dict[str, float | None]) -> None:
    ferry_wall = runs["ferry"].wall_s if "ferry" in runs and runs["ferry"].status == "ok" else None
    rows = []
    for name, run in runs.items():
        if run.status != "ok":
            rows.append([LABELS[name], f"{run.status}: {run.note}", "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append([
            LABELS[name], f"{run.wall_s:.2f}", f"{run.store_s:.2f}",
            f"{mb(run.bytes_out)} ({run.bytes_out / nbytes:.2f}x)" if run.bytes_out is not None else "- (no Redis)",
            f"{mb(run.pss_end)} ({run.pss_end / nbytes:.2f}x)", mb(run.pss_end - run.pss_idle), mb(run.pss_peak),
            f"{run.wall_s / ferry_wall:.1f}x" if ferry_wall else "-", run.note or "",
        ])
    print(f"\n{size_mb} MB float64 array ({nbytes:,} bytes), {len(runs)} variants:")
    print(table(["variant", "wall s", "store s", "bytes out of Redis", "workers' PSS at end", "PSS end - idle", "PSS peak",
                 "time / Ferry's", "note"], rows))
    for name, met in verdicts(values).items():
        key = name.split(">=")[0].split("<=")[0]
        print(f"target {name}: {values[key]} -> {'met' if met else 'MISSED' if met is False else 'n/a'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100", help="array sizes in MB (10^6 bytes), comma-separated")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--skip-slow-above", type=int, default=400, help="skip rq-arg for sizes above this (MB)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the median (by wall time) is reported")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per variant before it is abandoned")
    parser.add_argument("--rq-piece-mib", type=int, default=PIECE_BYTES >> 20,
                        help="size of the keys that variant (b) stores the array as, in MiB")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    server = EmbeddedRedis().start()
    report: dict[str, Any] = {"benchmark": "shared_input", "jobs": args.jobs, "workers": 2, "repeat": args.repeat,
                              "rq_piece_mib": args.rq_piece_mib,
                              "machine": machine(), "sizes": {}}
    try:
        conn = connect(server.url)
        for size_mb in sizes:
            array = np.random.default_rng(size_mb).random(size_mb * 1_000_000 // 8)
            case = Case(size_mb, array, stats(array), args.jobs, server.url, conn, args.timeout, args.rq_piece_mib << 20)
            runs = {v: median_run(case, v, args.skip_slow_above, args.repeat) for v in variants}
            values = ratios(runs, array.nbytes)
            print_tables(size_mb, array.nbytes, runs, values)
            report["sizes"][str(size_mb)] = {
                "array_bytes": array.nbytes,
                "variants": {name: {k: v for k, v in asdict(run).items() if k not in ("variant", "size_mb")}
                             for name, run in runs.items()},
                "ratios": values,
                "targets_met": verdicts(values),
            }
            del array, case
    finally:
        server.cleanup()
    print(json_line(report))


if __name__ == "__main__":
    main()
