"""`ferry worker` with every worker process under cProfile: the benchmarks use it when FERRY_BENCH_PROFILE is set.

    FERRY_BENCH_PROFILE=/tmp/prof python -m benchmarks.shared_input --sizes 100 --variants ferry
    python -m pstats /tmp/prof/worker-<pid>.prof      # or: python -m benchmarks.profiled_worker --report /tmp/prof

Each worker process writes <dir>/worker-<pid>.prof when it exits (the benchmarks stop the node with
SIGTERM, which lets the processes finish cleanly). Only benchmark code changes: Ferry's worker entry
point is wrapped here, at run time.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
from pathlib import Path
from typing import Any

ENV = "FERRY_BENCH_PROFILE"


def command() -> list[str] | None:
    """The command that starts a profiled node, or None when profiling is off."""
    return [sys.executable, "-m", "benchmarks.profiled_worker", "worker"] if os.environ.get(ENV) else None


def _wrap_worker_main(out_dir: Path) -> None:
    from services.worker import process

    original = process.main

    def profiled_main(*args: Any) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            original(*args)
        finally:  # original() ends with sys.exit()
            profile.disable()
            profile.dump_stats(out_dir / f"worker-{os.getpid()}.prof")

    process.main = profiled_main  # the supervisor looks it up when it starts each process


def report(out_dir: Path, top: int = 25) -> None:
    files = sorted(str(p) for p in out_dir.glob("worker-*.prof"))
    if not files:
        raise SystemExit(f"no worker-*.prof in {out_dir}")
    stats = pstats.Stats(*files)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    if sys.argv[1:2] == ["--report"]:
        report(Path(sys.argv[2]))
        return
    out_dir = Path(os.environ[ENV])
    out_dir.mkdir(parents=True, exist_ok=True)
    _wrap_worker_main(out_dir)
    from services.admin.cli import main as ferry_main

    sys.argv = ["ferry", *sys.argv[1:]]
    ferry_main()


if __name__ == "__main__":
    main()
