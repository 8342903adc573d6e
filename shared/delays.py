"""Delayed jobs: when a job is due, and how a delayed job is written so that RQ's tools and Ferry agree.

A delayed job (`delay_s`, `run_at`, or a retry waiting out its back-off) is written with RQ's own data
model: status `scheduled`, a member of RQ's ScheduledJobRegistry `rq:scheduled:<queue>` scored by its due
time in unix seconds (what RQ's `Queue.enqueue_at` writes), so `rq info` counts it and Ferry promotes RQ's
`enqueue_in`/`enqueue_at` jobs too. Ferry adds `ferry_due_unix` to the job hash (the exact due time, for
`ferry status`; RQ's own scores are whole seconds).

Promotion (due -> queued, pushed on its queue, idle workers woken) is one script (lifecycle/lua_delays.py)
gated on removing the registry member, so a job is never moved twice; and only the node holding the
promoter lease (`ferry:promoter`, SET NX PX, renewed) runs it (services/worker/promoter.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidRequest

DUE_FIELD = "ferry_due_unix"  # job hash: the due time in unix seconds (float)
MAX_DELAY_S = 366 * 86_400  # how far ahead a job may be scheduled (delay_s, run_at)


def due_unix(delay_s: float | None, run_at: datetime | None, now: float) -> float | None:
    """A request's due time in unix seconds (from its `delay_s` or `run_at`), or None when it should be queued
    now (no delay, or already due)."""
    if delay_s is not None:
        due = now + delay_s
    elif run_at is not None:
        due = run_at.timestamp()
        if due - now > MAX_DELAY_S:
            raise InvalidRequest(
                f"run_at {run_at.isoformat()} is more than {MAX_DELAY_S // 86_400} days ahead; "
                "schedule it nearer (or use a cron schedule)", run_at=run_at.isoformat())
    else:
        return None
    return due if due > now else None


def scheduled_fields(due: float) -> dict[str, Any]:
    """The job hash fields that make a new job wait as `scheduled` until `due` (RQ leaves enqueued_at empty)."""
    return {"status": "scheduled", "enqueued_at": "", DUE_FIELD: repr(due)}


def due_datetime(raw: bytes | str | None) -> datetime | None:
    """`ferry_due_unix` as an aware UTC datetime; None when absent or unreadable."""
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(float(raw), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
