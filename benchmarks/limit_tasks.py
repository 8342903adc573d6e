"""The no-op task with a concurrency limit on its decorator, for `python -m benchmarks.limits`."""

from __future__ import annotations

from shared.tasks import task


@task("bench.limited_noop", concurrency=2)
def limited_noop(value: object = None) -> object:
    """Echo, under `concurrency=2` (with 2 worker processes: checked on every claim, never limiting)."""
    return value
