"""Tasks of the locality benchmark (registered on its nodes through FERRY_TASK_MODULES); Ray runs the same bodies."""

from __future__ import annotations

import numpy as np

from shared.tasks import Array, task


def make_array(n: int, offset: float = 0.0) -> np.ndarray:
    """Distinct data for each offset, so no run is helped by an earlier identical result (dedup)."""
    array = np.arange(n, dtype=np.float64)
    array += offset
    return array


def reduce_array(data: np.ndarray) -> float:
    return float(data.sum())


@task("bench.make")
def make(n: int, offset: float = 0.0) -> np.ndarray:
    """Step A of the pipeline: a new float64 array of n elements (a large result)."""
    return make_array(n, offset)


@task("bench.reduce")
def reduce(data: Array) -> float:
    """Step B of the pipeline, and each job of the rounds: the sum of the array."""
    return reduce_array(data)
