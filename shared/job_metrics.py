"""The layout of the deployment-wide job counters in Redis, shared by the writers and the exporter.

Writers are the job lifecycle scripts (they count inside the same atomic step that changes a job's
state, so a repeated script never counts twice); the reader is the producer's `/metrics`. Everything
lives in one hash, `ferry:metrics`, so a scrape is one HGETALL however many jobs Redis holds.

Fields (the `|` separator never occurs in queue or task names, which are validated):
- `jobs|<queue>|<task>|<outcome>`        jobs that reached `outcome`: finished, failed, retried, canceled
- `requeued|<queue>|<task>|<reason>`     executions given back to the queue: worker_died, node_died, timeout
- `run|<task>|<le>` / `wait|<task>|<le>` histogram buckets, NOT cumulative (the exporter sums them);
  `le` is one of `BUCKETS_S` formatted by `bucket_label`, or `+Inf`
- `run_sum|<task>` / `wait_sum|<task>`   seconds (HINCRBYFLOAT); the count is the sum of the buckets
"""

from __future__ import annotations

import bisect

METRICS_KEY = "ferry:metrics"
SEP = "|"

OUTCOMES = ("finished", "failed", "retried", "canceled")
REQUEUE_REASONS = ("worker_died", "node_died", "timeout")

# Seconds; Prometheus' defaults widened for batch jobs (up to 10 minutes).
BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
INF = "+Inf"


def bucket_label(seconds: float) -> str:
    """The `le` label of the one bucket that `seconds` falls in (non-cumulative)."""
    index = bisect.bisect_left(BUCKETS_S, seconds)
    return INF if index == len(BUCKETS_S) else repr(BUCKETS_S[index])


def jobs_field(queue: str, task: str, outcome: str) -> str:
    return SEP.join(("jobs", queue, task, outcome))


def requeued_field(queue: str, task: str, reason: str) -> str:
    return SEP.join(("requeued", queue, task, reason))


def bucket_field(kind: str, task: str, seconds: float) -> str:
    """`kind` is "run" or "wait"."""
    return SEP.join((kind, task, bucket_label(seconds)))


def sum_field(kind: str, task: str) -> str:
    return SEP.join((f"{kind}_sum", task))
