"""What the benchmarks share: worker processes as subprocesses, PSS sums, percentiles, tables, Redis INFO."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOG_DIR = Path(tempfile.gettempdir()) / "ferry-bench-logs"


def tool(name: str) -> str:
    """The console script `name` of this interpreter's environment (ferry, rq, py-spy)."""
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed in this environment")
    return found


def connect(url: str) -> redis.Redis:
    """The benchmark driver's own connection: a long socket time-out, so blocking reads never trip it."""
    return redis.Redis.from_url(url, socket_timeout=60)


class Workers:
    """Worker processes started as subprocesses, each in its own session so that it can be stopped whole.

    `count_children_only`: the workers are the direct children of each launched process (a Ferry node
    supervisor's worker processes), not the launched process itself; otherwise the launched processes
    and all their descendants (a forking RQ worker's work horse).
    """

    def __init__(self, label: str, commands: list[list[str]], env: dict[str, str],
                 count_children_only: bool = False) -> None:
        LOG_DIR.mkdir(exist_ok=True)
        self.label = label
        self.count_children_only = count_children_only
        self.log_paths = [LOG_DIR / f"{label}-{i}.log" for i in range(len(commands))]
        self.procs = []
        for command, log_path in zip(commands, self.log_paths):
            with open(log_path, "wb") as log:
                self.procs.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True))

    def check_alive(self) -> None:
        for proc, log_path in zip(self.procs, self.log_paths):
            if proc.poll() is not None:
                raise RuntimeError(f"{self.label}: {proc.args[0]} exited with {proc.returncode}; see {log_path}:\n"
                                   + log_path.read_text(errors="replace")[-2000:])

    def pids(self) -> list[int]:
        """The processes whose memory counts as the workers' (see the class docstring)."""
        pids = []
        for proc in self.procs:
            try:
                parent = psutil.Process(proc.pid)
                if self.count_children_only:
                    pids += [c.pid for c in parent.children() if not _is_tracker(c)]
                else:
                    pids += [proc.pid, *(c.pid for c in parent.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        return pids

    def uncounted_descendants(self) -> list[int]:
        """Grandchildren of a supervisor (e.g. multiprocessing resource trackers) that `pids()` leaves out."""
        if not self.count_children_only:
            return []
        pids = []
        for proc in self.procs:  # a tracker the supervisor started for all its workers
            try:
                pids += [c.pid for c in psutil.Process(proc.pid).children() if _is_tracker(c)]
            except psutil.NoSuchProcess:
                continue
        for pid in self.pids():
            try:
                pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return pids

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM each launched process (a warm shutdown), then SIGKILL whatever is left of its session."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it: its children too
            except ProcessLookupError:
                pass
            proc.wait()


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05,
               check: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if check:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def registered_workers(conn: redis.Redis) -> int:
    """Workers registered in RQ's worker set (Ferry's worker processes register there too)."""
    return int(conn.scard("rq:workers"))


def pss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class PeakPss:
    """Samples the PSS sum of `pids()` every `interval_s` in a thread; `.peak` is the largest sum seen."""

    def __init__(self, pids: Callable[[], Sequence[int]], interval_s: float = 0.1) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_bytes(self.pids()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def net_output_bytes(conn: redis.Redis) -> int:
    return int(conn.info("stats")["total_net_output_bytes"])


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, so it can be pasted into docs/benchmarks.md as it is."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, cells[1:])])


def machine() -> dict[str, Any]:
    import numpy
    import rq

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rq": rq.__version__,
        "redis_py": redis.__version__,
        "hiredis": _has_hiredis(),
        "numpy": numpy.__version__,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def _has_hiredis() -> bool:
    """redis-py uses hiredis to parse replies and pack commands when it is installed."""
    import importlib.util

    return importlib.util.find_spec("hiredis") is not None


def json_line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), default=str)


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.0f} MB"


def _is_tracker(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker: a helper process, not a worker."""
    try:
        return "resource_tracker" in " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False


def wait_rq(job: Any, deadline: float, workers: Workers) -> Any:
    """An RQ job's return value, waiting until `deadline` (monotonic); raises if it failed or a worker died."""
    from rq.results import Result

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("per-variant timeout")
        latest = job.latest_result(timeout=max(1, int(min(remaining, 5))))
        if latest is not None:
            if latest.type != Result.Type.SUCCESSFUL:
                raise RuntimeError(f"job {job.id} failed: {latest.exc_string}")
            return latest.return_value
        workers.check_alive()


def wait_ferry(client: Any, submitted: list[Any], deadline: float) -> list[Any]:
    """Every submitted Ferry job's value, in order, waiting until `deadline` (monotonic); raises if one failed."""
    results = []
    for job in submitted:
        result = client.result(job.id, wait_s=max(0.0, deadline - time.monotonic()))
        if not result.ready:
            raise TimeoutError("per-variant timeout")
        if result.status != "finished":
            raise RuntimeError(f"job {job.id} {result.status}: {result.error}")
        results.append(result.value)
    return results


RAY_MISSING = "import ray failed (pip install 'ray[default]')"


@contextmanager
def ray_session() -> Iterator[Any]:
    """Ray as every benchmark runs it beside Ferry: 2 CPUs, quiet, the repository importable by its workers;
    shut down on the way out. Yields None when Ray is not installed (the variant is then reported unavailable)."""
    try:
        import ray
    except ImportError:
        yield None
        return
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
