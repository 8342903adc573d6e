"""Example tasks, registered by default. `echo` and `sleep` serve tests and benchmarks."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from shared.tasks.registry import Array, task


@task("echo")
def echo(value: Any = None) -> Any:
    """Return the value unchanged."""
    return value


@task("sleep")
def sleep(seconds: Annotated[float, Field(ge=0, le=86_400)]) -> float:
    """Sleep for the given seconds and return them."""
    time.sleep(seconds)
    return seconds


@task("stats.describe")
def describe(values: Annotated[list[float], Field(min_length=1)]) -> dict[str, float]:
    """Count, mean, standard deviation, min, median and max of a list of numbers."""
    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


@task("text.word_count")
def word_count(text: str, top: Annotated[int, Field(ge=1, le=1000)] = 10) -> dict[str, Any]:
    """Count words (case-insensitive) and list the most common ones."""
    words = re.findall(r"[\w']+", text.lower())
    return {"words": len(words), "unique": len(set(words)), "top": Counter(words).most_common(top)}


@task("array.stats")
def array_stats(data: Array, start: int | None = None, stop: int | None = None) -> dict[str, float | int | None]:
    """Count, sum, min, max and mean of data[start:stop] (flattened), read zero-copy from the node's memory."""
    part = data.reshape(-1)[start:stop]
    if part.size == 0:
        return {"count": 0, "sum": 0.0, "min": None, "max": None, "mean": None}
    total = float(part.sum())
    return {"count": int(part.size), "sum": total, "min": float(part.min()), "max": float(part.max()),
            "mean": total / part.size}


@task("array.scale")
def array_scale(data: Array, factor: float = 1.0) -> np.ndarray:
    """Return data × factor as a new array (large results come back as object references)."""
    return np.multiply(data, factor)


@task("array.combine_stats")
def combine_stats(input: list[dict[str, Any]]) -> dict[str, float | int | None]:  # noqa: A002 - a workflow's input
    """Combine `array.stats` results (e.g. of a group over slices) into the stats of the whole: the reduce step."""
    parts = [p for p in input if p and p.get("count")]
    count = sum(int(p["count"]) for p in parts)
    if not count:
        return {"count": 0, "sum": 0.0, "min": None, "max": None, "mean": None}
    total = sum(float(p["sum"]) for p in parts)
    return {"count": count, "sum": total, "min": min(float(p["min"]) for p in parts),
            "max": max(float(p["max"]) for p in parts), "mean": total / count}
