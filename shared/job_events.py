"""Watching one job live: each change of its status or progress, once, until it is final.

Changes are pushed, not polled: a running task's progress publishes its job id on `ferry:events`
(shared/job_context.py) and every final state publishes it on `ferry:done`. The async watcher rides on
the client's one subscription to both channels (`shared.done.DoneWaiter`, the pattern long-polls use):
a watcher holds a future, no connection and no thread. The sync watcher (`Client.watch`, the CLI) keeps
a subscription of its own for its one job. A job's start publishes nothing (the claim is the hot path),
so while a job is queued the watcher re-checks it every `QUEUED_RECHECK_S`; once started, only the
slow safety-net re-check (FERRY_RESULT_RECHECK_S) runs between messages.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import redis

from shared import keys
from shared.done import DoneWaiter
from shared.models import JobInfo, JobStatus
from shared.settings import Settings


class StatusReader(Protocol):
    """What the sync watcher needs of a client (`shared.client.Client` is one)."""

    conn: redis.Redis
    settings: Settings

    def status(self, job_id: str) -> JobInfo: ...


class AsyncStatusReader(Protocol):
    """What the async watcher needs of a client (`shared.async_client.AsyncClient` is one)."""

    events: DoneWaiter

    def status(self, job_id: str) -> Awaitable[JobInfo]: ...

QUEUED_RECHECK_S = 1.0
KEEPALIVE_S = 15.0


def _key(info: JobInfo) -> tuple[Any, ...]:
    return info.status, info.progress.model_dump_json() if info.progress else None


def is_final(info: JobInfo) -> bool:
    return isinstance(info.status, JobStatus) and info.status.is_final


async def watch_async(client: AsyncStatusReader, job_id: str, timeout_s: float,
                      keepalive_s: float | None = None) -> AsyncIterator[JobInfo | None]:
    """The job's state now, then each change until it is final or `timeout_s` passed; with `keepalive_s`, None
    after that long without a change (an SSE stream sends a comment then). JobNotFound if there is no such job."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    info = await client.status(job_id)
    last: tuple[Any, ...] | None = None
    last_sent = loop.time()
    while True:
        if _key(info) != last:
            last = _key(info)
            last_sent = loop.time()
            yield info
        elif keepalive_s is not None and loop.time() - last_sent >= keepalive_s:
            last_sent = loop.time()
            yield None
        remaining = deadline - loop.time()
        if is_final(info) or remaining <= 0:
            return
        slice_s = min(remaining, QUEUED_RECHECK_S if info.status == JobStatus.QUEUED else (keepalive_s or remaining))
        info = await client.events.wait(job_id, slice_s, lambda: client.status(job_id), _changed_from(last))


def _changed_from(last: tuple[Any, ...] | None) -> Callable[[JobInfo], bool]:
    return lambda info: _key(info) != last or is_final(info)


def watch(client: StatusReader, job_id: str, timeout_s: float) -> Iterator[JobInfo]:
    """The job's state now, then each change until it is final or `timeout_s` passed (sync; own subscription)."""
    deadline = time.monotonic() + timeout_s
    pubsub = client.conn.pubsub(ignore_subscribe_messages=True)
    wanted = job_id.encode()
    try:
        pubsub.subscribe(keys.DONE_CHANNEL, keys.EVENTS_CHANNEL)
        last: tuple[Any, ...] | None = None
        while True:
            info = client.status(job_id)  # after subscribing: a change from now on is a message
            if _key(info) != last:
                last = _key(info)
                yield info
            remaining = deadline - time.monotonic()
            if is_final(info) or remaining <= 0:
                return
            recheck = QUEUED_RECHECK_S if info.status == JobStatus.QUEUED else client.settings.result_recheck_s
            until = time.monotonic() + min(remaining, recheck)
            while (left := until - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=min(left, 1.0))
                if message is not None and message.get("data") == wanted:
                    break
    finally:
        pubsub.close()
