"""Riding out Redis outages: retry with back-off, one log line when an outage starts and one when it ends.

Worker processes and the supervisor never crash because Redis is away: whatever they must record (a
job's outcome, a claim) stays in memory and is sent again, unchanged, until Redis answers. That is safe
because every lifecycle script is idempotent (shared/lifecycle): a repeat of a command Redis already ran
changes nothing. redis-py itself does not re-send on a time-out (shared/redis_conn.py): Ferry does, here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from shared.redis_conn import redact

T = TypeVar("T")
BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class GaveUp(Exception):
    """Raised by `Outage.call` when `give_up` says to stop retrying (a stopping process, Redis still away)."""


class Outage:
    """Shared by the threads of one process, so an outage is logged once however many of them notice it."""

    def __init__(self, who: str, url: str, log: logging.Logger) -> None:
        self.who = who
        self.url = redact(url)
        self.log = log
        self.since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.log.warning("%s: Redis at %s unreachable while %s (%s: %s); keeping state in memory and retrying "
                                 "until it is back", self.who, self.url, doing, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                self.log.info("%s: Redis at %s is back after %.1fs; carrying on", self.who, self.url,
                              time.monotonic() - self.since)
                self.since = None

    @property
    def down_s(self) -> float:
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def call(self, fn: Callable[[], T], doing: str, sleep: Callable[[float], object] = time.sleep,
             give_up: Callable[[], bool] = lambda: False) -> T:
        """`fn()` until it does not raise a RedisError; GaveUp when `give_up()` turns true between attempts."""
        attempt = 0
        while True:
            try:
                value = fn()
            except redis.RedisError as exc:
                self.failed(exc, doing)
                if give_up():
                    raise GaveUp(f"{doing}: Redis still unreachable") from exc
                sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1
                continue
            self.ok()
            return value
