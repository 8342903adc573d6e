"""Waiting for jobs to end without holding a thread or a pooled connection: one subscription, many futures.

The lifecycle scripts publish a job's id on `ferry:done` (keys.DONE_CHANNEL) whenever it reaches a
final state. A `DoneWaiter` keeps ONE subscription per event loop (per producer process) on a
connection of its own, and wakes the futures registered under that id. A waiter registers its
future and makes sure the subscription is up *before* it re-checks the job, so a job that ends
between the caller's first look and the subscription is never missed; a slow periodic re-check
(`recheck_s`) and a re-check of every waiter after each (re)subscription cover messages lost while
the subscription was down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import redis.asyncio

from shared import keys

log = logging.getLogger("ferry.done")

T = TypeVar("T")
RECONNECT_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
SUBSCRIBE_WAIT_S = 5.0  # a waiter waits this long for the subscription before relying on its re-checks


class DoneWaiter:
    """Futures keyed by job id, woken by one `ferry:done` subscription."""

    def __init__(self, connect: Callable[[], redis.asyncio.Redis], recheck_s: float,
                 channels: tuple[str, ...] = (keys.DONE_CHANNEL,)) -> None:
        self._connect = connect
        self.recheck_s = recheck_s
        self.channels = channels  # each publishes job ids; ferry:events too for live watchers (shared/job_events.py)
        self._futures: dict[bytes, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self.woken = 0  # futures woken by a job's message (not by a re-check): what the tests observe

    @property
    def waiting(self) -> int:
        return sum(len(f) for f in self._futures.values())

    async def wait(
        self, job_id: str, timeout_s: float, check: Callable[[], Awaitable[T]], done: Callable[[T], bool]
    ) -> T:
        """Re-run `check` until `done(result)` or `timeout_s` passed; wakes on the job's message, not by polling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        key = job_id.encode()
        future = self._register(key, loop)
        try:
            await self._ensure_subscribed(deadline - loop.time())
            while True:
                outcome = await check()  # after subscribing: an end from now on wakes `future`
                remaining = deadline - loop.time()
                if done(outcome) or remaining <= 0:
                    return outcome
                await asyncio.wait((future,), timeout=min(remaining, self.recheck_s))
                if future.done():
                    self._unregister(key, future)
                    future = self._register(key, loop)
        finally:
            self._unregister(key, future)

    def _register(self, key: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()
        self._futures.setdefault(key, set()).add(future)
        return future

    def _unregister(self, key: bytes, future: asyncio.Future[None]) -> None:
        futures = self._futures.get(key)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._futures[key]

    async def start(self, timeout_s: float = 1.0) -> None:
        """Subscribe now (a producer does it at startup, so its first long-poll pays nothing); never blocks long."""
        await self._ensure_subscribed(timeout_s)

    async def _ensure_subscribed(self, timeout_s: float) -> None:
        if self._task is None or self._task.done():
            self._subscribed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="ferry-done-listener")
        assert self._subscribed is not None
        if not self._subscribed.is_set():
            try:
                await asyncio.wait_for(self._subscribed.wait(), max(0.0, min(timeout_s, SUBSCRIBE_WAIT_S)))
            except TimeoutError:
                pass  # Redis is unreachable: the periodic re-check still runs (and reports the error)

    async def _listen(self) -> None:
        assert self._subscribed is not None
        failures = 0
        while True:
            conn = self._connect()
            pubsub = conn.pubsub()
            try:
                await pubsub.subscribe(*self.channels)
                confirmed = 0
                while confirmed < len(self.channels):  # the confirmations: from here on no message for us is lost
                    message = await pubsub.get_message(timeout=SUBSCRIBE_WAIT_S)
                    if message is not None and message["type"] == "subscribe":
                        confirmed += 1
                self._subscribed.set()
                if failures:
                    log.info("subscribed to %s again; every waiting request re-checks its job", keys.DONE_CHANNEL)
                failures = 0
                self._wake_all()  # anything that ended while we were not subscribed
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._wake(message["data"])
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG  # one line per outage, not one per retry
                log.log(
                    level,
                    "no %s subscription (%s); retrying, meanwhile waiters re-check every %gs",
                    keys.DONE_CHANNEL,
                    exc,
                    self.recheck_s,
                )
                await asyncio.sleep(delay)
            finally:
                try:
                    await pubsub.aclose()
                    await conn.aclose()
                except (redis.RedisError, OSError):
                    pass

    def _wake(self, job_id: bytes, by_message: bool = True) -> None:
        for future in self._futures.get(job_id, ()):
            if not future.done():
                future.set_result(None)
                self.woken += by_message

    def _wake_all(self) -> None:
        for key in list(self._futures):
            self._wake(key, by_message=False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                pass
            self._task = None
