"""`ferry demo` (also run by `ferry up`): small tasks, then a map-reduce workflow over one large array put once.

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

from services.admin.common import NO_NODE, command, console, esc, human_bytes, open_client, short, table
from shared.client import Client
from shared.errors import EXIT_FAILED, EXIT_NOT_READY, EXIT_OK, FerryError
from shared.models import JobResult, JobStatus, NodeInfo
from shared.workflows import WorkflowInfo, WorkflowJob, chain, group, step

DEFAULT_SIZE_MB = 100
DEFAULT_JOBS = 64
DEFAULT_WAIT_S = 300.0
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


# The demo's options, spelled alike on `ferry demo` and `ferry up` and after their FERRY_DEMO_* variables.
DemoSizeMb = Annotated[int, typer.Option("--demo-size-mb", envvar="FERRY_DEMO_SIZE_MB", min=1,
                                         help="Size of the demo's shared array in MiB.")]
DemoJobs = Annotated[int, typer.Option("--demo-jobs", envvar="FERRY_DEMO_JOBS", min=1,
                                       help="array.stats jobs the demo fans out over slices of the array.")]


@command
def demo(
    size_mb: DemoSizeMb = DEFAULT_SIZE_MB,
    jobs: DemoJobs = DEFAULT_JOBS,
    wait_s: Annotated[
        float,
        typer.Option("--wait-s", min=1, help="Give up waiting for results after this many seconds."),
    ] = DEFAULT_WAIT_S,
) -> None:
    """Run Ferry's demo against the running nodes: example tasks, then a map-reduce workflow over one large array.

    Checks every result against numpy (exit 1 on a mismatch) and reports jobs/s and how many bytes the
    nodes fetched from Redis versus read from their shared memory. Needs a worker node (`ferry up` runs one).
    """
    with open_client() as client:
        raise typer.Exit(run_demo(client, size_mb, jobs, wait_s))


def run_demo(client: Client, size_mb: int = DEFAULT_SIZE_MB, jobs: int = DEFAULT_JOBS, wait_s: float = DEFAULT_WAIT_S,
             check: Callable[[], None] | None = None) -> int:
    """Run the three parts of the demo; returns the exit code. `check` is called while waiting (it may raise)."""
    try:
        nodes = serving_nodes(client)
        deadline = time.monotonic() + wait_s
        console.print("\n[bold]1. Small tasks[/bold]")
        run_examples(client, deadline, check)
        console.print("\n[bold]2. Map-reduce over one large array[/bold]")
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
        raise DemoFailed(f"no live worker node serves queue {queue!r}: {NO_NODE}")
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
    for job_id, (task, args, verify) in zip(ids, examples, strict=True):
        res = wait_result(client, job_id, deadline, check)
        ok = verify(res.value)
        verdict = "[green]ok[/green]" if ok else "[red]wrong[/red]"
        t.add_row(task, esc(short(args, 40)), esc(short(res.value, 70)), verdict)
        if not ok:
            console.print(t)
            raise DemoFailed(f"task {task} returned {short(res.value, 200)}, which is not the expected answer")
    console.print(t)
    console.print(f"{len(examples)} jobs round-tripped through Redis and a worker in {time.monotonic() - started:.2f}s",
                  highlight=False)


# --- 2. fan-out over one large array ---
def run_fan_out(client: Client, nodes: list[NodeInfo], size_mb: int, jobs: int, deadline: float,
                check: Callable[[], None] | None) -> dict[str, Any]:
    """Put one array once; a workflow maps array.stats over `jobs` slices and reduces them with array.combine_stats
    (a group and its callback); every slice and the reduce are checked against numpy."""
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
    slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    mapped = [step("array.stats", {"data": ref, "start": a, "stop": b}) for a, b in slices]
    started = time.monotonic()
    workflow = client.submit_workflow(chain(group(mapped), step("array.combine_stats")))
    submit_s = time.monotonic() - started
    console.print(f"submitted a map-reduce workflow in one call ({submit_s * 1000:.0f} ms): a group of {jobs} "
                  f"array.stats jobs over slices (each carries the {len(ref.model_dump_json())}-byte reference, not "
                  "the data), then an array.combine_stats callback that gets their results in order", highlight=False)

    info = wait_workflow(client, workflow.id, jobs + 1, deadline, check)
    elapsed = time.monotonic() - started
    if info.status != JobStatus.FINISHED:
        failed = next((j for j in info.jobs if j.status != JobStatus.FINISHED), None)
        what = f"{failed.task} {failed.id}: {failed.error}" if failed else ""
        raise DemoFailed(f"workflow {workflow.id} {info.status.value}: {what}")
    mismatches: list[str] = []
    for job, (a, b) in zip(info.jobs[:jobs], slices, strict=True):
        part = data[a:b]
        expected = {"count": b - a, "sum": float(part.sum()), "min": float(part.min()), "max": float(part.max())}
        if not matches(info.results.get(job.id), expected):
            mismatches.append(f"job {job.id} over [{a}:{b}] returned {short(info.results.get(job.id), 120)}, "
                              f"numpy says {expected}")
    if mismatches:
        raise DemoFailed(f"{len(mismatches)} of {jobs} results disagree with numpy; first: {mismatches[0]}")
    totals = info.result
    whole = {"count": count, "sum": float(data.sum()), "min": float(data.min()), "max": float(data.max())}
    if not matches(totals, whole):
        raise DemoFailed(f"the reduce step says {totals}, numpy over the whole array says {whole}")
    console.print(f"[green]results check: {jobs}/{jobs} slices match numpy[/green] (count, sum, min, max); "
                  f"the reduce step: {totals['count']:,} values, sum {totals['sum']:.6g} (numpy: {whole['sum']:.6g}), "
                  f"min {totals['min']:.6g}, max {totals['max']:.6g}", highlight=False)
    show_placement(info.jobs[:jobs], info.jobs[jobs])
    return {"jobs": jobs, "elapsed_s": elapsed, "ref": ref, "before": before, "after": counters(client)}


def wait_workflow(client: Client, workflow_id: str, total: int, deadline: float,
                  check: Callable[[], None] | None) -> WorkflowInfo:
    """The workflow once every job ended (one read per look), with a progress bar; DemoFailed past `deadline`."""
    columns = (TextColumn("map-reduce"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("jobs", total=total)
        while True:
            remaining = deadline - time.monotonic()
            info = client.workflow(workflow_id, wait_s=max(0.0, min(RESULT_POLL_S, remaining)))
            progress.update(bar, completed=sum(1 for j in info.jobs if j.status.is_final))
            if info.ready:
                return info
            if check is not None:
                check()
            if remaining <= 0:
                raise DemoFailed(f"workflow {workflow_id} is still {info.status.value} after the demo's time limit "
                                 f"({short(info.counts, 80)}); is a worker node serving the default queue? "
                                 "(`ferry info`)", EXIT_NOT_READY)


def show_placement(mapped: list[WorkflowJob], reduce: WorkflowJob) -> None:
    """Where each step ran: slices per worker process (node.slot.pid), and the reduce step's."""
    per_worker: dict[str, int] = {}
    for job in mapped:
        per_worker[job.worker or "?"] = per_worker.get(job.worker or "?", 0) + 1
    t = table("node", "worker process", "map (slices)", "reduce", title="Where each step ran")
    for worker in sorted(set(per_worker) | {reduce.worker or "?"}):
        t.add_row(esc(worker.split(".")[0]), esc(worker), str(per_worker.get(worker, 0)),
                  "1" if worker == (reduce.worker or "?") else "")
    console.print(t)


def matches(value: Any, expected: dict[str, Any]) -> bool:
    try:
        same_sum = math.isclose(value["sum"], expected["sum"], rel_tol=1e-9, abs_tol=1e-6)
        return (value["count"] == expected["count"] and same_sum
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
            status = getattr(res.status, "value", res.status)
            raise DemoFailed(f"job {job_id} ended ({status}) without a result: {res.error}")
        if check is not None:
            check()
        if remaining <= 0:
            status = getattr(res.status, "value", res.status)
            raise DemoFailed(f"job {job_id} is still {status} after the demo's time limit; "
                             "is a worker node serving the default queue? (`ferry info`)", EXIT_NOT_READY)


def counters(client: Client) -> dict[str, dict[str, int]]:
    return {n.id: dict(n.stats) for n in client.admin.nodes()}


# --- 3. summary ---
def show_summary(client: Client, summary: dict[str, Any]) -> None:
    """Throughput, and per node the object bytes fetched from Redis versus read from shared memory."""
    jobs, elapsed, ref = summary["jobs"], summary["elapsed_s"], summary["ref"]
    console.print(f"{jobs} map jobs + 1 reduce in {elapsed:.2f}s: [bold]{(jobs + 1) / elapsed:.1f} jobs/s[/bold] "
                  f"(submit to the reduce's result; {human_bytes(ref.nbytes / elapsed)}/s of array scanned)",
                  highlight=False)
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
        f"bytes from Redis: [bold]{human_bytes(from_redis)}[/bold] ({misses} {'fetch' if misses == 1 else 'fetches'} "
        f"into {len(used)} {'node' if len(used) == 1 else 'nodes'}); "
        f"bytes from shared memory: [bold]{human_bytes(from_shm)}[/bold] "
        f"({hits} zero-copy {'read' if hits == 1 else 'reads'} by worker processes)",
        highlight=False,
    )
    console.print(f"without the node cache, the {jobs} jobs would have pulled {human_bytes(ref.nbytes * jobs)} "
                  "from Redis. "
                  f"The array stays in Redis for {OBJECT_TTL_S // 60} minutes: `ferry objects list`.", highlight=False)
