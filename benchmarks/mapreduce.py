"""Map-reduce over one large float64 array in slices, then a reduce step: Ferry, Ray and plain RQ side by side.

    python -m benchmarks.mapreduce [--mb 400] [--slices 64] [--systems ferry,ray,rq] [--repeat 1] [--timeout 600]

Every system runs 2 worker processes, warm before the clock starts; the clock runs from the start of storing
the array to the reduce step's result in the driver's hands.
  ferry  `ferry worker --processes 2`; client.put once; one workflow: a group of `array.stats` over the slices
         and an `array.combine_stats` callback that gets their results in order (shared/workflows.py). The
         client runs on the node's host, so the put copies the array into the node's memory and the node
         writes it to Redis behind the put (shared/objects/local_put.py); FERRY_PUT_WRITE_BEHIND=0 makes the
         put wait for Redis, FERRY_PUT_LOCAL_COPY=0 gives the earlier path (Redis, then one fetch by the node)
  ray    ray.init(num_cpus=2); ray.put once; one task per slice on the ref, a reduce task taking their refs
  rq     RQ SimpleWorker x2 (JSON serializer); the array's bytes SET once in Redis as 16 MiB pieces; a map job
         per slice GETRANGEs only its slice; the reduce job is enqueued with `depends_on` every map job
Every slice's result and the reduce are checked against numpy. Bytes out of Redis: INFO total_net_output_bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rq import Queue
from rq.serializers import JSONSerializer

from benchmarks.common import (
    RAY_MISSING,
    REPO,
    Workers,
    connect,
    json_line,
    machine,
    mb,
    net_output_bytes,
    ray_session,
    registered_workers,
    table,
    tool,
    wait_rq,
    wait_until,
)
from benchmarks.mapreduce_tasks import combine_parts
from benchmarks.rq_tasks import PIECE_BYTES
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.workflows import chain, group, step

SYSTEMS = ("ferry", "ray", "rq")
LABELS = {"ferry": "Ferry: put once, group + reduce callback", "ray": "Ray: ray.put + tasks + reduce task",
          "rq": "RQ SimpleWorker x2: bytes in Redis, depends_on reduce"}
TARGETS = {"ferry_over_ray": ("<=", 1.3), "rq_over_ferry": (">=", 5.0)}
ARRAY_KEY = "bench:mapreduce"


@dataclass
class Run:
    system: str
    status: str = "ok"
    note: str = ""
    wall_s: float | None = None
    store_s: float | None = None
    bytes_out: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    array: np.ndarray
    slices: list[tuple[int, int]]
    url: str
    timeout_s: float

    def check(self, system: str, parts: list[dict[str, Any]], reduced: dict[str, Any]) -> None:
        if len(parts) != len(self.slices):
            raise RuntimeError(f"{system}: {len(parts)} slice results, expected {len(self.slices)}")
        for got, (a, b) in zip(parts, self.slices, strict=True):
            _same(system, got, self.array[a:b])
        _same(system, reduced, self.array)


def _same(system: str, got: dict[str, Any], part: np.ndarray) -> None:
    want = {"count": int(part.size), "sum": float(part.sum()), "min": float(part.min()), "max": float(part.max())}
    if (got["count"], got["min"], got["max"]) != (want["count"], want["min"], want["max"]) or not math.isclose(
            got["sum"], want["sum"], rel_tol=1e-9, abs_tol=1e-6):
        raise RuntimeError(f"{system}: wrong result {got}, numpy says {want}")


# --- Ferry ---
def ferry(case: Case) -> Run:
    run = Run("ferry")
    conn = connect(case.url)
    conn.flushall()
    node_id = f"bench-{os.getpid()}"
    env = dict(os.environ, FERRY_REDIS_URL=case.url, FERRY_NODE_ID=node_id)
    node = Workers("ferry-mapreduce", [[tool("ferry"), "worker", "--processes", "2"]], env, count_children_only=True)
    client = Client(case.url)
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 30, "ferry workers", check=node.check_alive)
        out_before = net_output_bytes(conn)
        start = time.perf_counter()
        ref = client.put(case.array)
        run.store_s = time.perf_counter() - start
        mapped = [step("array.stats", {"data": ref, "start": a, "stop": b}) for a, b in case.slices]
        wf = client.submit_workflow(chain(group(mapped), step("array.combine_stats")))
        info = client.workflow(wf, wait_s=case.timeout_s)
        run.wall_s = time.perf_counter() - start
        if not info.ready:
            raise TimeoutError("the workflow did not end")
        if info.result is None:
            raise RuntimeError(f"workflow {info.status.value}: {[j.error for j in info.jobs if j.error][:1]}")
        run.bytes_out = net_output_bytes(conn) - out_before
        stats = {k.decode(): int(v) for k, v in conn.hgetall(f"ferry:node:{node_id}:stats").items()}
        run.extra = {"bytes_from_redis": stats.get("bytes_from_redis"), "bytes_from_shm": stats.get("bytes_from_shm")}
        case.check("ferry", [info.results[j.id] for j in info.jobs[:-1]], info.result)
    finally:
        client.close()
        node.stop()
        conn.flushall()
    return run


# --- Ray ---
def _ray_slice(data: np.ndarray, start: int, stop: int) -> dict[str, Any]:
    part = data[start:stop]
    total = float(part.sum())
    return {"count": int(part.size), "sum": total, "min": float(part.min()), "max": float(part.max())}


def _ray_reduce(*parts: dict[str, Any]) -> dict[str, Any]:
    return combine_parts(list(parts))


def ray_system(case: Case) -> Run:
    run = Run("ray")
    with ray_session() as ray:
        if ray is None:
            run.status, run.note = "unavailable", RAY_MISSING
            return run
        remote_slice, remote_reduce = ray.remote(_ray_slice), ray.remote(_ray_reduce)
        ray.get([remote_slice.remote(np.zeros(4), 0, 2) for _ in range(4)])  # warm both workers
        start = time.perf_counter()
        ref = ray.put(case.array)
        run.store_s = time.perf_counter() - start
        parts = [remote_slice.remote(ref, a, b) for a, b in case.slices]
        reduced = ray.get(remote_reduce.remote(*parts), timeout=case.timeout_s)
        run.wall_s = time.perf_counter() - start
        case.check("ray", ray.get(parts), reduced)
    return run


# --- plain RQ ---
def rq_system(case: Case) -> Run:
    run = Run("rq")
    conn = connect(case.url)
    conn.flushall()
    command = [tool("rq"), "worker", "-u", case.url, "--quiet", "--path", str(REPO), "-w", "rq.worker.SimpleWorker",
               "--serializer", "rq.serializers.JSONSerializer", "default"]
    workers = Workers("rq-mapreduce", [command, command], dict(os.environ))
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 30, "rq workers", check=workers.check_alive)
        queue = Queue("default", connection=conn, serializer=JSONSerializer)
        deadline = time.monotonic() + case.timeout_s
        out_before = net_output_bytes(conn)
        start = time.perf_counter()
        raw = memoryview(case.array).cast("B")
        for index, at in enumerate(range(0, len(raw), PIECE_BYTES)):
            conn.set(f"{ARRAY_KEY}:{index}", raw[at : at + PIECE_BYTES])
        run.store_s = time.perf_counter() - start
        maps = [queue.enqueue("benchmarks.mapreduce_tasks.slice_stats", ARRAY_KEY, case.array.dtype.str, a, b,
                              job_timeout=int(case.timeout_s)) for a, b in case.slices]
        reduce = queue.enqueue("benchmarks.mapreduce_tasks.combine", [j.id for j in maps], depends_on=maps,
                               job_timeout=int(case.timeout_s))
        reduced = wait_rq(reduce, deadline, workers)
        run.wall_s = time.perf_counter() - start
        run.bytes_out = net_output_bytes(conn) - out_before
        case.check("rq", [j.return_value() for j in maps], reduced)
    finally:
        workers.stop()
        conn.flushall()
    return run


RUNNERS = {"ferry": ferry, "ray": ray_system, "rq": rq_system}


def run_system(case: Case, system: str, repeat: int) -> Run:
    runs = []
    for _ in range(repeat):
        print(f"  {system} ...", file=sys.stderr, flush=True)
        try:
            run = RUNNERS[system](case)
        except Exception as exc:  # noqa: BLE001 - one broken system must not hide the others' figures
            return Run(system, status="failed", note=f"{type(exc).__name__}: {exc}"[:300])
        if run.status != "ok":
            return run
        print(f"  {system} {run.wall_s:.2f}s", file=sys.stderr, flush=True)
        runs.append(run)
    runs.sort(key=lambda r: r.wall_s or 0.0)
    chosen = runs[len(runs) // 2]
    chosen.extra["wall_s_all_repeats"] = [round(r.wall_s or 0.0, 3) for r in runs]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=400, help="array size in MB (10^6 bytes)")
    parser.add_argument("--slices", type=int, default=64, help="map jobs (one per slice)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per system; the median wall time is reported")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    count = args.mb * 1_000_000 // 8
    array = np.random.default_rng(7).uniform(-1.0, 1.0, count)
    bounds = np.linspace(0, count, args.slices + 1).astype(int)
    slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    server = EmbeddedRedis().start()
    try:
        case = Case(array, slices, server.url, args.timeout)
        runs = {system: run_system(case, system, args.repeat) for system in systems}
    finally:
        server.cleanup()
    wall = {s: r.wall_s for s, r in runs.items() if r.status == "ok"}
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    values = {"ferry_over_ray": ratio(wall.get("ferry"), wall.get("ray")),
              "rq_over_ferry": ratio(wall.get("rq"), wall.get("ferry"))}
    rows = []
    for system, run in runs.items():
        if run.status != "ok":
            rows.append([LABELS[system], f"{run.status}: {run.note}", "-", "-", "-"])
            continue
        rows.append([LABELS[system], f"{run.wall_s:.2f}", f"{run.store_s:.2f}",
                     mb(run.bytes_out) if run.bytes_out is not None else "- (no Redis)",
                     f"{run.wall_s / wall['ferry']:.2f}x" if wall.get("ferry") else "-"])
    print(f"\nmap-reduce over a {args.mb} MB float64 array in {args.slices} slices + 1 reduce, "
          "2 worker processes each:")
    print(table(["system", "wall s", "store s", "bytes out of Redis", "time / Ferry's"], rows))
    for name, (op, threshold) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        print(f"{name} = {value} (target {op} {threshold:g}): {'met' if met else 'not met' if met is False else '-'}")
    print(json_line({"benchmark": "mapreduce", "mb": args.mb, "slices": args.slices, "machine": machine(),
                     "runs": {s: vars(r) for s, r in runs.items()}, "ratios": values}))


if __name__ == "__main__":
    main()
