"""Retry back-off: how long a failed job waits before its next attempt.

A policy comes from, in order: the job (`JobRequest.retry_delay_s`, `retry_backoff`, `retry_max_delay_s`,
`retry_jitter`, stored in the job hash as `ferry_retry`), field by field over the task's default
(`@task(..., retry_delay_s=...)`); with neither, RQ's own `Retry(max, interval)` (`retry_intervals` in the
job hash, read as RQ 3's `Job.get_retry_interval` does); else no wait (the retry is queued at once).

The worker computes the delay once, before it sends the settle script (a re-sent script carries the same
due time), and a delay > 0 sends the job to RQ's scheduled registry (shared/delays.py) instead of its queue.
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys

POLICY_FIELD = "ferry_retry"  # job hash: the job's own back-off fields (JSON), over the task's default
ATTEMPT_ERRORS_FIELD = "ferry_attempt_errors"  # job hash: the last attempts' errors (JSON), written by settle
MAX_RETRY_DELAY_S = 7 * 86_400
Backoff = Literal["fixed", "exponential"]


class RetryBackoff(BaseModel):
    """A back-off policy; unset fields fall back to the task's default, then to these defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry_delay_s: float | None = Field(None, ge=0, le=MAX_RETRY_DELAY_S,
                                        description="wait before the first retry (exponential: doubled each retry)")
    retry_backoff: Backoff | None = Field(None, description="`fixed` (default) or `exponential`")
    retry_max_delay_s: float | None = Field(None, ge=0, le=MAX_RETRY_DELAY_S, description="cap on any one wait")
    retry_jitter: float | None = Field(
        None, ge=0, le=1, description="fraction taken off at random: each wait is drawn from [d*(1-jitter), d]")

    def over(self, default: RetryBackoff | None) -> RetryBackoff:
        """This policy's set fields over `default`'s."""
        if default is None:
            return self
        return default.model_copy(update=self.model_dump(exclude_none=True))

    @property
    def is_set(self) -> bool:
        return self.retry_delay_s is not None

    def delay_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry `retry_number` (1 = the first retry)."""
        base = self.retry_delay_s or 0.0
        if self.retry_backoff == "exponential":
            base *= 2.0 ** min(max(retry_number - 1, 0), 60)
        cap = self.retry_max_delay_s if self.retry_max_delay_s is not None else MAX_RETRY_DELAY_S
        delay = min(base, cap)
        if self.retry_jitter:
            delay *= 1.0 - self.retry_jitter * (rng or random).random()
        return delay


def job_fields(request: Any) -> dict[str, str]:
    """The job hash field for a request's own back-off fields (none when it sets none)."""
    own = {name: getattr(request, name, None) for name in RetryBackoff.model_fields}
    own = {name: value for name, value in own.items() if value is not None}
    return {POLICY_FIELD: json.dumps(own)} if own else {}


def rq_interval(intervals: list[Any], retries_left: int) -> float:
    """RQ 3's `Job.get_retry_interval`: intervals[max(len - retries_left, 0)] (the last one repeats)."""
    if not intervals or retries_left <= 0:
        return 0.0
    value = intervals[min(max(len(intervals) - retries_left, 0), len(intervals) - 1)]
    return min(max(float(value), 0.0), MAX_RETRY_DELAY_S) if isinstance(value, (int, float)) else 0.0


def retry_delay_s(conn: redis.Redis, job_id: str, default: RetryBackoff | None) -> float:
    """Seconds the job should wait before its next attempt (0: queue it now; also when no retry is left)."""
    left, used, intervals, own = conn.hmget(keys.job(job_id), "retries_left", "number_of_retries", "retry_intervals",
                                            POLICY_FIELD)
    retries_left = _int(left)
    if retries_left <= 0:
        return 0.0
    policy = default
    if own:
        try:
            policy = RetryBackoff.model_validate_json(own).over(default)
        except ValidationError:
            policy = default
    if policy is not None and policy.is_set:
        return policy.delay_s(_int(used) + 1)
    if intervals:
        try:
            parsed = json.loads(intervals)
        except ValueError:
            return 0.0
        return rq_interval(parsed if isinstance(parsed, list) else [parsed], retries_left)
    return 0.0


def _int(raw: bytes | str | None) -> int:
    try:
        return int(float(raw)) if raw else 0
    except ValueError:
        return 0


