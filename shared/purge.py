"""Purging a queue: every job of it that no worker holds yet, in one atomic script (`lua_purge.PURGE_BODY`).

What goes: its queued jobs, its scheduled jobs (delayed ones and retries waiting out a back-off, RQ's
`rq:scheduled:<queue>`) and its jobs set aside by a concurrency or rate limit (status `queued`, in a limit's
waiting list). Each gives back its idempotency key and its place among its limit's waiters, and a job that
others depend on fails them (naming it and "purged") before its hash is deleted. What stays: started jobs
(they finish), ended jobs and their results, deferred jobs (they wait for their dependencies, which may be
on other queues, and fail if one of those is purged). Cost: one Redis step over the queue's jobs plus every
job waiting for a limit (a few microseconds each): Redis answers nobody else meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.lifecycle import lua
from shared.timeutil import rq_now, unix_now


@dataclass(frozen=True)
class Purged:
    """How many jobs of each kind a purge dropped."""

    queued: int
    scheduled: int
    waiting: int  # set aside by a concurrency or rate limit

    @property
    def total(self) -> int:
        return self.queued + self.scheduled + self.waiting


def purge_queue(conn: redis.Redis, queue: str) -> Purged:
    """Drop every queued, scheduled and limit-waiting job of `queue` (see the module docstring)."""
    queued, scheduled, waiting = conn.register_script(lua.PURGE)(args=[queue, rq_now(), unix_now()])
    return Purged(int(queued), int(scheduled), int(waiting))


def counts_text(queued: int, scheduled: int, waiting: int) -> str:
    """`3 queued jobs`, or `3 queued, 1 scheduled and 2 limit-waiting jobs`: only the kinds there are."""
    parts = [f"{n} {what}" for n, what in ((queued, "queued"), (scheduled, "scheduled"), (waiting, "limit-waiting"))
             if n]
    total = queued + scheduled + waiting
    if not parts:
        parts = ["0 queued"]
    head = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{head} {'job' if total == 1 else 'jobs'}"
