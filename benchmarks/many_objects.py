"""N distinct objects, each put once and read by one job, on 2 worker processes: Ferry, RQ with a GET, and Ray.

    python -m benchmarks.many_objects [--counts 100,500,2000] [--sizes-kb 1000,64] [--variants rq-get,ferry,ray]
                                      [--repeat 1]

What it measures: the cost per object when a deployment holds many of them, which is where per-object
overheads (a directory scan per job, a stat per mapped segment, a lock file per object) show up.

Variants (every job computes count/sum/min/max/mean of its own float64 object, as Ferry's `array.stats`):
  rq-get  plain RQ SimpleWorker x2; each object SET once as one key, its job GETs it (`stats_of_keys`)
  ferry   `ferry worker --processes 2`; client.put each object, submit_many one `array.stats` job per ref
  ray     ray.init(num_cpus=2); ray.put each object, one remote task per ref

Objects are distinct windows of one random buffer (no two equal, so dedup never helps). Workers are
started and warm before the clock starts; the clock runs from the first put/SET to the last result read;
cost per object = wall time / N (with --repeat, the best of the runs: on a shared machine, noise only
ever adds time). Every result is checked against numpy.
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
from rq import Queue

from benchmarks.common import (
    RAY_MISSING,
    REPO,
    Workers,
    connect,
    json_line,
    machine,
    ray_session,
    registered_workers,
    table,
    tool,
    wait_ferry,
    wait_rq,
    wait_until,
)
from benchmarks.rq_tasks import stats
from shared.client import Client
from shared.embedded import EmbeddedRedis

VARIANTS = ("rq-get", "ferry", "ray")
TARGETS = {"ferry_flatness_2000_over_100": ("<=", 1.2), "ferry_over_rq_get": ("<=", 1.0)}


@dataclass
class Run:
    variant: str
    count: int
    size_bytes: int
    status: str = "ok"
    wall_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_object_ms(self) -> float | None:
        return self.wall_s * 1000 / self.count if self.wall_s is not None else None


@dataclass
class Case:
    count: int
    size_bytes: int
    buffer: np.ndarray
    url: str
    timeout_s: float

    def obj(self, i: int) -> np.ndarray:
        items = self.size_bytes // 8
        return self.buffer[i : i + items]  # a distinct window per object: no copy, no dedup

    def check(self, variant: str, results: list[dict[str, Any]]) -> None:
        if len(results) != self.count:
            raise RuntimeError(f"{variant}: {len(results)} results, expected {self.count}")
        for i in (0, self.count // 2, self.count - 1):
            want = self.obj(i)
            if not math.isclose(results[i]["sum"], float(want.sum()), rel_tol=1e-9) or results[i]["count"] != want.size:
                raise RuntimeError(f"{variant}: wrong result for object {i}: {results[i]}")


def rq_get(case: Case) -> Run:
    run = Run("rq-get", case.count, case.size_bytes)
    conn = connect(case.url)
    conn.flushall()
    command = [
        tool("rq"),
        "worker",
        "-u",
        case.url,
        "--quiet",
        "--path",
        str(REPO),
        "-w",
        "rq.worker.SimpleWorker",
        "default",
    ]
    workers = Workers(f"many-rq-{case.count}", [command, command], dict(os.environ))
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 30, "rq workers", check=workers.check_alive)
        queue = Queue("default", connection=conn)
        deadline = time.monotonic() + case.timeout_s
        start = time.perf_counter()
        pipe = conn.pipeline(transaction=False)
        for i in range(case.count):
            pipe.set(f"bench:obj:{i}:0", memoryview(case.obj(i)).cast("B"))
        pipe.execute()
        jobs = queue.enqueue_many(
            [
                Queue.prepare_data(
                    "benchmarks.rq_tasks.stats_of_keys",
                    (f"bench:obj:{i}", case.size_bytes, "<f8"),
                    timeout=int(case.timeout_s),
                )
                for i in range(case.count)
            ]
        )
        results = [wait_rq(job, deadline, workers) for job in jobs]
        run.wall_s = time.perf_counter() - start
        case.check("rq-get", results)
    finally:
        workers.stop()
        conn.flushall()
        conn.close()
    return run


def ferry(case: Case) -> Run:
    run = Run("ferry", case.count, case.size_bytes)
    conn = connect(case.url)
    conn.flushall()
    node_id = f"many-{os.getpid()}"
    env = dict(os.environ, FERRY_REDIS_URL=case.url, FERRY_NODE_ID=node_id)
    node = Workers(
        f"many-ferry-{case.count}", [[tool("ferry"), "worker", "--processes", "2"]], env, count_children_only=True
    )
    client = Client(case.url)
    try:
        wait_until(lambda: registered_workers(conn) >= 2, 30, "ferry workers", check=node.check_alive)
        deadline = time.monotonic() + case.timeout_s
        start = time.perf_counter()
        refs = [client.put(case.obj(i)) for i in range(case.count)]
        submitted = client.submit_many([{"task": "array.stats", "args": {"data": ref}} for ref in refs])
        results = wait_ferry(client, submitted, deadline)
        run.wall_s = time.perf_counter() - start
        counters = conn.hgetall(f"ferry:node:{node_id}:stats")
        run.extra = {k.decode(): int(v) for k, v in counters.items()}
        case.check("ferry", results)
    finally:
        client.close()
        node.stop()
        conn.flushall()
        conn.close()
    return run


def _ray_stats(data: np.ndarray) -> dict[str, float | int]:
    return stats(data)


def ray_variant(case: Case) -> Run:
    run = Run("ray", case.count, case.size_bytes)
    with ray_session() as ray:
        if ray is None:
            run.status, run.note = "unavailable", RAY_MISSING
            return run
        remote_stats = ray.remote(_ray_stats)
        ray.get([remote_stats.remote(np.ones(8)) for _ in range(4)])  # warm workers
        start = time.perf_counter()
        refs = [ray.put(case.obj(i)) for i in range(case.count)]
        results = ray.get([remote_stats.remote(ref) for ref in refs], timeout=case.timeout_s)
        run.wall_s = time.perf_counter() - start
        case.check("ray", results)
    return run


RUNNERS: dict[str, Callable[[Case], Run]] = {"rq-get": rq_get, "ferry": ferry, "ray": ray_variant}


def run_variant(case: Case, variant: str) -> Run:
    print(f"  {case.size_bytes // 1000} kB x {case.count}: {variant} ...", file=sys.stderr, flush=True)
    try:
        run = RUNNERS[variant](case)
    except TimeoutError as exc:
        return Run(variant, case.count, case.size_bytes, status="timeout", note=str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken variant must not hide the others' figures
        return Run(variant, case.count, case.size_bytes, status="failed", note=f"{type(exc).__name__}: {exc}"[:300])
    if run.wall_s is not None:
        print(
            f"  {case.size_bytes // 1000} kB x {case.count}: {variant} {run.per_object_ms:.2f} ms/object",
            file=sys.stderr,
            flush=True,
        )
    return run


def best_run(case: Case, variant: str, repeat: int) -> Run:
    """The fastest of `repeat` runs (or the first failure); every run's cost is kept in `extra`."""
    runs = [run_variant(case, variant) for _ in range(repeat)]
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        return failed[0]
    best = min(runs, key=lambda r: r.wall_s or 0.0)
    best.extra["per_object_ms_all_runs"] = [round(r.per_object_ms or 0.0, 2) for r in runs]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,500,2000", help="numbers of objects, comma-separated")
    parser.add_argument("--sizes-kb", default="1000,64", help="object sizes in kB (10^3 bytes), comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per variant before it is abandoned")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant and N; the best is reported")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}")
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    sizes = [int(s) * 1000 for s in args.sizes_kb.split(",") if s.strip()]

    server = EmbeddedRedis().start()
    report: dict[str, Any] = {"benchmark": "many_objects", "workers": 2, "machine": machine(), "sizes": {}}
    try:
        for size in sizes:
            buffer = np.random.default_rng(size).random(size // 8 + max(counts))
            runs: dict[int, dict[str, Run]] = {}
            for count in counts:
                case = Case(count, size, buffer, server.url, args.timeout)
                runs[count] = {v: best_run(case, v, args.repeat) for v in variants}
            report["sizes"][str(size)] = _report(size, counts, variants, runs)
    finally:
        server.cleanup()
    print(json_line(report))


def _report(size: int, counts: list[int], variants: list[str], runs: dict[int, dict[str, Run]]) -> dict[str, Any]:
    def ms(count: int, variant: str) -> float | None:
        run = runs[count].get(variant)
        return run.per_object_ms if run and run.status == "ok" else None

    rows = []
    for count in counts:
        ferry_ms = ms(count, "ferry")
        row: list[Any] = [count]
        for variant in variants:
            run = runs[count][variant]
            row.append(f"{run.per_object_ms:.2f}" if run.status == "ok" else f"{run.status}: {run.note}"[:60])
        rq_ms = ms(count, "rq-get")
        row.append(f"{ferry_ms / rq_ms:.2f}x" if ferry_ms and rq_ms else "-")
        rows.append(row)
    print(f"\n{size:,}-byte float64 objects, each put once and read by one job: ms per object")
    print(table(["N", *variants, "ferry / rq-get"], rows))
    first, last = ms(counts[0], "ferry"), ms(counts[-1], "ferry")
    values: dict[str, float | None] = {
        "ferry_flatness_2000_over_100": round(last / first, 3) if first and last else None,
        "ferry_over_rq_get": max(
            (round(f / r, 3) for c in counts if (f := ms(c, "ferry")) and (r := ms(c, "rq-get"))), default=None
        ),
    }
    for name, (op, threshold) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value <= threshold)
        print(f"target {name}{op}{threshold:g}: {value} -> {'met' if met else 'MISSED' if met is False else 'n/a'}")
    return {
        "runs": {
            str(c): {v: asdict(r) | {"per_object_ms": r.per_object_ms} for v, r in runs[c].items()} for c in counts
        },
        "values": values,
    }


if __name__ == "__main__":
    main()
