"""`ferry demo` (also run by `ferry up`): small tasks, then one large array put once and read by many jobs.

Everything shown is measured: results are checked against numpy here, and the cache numbers are the
node counters the workers write to Redis (their change over the demo), not estimates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.admin.common import command, esc, open_client, short, table
from shared.cli import EXIT_FAILED, EXIT_OK, EXIT_PENDING, console, human_bytes
from shared.client import Client
from shared.errors import FerryError
from shared.models import JobRequest, JobResult, JobStatus, NodeInfo

DEFAULT_SIZE_MB = 100
DEFAULT_JOBS = 64
DEFAULT_TIMEOUT_S = 300.0
SEED = 20_240_601  # the same array every run: equal data is one object, so a rerun shows the cache at work
OBJECT_TTL_S = 600  # the demo's array leaves Redis on its own ten minutes later
BUDGET_SHARE = 0.5  # shrink the array to half of the smallest node budget when it would not fit
RESULT_POLL_S = 1.0  # between two looks at the node processes while waiting for a result

PARAGRAPH = (
    "Ferry carries jobs across Redis to worker nodes and carries their results back. A large input "
    "crosses to each node once; every worker process on that node then reads it from shared memory, "
    "without copying it. The river is wide, the ferry is small, and it crosses many times a day."
)
MEASUREMENTS = [12.5, 14.1, 13.8, 15.2, 11.9, 14.7, 13.3, 16.0, 12.8, 14.4]


class DemoFailed(Exception):
    """The demo found something wrong; `code` is the exit code to report."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@command
def demo(
    size_mb: Annotated[int, typer.Option("--size-mb", envvar="FERRY_DEMO_SIZE_MB", min=1, help="Size of the shared array in MiB.")] = DEFAULT_SIZE_MB,
    jobs: Annotated[int, typer.Option("--jobs", envvar="FERRY_DEMO_JOBS", min=1, help="array.stats jobs fanned out over slices of it.")] = DEFAULT_JOBS,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", min=1, help="Give up waiting for results after this long.")] = DEFAULT_TIMEOUT_S,
) -> None:
    """Run Ferry's demo against the running nodes: example tasks, then one large array shared by many jobs.

    Checks every result against numpy (exit 1 on a mismatch) and reports jobs/s and how many bytes the
    nodes fetched from Redis versus read from their shared memory. Needs a worker node (`ferry up` runs one).
    """
    with open_client() as client:
        raise typer.Exit(run_demo(client, size_mb, jobs, timeout))


def run_demo(client: Client, size_mb: int = DEFAULT_SIZE_MB, jobs: int = DEFAULT_JOBS, timeout_s: float = DEFAULT_TIMEOUT_S,
             check: Callable[[], None] | None = None) -> int:
    """Run the three parts of the demo; returns the exit code. `check` is called while waiting (it may raise)."""
    try:
        nodes = serving_nodes(client)
        deadline = time.monotonic() + timeout_s
        console.print("\n[bold]1. Small tasks[/bold]")
        run_examples(client, deadline, check)
        console.print("\n[bold]2. One large array, many jobs[/bold]")
        summary = run_fan_out(client, nodes, size_mb, jobs, deadline, check)
        console.print("\n[bold]3. Summary[/bold]")
        show_summary(client, summary)
    except DemoFailed as exc:
        console.print(f"[red]demo failed:[/red] {esc(exc)}", highlight=False, soft_wrap=True)
        return exc.code
    except FerryError as exc:
        console.print(f"[red]demo failed:[/red] {esc(exc.message)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    return EXIT_OK


def serving_nodes(client: Client) -> list[NodeInfo]:
    queue = client.settings.default_queue
    nodes = [n for n in client.admin.nodes() if n.alive and queue in n.queues]
    if not nodes:
        raise DemoFailed(f"no live worker node serves queue {queue!r}; start one with `ferry worker` (or run `ferry up`)")
    return nodes


# --- 1. small tasks ---
def run_examples(client: Client, deadline: float, check: Callable[[], None] | None) -> None:
    """Submit the small example tasks through the Python client, show and verify their results."""
    words = re.findall(r"[\w']+", PARAGRAPH.lower())
    examples: list[tuple[str, dict[str, Any], Callable[[Any], bool]]] = [
        ("echo", {"value": {"greeting": "hello from Ferry", "numbers": [1, 2, 3]}},
         lambda v: v == {"greeting": "hello from Ferry", "numbers": [1, 2, 3]}),
        ("stats.describe", {"values": MEASUREMENTS},
         lambda v: v["count"] == len(MEASUREMENTS) and math.isclose(v["mean"], sum(MEASUREMENTS) / len(MEASUREMENTS))
         and v["min"] == min(MEASUREMENTS) and v["max"] == max(MEASUREMENTS)),
        ("text.word_count", {"text": PARAGRAPH, "top": 3},
         lambda v: v["words"] == len(words) and v["unique"] == len(set(words))),
    ]
    started = time.monotonic()
    ids = [client.submit(task, args).id for task, args, _ in examples]
    t = table("task", "args", "result", "check")
    for job_id, (task, args, verify) in zip(ids, examples):
        res = wait_result(client, job_id, deadline, check)
        ok = verify(res.value)
        t.add_row(task, esc(short(args, 40)), esc(short(res.value, 70)), "[green]ok[/green]" if ok else "[red]wrong[/red]")
        if not ok:
            console.print(t)
            raise DemoFailed(f"task {task} returned {short(res.value, 200)}, which is not the expected answer")
    console.print(t)
    console.print(f"{len(examples)} jobs round-tripped through Redis and a worker in {time.monotonic() - started:.2f}s",
                  highlight=False)


# --- 2. fan-out over one large array ---
def run_fan_out(client: Client, nodes: list[NodeInfo], size_mb: int, jobs: int, deadline: float,
                check: Callable[[], None] | None) -> dict[str, Any]:
    """Put one array once, run `jobs` array.stats jobs over its slices, and check each against numpy."""
    nbytes = size_mb * 1024 * 1024
    budget = min(n.shm_budget_bytes for n in nodes)
    if nbytes > budget:
        nbytes = int(budget * BUDGET_SHARE)
        console.print(f"[yellow]the smallest node shared-memory budget is {human_bytes(budget)}; using a "
                      f"{human_bytes(nbytes)} array instead of {size_mb} MiB[/yellow]", highlight=False)
    count = max(1, nbytes // 8)
    jobs = min(jobs, count)
    data = np.random.default_rng(SEED).uniform(-100.0, 100.0, count)

    before = counters(client)
    started = time.monotonic()
    ref = client.put(data, ttl_s=OBJECT_TTL_S)
    put_s = time.monotonic() - started
    chunks = math.ceil(ref.nbytes / client.settings.object_chunk_bytes)
    console.print(f"put a float64 array of {count:,} values ({human_bytes(ref.nbytes)}) once: object {ref.id}, "
                  f"{chunks} {'chunk' if chunks == 1 else 'chunks'} in Redis, {put_s:.2f}s", highlight=False)

    bounds = np.linspace(0, count, jobs + 1).astype(int)
    slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    requests = [JobRequest(task="array.stats", args={"data": ref.model_dump(mode="json"), "start": a, "stop": b})
                for a, b in slices]
    started = time.monotonic()
    submitted = client.submit_many(requests)
    submit_s = time.monotonic() - started
    console.print(f"submitted {jobs} array.stats jobs over slices of it in {submit_s * 1000:.0f} ms "
                  f"(each job carries the {len(ref.model_dump_json())}-byte reference, not the data)", highlight=False)

    mismatches: list[str] = []
    totals = {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf}
    columns = (TextColumn("gathering results"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("results", total=jobs)
        for job, (a, b) in zip(submitted, slices):
            value = wait_result(client, job.id, deadline, check).value
            part = data[a:b]
            expected = {"count": b - a, "sum": float(part.sum()), "min": float(part.min()), "max": float(part.max())}
            if not matches(value, expected):
                mismatches.append(f"job {job.id} over [{a}:{b}] returned {short(value, 120)}, numpy says {expected}")
            else:
                totals["count"] += value["count"]
                totals["sum"] += value["sum"]
                totals["min"] = min(totals["min"], value["min"])
                totals["max"] = max(totals["max"], value["max"])
            progress.advance(bar)
    elapsed = time.monotonic() - started
    if mismatches:
        raise DemoFailed(f"{len(mismatches)} of {jobs} results disagree with numpy; first: {mismatches[0]}")
    whole = {"count": count, "sum": float(data.sum()), "min": float(data.min()), "max": float(data.max())}
    if not matches(totals, whole):
        raise DemoFailed(f"the slices add up to {totals}, numpy over the whole array says {whole}")
    console.print(f"[green]results check: {jobs}/{jobs} slices match numpy[/green] (count, sum, min, max); "
                  f"together: {totals['count']:,} values, sum {totals['sum']:.6g} (numpy: {whole['sum']:.6g}), "
                  f"min {totals['min']:.6g}, max {totals['max']:.6g}", highlight=False)
    return {"jobs": jobs, "elapsed_s": elapsed, "ref": ref, "before": before, "after": counters(client)}


def matches(value: Any, expected: dict[str, Any]) -> bool:
    try:
        return (value["count"] == expected["count"] and math.isclose(value["sum"], expected["sum"], rel_tol=1e-9, abs_tol=1e-6)
                and value["min"] == expected["min"] and value["max"] == expected["max"])
    except (KeyError, TypeError):
        return False


def wait_result(client: Client, job_id: str, deadline: float, check: Callable[[], None] | None) -> JobResult:
    """The finished job's result; DemoFailed if it failed or is not done by `deadline`."""
    while True:
        remaining = deadline - time.monotonic()
        res = client.result(job_id, wait_s=max(0.0, min(RESULT_POLL_S, remaining)))
        if res.ready:
            if res.status != JobStatus.FINISHED:
                raise DemoFailed(f"job {job_id} {getattr(res.status, 'value', res.status)}: {res.error}")
            return res
        if res.status in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.FINISHED):
            raise DemoFailed(f"job {job_id} ended ({getattr(res.status, 'value', res.status)}) without a result: {res.error}")
        if check is not None:
            check()
        if remaining <= 0:
            raise DemoFailed(f"job {job_id} is still {getattr(res.status, 'value', res.status)} after the demo's time limit; "
                             "is a worker node serving the default queue? (`ferry info`)", EXIT_PENDING)


def counters(client: Client) -> dict[str, dict[str, int]]:
    return {n.id: dict(n.stats) for n in client.admin.nodes()}


# --- 3. summary ---
def show_summary(client: Client, summary: dict[str, Any]) -> None:
    """Throughput, and per node the object bytes fetched from Redis versus read from shared memory."""
    jobs, elapsed, ref = summary["jobs"], summary["elapsed_s"], summary["ref"]
    console.print(f"{jobs} jobs in {elapsed:.2f}s: [bold]{jobs / elapsed:.1f} jobs/s[/bold] "
                  f"(submit to last result; {human_bytes(ref.nbytes / elapsed)}/s of array scanned)", highlight=False)
    before, after = summary["before"], summary["after"]
    delta = {node: {k: v - before.get(node, {}).get(k, 0) for k, v in stats.items() if k != "resident_bytes"}
             for node, stats in after.items()}
    used = {node: d for node, d in delta.items() if d.get("hits", 0) or d.get("misses", 0)}
    t = table("node", "from redis", "from shm", "hits", "misses", "evictions", title="Node caches during the demo")
    for node, d in sorted(used.items()):
        t.add_row(esc(node), human_bytes(d.get("bytes_from_redis", 0)), human_bytes(d.get("bytes_from_shm", 0)),
                  str(d.get("hits", 0)), str(d.get("misses", 0)), str(d.get("evictions", 0)))
    console.print(t)
    from_redis = sum(d.get("bytes_from_redis", 0) for d in used.values())
    from_shm = sum(d.get("bytes_from_shm", 0) for d in used.values())
    hits = sum(d.get("hits", 0) for d in used.values())
    misses = sum(d.get("misses", 0) for d in used.values())
    console.print(
        f"bytes from Redis: [bold]{human_bytes(from_redis)}[/bold] ({misses} {'fetch' if misses == 1 else 'fetches'} into "
        f"{len(used)} {'node' if len(used) == 1 else 'nodes'}); bytes from shared memory: [bold]{human_bytes(from_shm)}[/bold] "
        f"({hits} zero-copy {'read' if hits == 1 else 'reads'} by worker processes)",
        highlight=False,
    )
    console.print(f"without the node cache, the {jobs} jobs would have pulled {human_bytes(ref.nbytes * jobs)} from Redis. "
                  f"The array stays in Redis for {OBJECT_TTL_S // 60} minutes: `ferry objects ls --node`.", highlight=False)
