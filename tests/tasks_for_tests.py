"""Tasks only the tests register (through FERRY_TASK_MODULES), to observe a worker from inside."""

from __future__ import annotations

import os
import time

from shared.tasks import Array, task


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
def pid(seconds: float = 0.0) -> int:
    """This worker process's pid, after an optional sleep (a job to kill mid-flight)."""
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
    """Await a sleep on the worker's event loop; `marker` is written when the task is interrupted (its finally ran)."""
    import asyncio

    try:
        await asyncio.sleep(seconds)
    except BaseException:
        if marker:
            with open(marker, "w") as f:
                f.write("cleaned up")
        raise
    return {"slept": seconds, "pid": os.getpid(), "loop": type(asyncio.get_running_loop()).__name__}
