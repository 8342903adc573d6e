"""Tasks (and one code-declared schedule) only the periodic-job tests load, through FERRY_TASK_MODULES."""

from __future__ import annotations

import os
import time

import redis

from shared.job_context import JobContext
from shared.schedules import schedule
from shared.tasks import task


@task("test.cron_mark")
def cron_mark(label: str = "") -> int:
    """Record one run in the test's Redis list `test:cron:<label>` (periodic-job tests count runs per tick)."""
    conn = redis.Redis.from_url(os.environ["FERRY_REDIS_URL"])
    try:
        return int(conn.rpush(f"test:cron:{label}", time.time()))
    finally:
        conn.close()


@schedule("code-every-second", cron="* * * * * *", args={"label": "code"})
@task("test.cron_code")
def cron_code(ctx: JobContext, label: str = "") -> int:
    """The same, fired by a schedule declared in code (every second); the run also names its job in
    `test:cron:<label>:jobs` (a job may run again when its node is SIGKILLed mid-job)."""
    conn = redis.Redis.from_url(os.environ["FERRY_REDIS_URL"])
    try:
        conn.rpush(f"test:cron:{label}:jobs", ctx.job_id)
    finally:
        conn.close()
    return cron_mark(label)
