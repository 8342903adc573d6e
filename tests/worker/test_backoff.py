"""Retry back-off on real nodes: the waits between attempts, measured from the attempts' own timestamps."""

from __future__ import annotations

import random

import pytest
import redis
from rich.console import Console
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from services.admin.jobs import job_table
from shared import keys
from shared.backoff import RetryBackoff, rq_interval
from shared.client import Client
from shared.errors import ConfigError
from shared.models import JobInfo, JobStatus
from shared.tasks import TaskRegistry
from tests.support import wait_for

LATE_S = 0.5  # how much later than its due time an attempt may start here (the promise is < 1 s)


def _failed(client: Client, job_id: str) -> JobInfo | None:
    info = client.status(job_id)
    return info if info.status == JobStatus.FAILED else None


def _gaps(info: JobInfo) -> list[float]:
    """Seconds from each failed attempt's end to the next attempt's start."""
    errors = info.attempt_errors
    gaps = []
    for before, after in zip(errors, errors[1:], strict=False):
        assert before.failed_at is not None and after.started_at is not None
        gaps.append((after.started_at - before.failed_at).total_seconds())
    return gaps


def test_fixed_exponential_capped_jittered_and_task_default_waits(start_node, client: Client,
                                                                   conn: redis.Redis) -> None:
    start_node(processes=2)
    fixed = client.submit("test.fail", {"message": "fixed"}, retries=2, retry_delay_s=0.5)
    exponential = client.submit("test.fail", {"message": "exp"}, retries=4, retry_delay_s=0.2,
                                retry_backoff="exponential", retry_max_delay_s=0.5)
    jittered = client.submit("test.fail", {"message": "jitter"}, retries=3, retry_delay_s=0.6, retry_jitter=0.5)
    by_task = client.submit("test.fail_with_backoff", {}, retries=1)
    overridden = client.submit("test.fail_with_backoff", {}, retries=1, retry_delay_s=0)
    waiting = wait_for(lambda: client.status(fixed).status == JobStatus.SCHEDULED and client.status(fixed),
                       what="the first retry to wait as scheduled")
    assert waiting.due_at is not None and conn.zscore(keys.scheduled("default"), fixed.id) is not None
    infos = {name: wait_for(lambda j=job: _failed(client, j.id), timeout=20, what=f"{name} to fail for good")
             for name, job in [("fixed", fixed), ("exponential", exponential), ("jittered", jittered),
                               ("by_task", by_task), ("overridden", overridden)]}
    assert [e.attempt for e in infos["fixed"].attempt_errors] == [1, 2, 3]
    assert all(e.error == "RuntimeError: fixed" for e in infos["fixed"].attempt_errors)
    for name, expected in [("fixed", [0.5, 0.5]), ("exponential", [0.2, 0.4, 0.5, 0.5]), ("by_task", [0.4])]:
        gaps = _gaps(infos[name])
        assert len(gaps) == len(expected), (name, gaps)
        for gap, wait in zip(gaps, expected, strict=True):
            assert wait <= gap < wait + LATE_S, (name, gaps, expected)
    for gap in _gaps(infos["jittered"]):
        assert 0.3 <= gap < 0.6 + LATE_S, _gaps(infos["jittered"])
    assert _gaps(infos["overridden"])[0] < 0.4  # the job's retry_delay_s=0 beats the task's 0.4 s


def test_rq_retry_intervals_are_honoured(start_node, client: Client, conn: redis.Redis) -> None:
    start_node(processes=1)
    job = Queue("default", connection=conn, serializer=JSONSerializer).enqueue(
        "test.fail", message="rq", retry=Retry(max=2, interval=[1, 2]))
    info = wait_for(lambda: _failed(client, job.id), timeout=20, what="the RQ job to fail for good")
    gaps = _gaps(info)
    assert len(gaps) == 2 and 1 <= gaps[0] < 1 + LATE_S + 0.5 and 2 <= gaps[1] < 2 + LATE_S + 0.5, gaps


def test_attempt_errors_are_bounded_and_cut(start_node, client: Client) -> None:
    start_node(processes=1)
    job = client.submit("test.fail", {"message": "x" * 2000}, retries=12)
    info = wait_for(lambda: _failed(client, job.id), timeout=20, what="the job to fail for good")
    assert [e.attempt for e in info.attempt_errors] == list(range(4, 14))  # the last 10 of 13
    assert all(len(e.error) == 500 for e in info.attempt_errors)
    console = Console(width=2000, record=True)
    console.print(job_table(info))  # what `ferry status` prints
    shown = console.export_text()
    assert "attempt 13 error" in shown and "attempt 3 error" not in shown


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    policy = RetryBackoff(retry_delay_s=10, retry_jitter=0.3)
    rng = random.Random(7)
    waits = [policy.delay_s(1, rng) for _ in range(200)]
    assert all(7.0 <= w <= 10.0 for w in waits) and max(waits) - min(waits) > 2.0
    assert RetryBackoff(retry_delay_s=1, retry_backoff="exponential", retry_max_delay_s=5).delay_s(4) == 5
    assert rq_interval([1, 2], 2) == 1 and rq_interval([1, 2], 1) == 2 and rq_interval([3], 5) == 3


def test_a_bad_task_default_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retry_backoff"):
        TaskRegistry().task("bad", retry_backoff="linear")(lambda: None)
