"""Tasks only the tests register (through FERRY_TASK_MODULES), to observe a worker from inside."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from shared.tasks import Array, JobContext, task


@task("test.where")
def where(data: Array) -> dict:
    """Where the view's memory lives: its address, and the /dev/shm mapping (if any) that contains it."""
    address = data.__array_interface__["data"][0]
    mapped = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= address < end and len(parts) >= 6:
                mapped = parts[5]
    return {"pid": os.getpid(), "mapped_file": mapped, "owndata": bool(data.flags.owndata),
            "writeable": bool(data.flags.writeable), "sum": float(data.sum())}


@task("test.pid")
def pid(seconds: float = 0.0, running: str = "") -> int:
    """This worker process's pid, after an optional sleep (a job to kill mid-flight). `running`: a file
    created when the body starts ("started" only says a worker claimed the job, not that it runs yet)."""
    if running:
        open(running, "w").close()
    time.sleep(seconds)
    return os.getpid()


@task("test.fail")
def fail(message: str = "boom") -> None:
    """Always raise."""
    raise RuntimeError(message)


@task("test.flaky")
def flaky(marker: str) -> str:
    """Fail on the first attempt (creates `marker`), succeed on the next."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "ok"


@task("test.hold")
def hold(data: Array, seconds: float) -> list[float]:
    """Sum the view, wait (while other jobs may evict the object), and sum it again."""
    first = float(data.sum())
    time.sleep(seconds)
    return [first, float(data.sum())]


@task("test.async_sleep")
async def async_sleep(seconds: float, marker: str = "") -> dict:
    """Await a sleep on the worker's event loop; `marker` says "running" once it runs, "cleaned up" when the
    task is interrupted (its finally ran)."""
    import asyncio

    if marker:
        with open(marker, "w") as f:
            f.write("running")
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        if marker:
            with open(marker, "w") as f:
                f.write("cleaned up")
        raise
    return {"slept": seconds, "pid": os.getpid(), "loop": type(asyncio.get_running_loop()).__name__}
LEDGER_ENV = "FERRY_TEST_LEDGER_DIR"  # the fault suite's ledger directory (unset: the task only sleeps)


def _ledger_line(kind: str, token: str) -> None:
    """One line per body start or end, appended with O_APPEND (atomic for a short write), independent of Redis."""
    directory = os.environ.get(LEDGER_ENV)
    if not directory:
        return
    fd = os.open(os.path.join(directory, "ledger.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{kind} {token} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@task("test.ledger")
def ledger(token: str, seconds: float = 0.0) -> str:
    """Record that this body started and ended (in FERRY_TEST_LEDGER_DIR), sleeping in between; returns `token`."""
    _ledger_line("start", token)
    time.sleep(seconds)
    _ledger_line("end", token)
    return token


@task("test.fail_with_backoff", retry_delay_s=0.4)
def fail_with_backoff(message: str = "boom") -> None:
    """Always raise; the task's default back-off waits 0.4 s between attempts."""
    raise RuntimeError(message)


@task("test.make")
def make(n: int, value: float = 1.0) -> np.ndarray:
    """A new float64 array of `n` elements equal to `value` (a large result: the first step of a pipeline)."""
    return np.full(n, value, dtype=np.float64)


@task("test.collect")
def collect(input: list[Any], token: str = "callback") -> dict:  # noqa: A002 - a workflow step's input
    """A fan-in callback: records that it ran (ledger) and returns what it got (arrays as their sums) and where."""
    _ledger_line("start", token)
    got = [float(v.sum()) if hasattr(v, "sum") else v for v in input]
    _ledger_line("end", token)
    return {"input": got, "pid": os.getpid()}


@task("test.steps")
def steps(gate_dir: str, steps: int, ctx: JobContext) -> int:
    """Report progress (i+1)/steps after each step; step i waits for the file `<gate_dir>/go<i>` (the test's pace)."""
    for i in range(steps):
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(gate_dir, f"go{i}")) and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.progress((i + 1) / steps, message=f"step {i + 1} of {steps}", data={"done": i + 1})
    return steps


@task("test.bad_progress")
def bad_progress(fraction: float, ctx: JobContext) -> None:
    """Report an out-of-range progress (the job fails with the bound's message)."""
    ctx.progress(fraction)


@task("test.short_lived", result_ttl_s=1, failure_ttl_s=1)
def short_lived(fail: bool = False) -> str:
    """A task whose jobs are kept 1 s by default (the decorator's TTLs)."""
    if fail:
        raise RuntimeError("failing on purpose")
    return "ok"


@task("test.modules")
def modules(prefixes: list[str], then_import: str = "") -> dict:
    """Which loaded modules start with one of `prefixes` (what a worker process carries), then import `then_import`
    (a task may import what Ferry's processes leave out) and name its module."""
    import importlib
    import sys

    loaded = sorted(name for name in sys.modules if name.startswith(tuple(prefixes)))
    imported = importlib.import_module(then_import).__name__ if then_import else ""
    return {"loaded": loaded, "imported": imported}
