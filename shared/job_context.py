"""What a running task may ask for in its signature: a `JobContext`, to know its job and report progress.

    @task("resize")
    def resize(paths: list[str], ctx: JobContext) -> int:
        for i, path in enumerate(paths):
            ...
            ctx.progress((i + 1) / len(paths), message=f"{path} done")

The parameter is not part of the task's input (the schema, validation and the job's args never see it);
the worker passes it. `progress` is bounded (fraction 0..1, message `MAX_MESSAGE_CHARS`, data as JSON
`MAX_DATA_BYTES`) and rate-limited: at most one write per FERRY_PROGRESS_INTERVAL_S, the latest value
kept and written at the next report after the interval, by the worker's heartbeat thread, or when the task
returns, so a tight loop costs Redis nothing more.
A write is one script (`lua_jobsurface.PROGRESS`): the job hash's `ferry_progress` field, only while the job is
`started`, and the job id published on `ferry:events` for live readers (SSE, `Client.watch`).
Progress is best effort: a Redis error while reporting is logged once and never fails the job.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import redis
from redis.commands.core import Script

from shared import keys
from shared.errors import InvalidRequest
from shared.lifecycle.lua_jobsurface import PROGRESS
from shared.timeutil import utcnow

log = logging.getLogger("ferry.worker")

MAX_MESSAGE_CHARS = 200
MAX_DATA_BYTES = 4096
FIELD = "ferry_progress"


class JobContext:
    """The running job, as its task sees it: `job_id`, `progress()`."""

    def __init__(self, job_id: str, script: Script | None = None, interval_s: float = 0.25) -> None:
        self.job_id = job_id
        self._script = script  # PROGRESS, registered on the worker's connection (None: progress is dropped)
        self._interval_s = interval_s
        self._last_write = -math.inf
        self._pending: str | None = None
        self._warned = False

    def progress(self, fraction: float, message: str | None = None, data: Any = None) -> None:
        """Report how far the job is: `fraction` from 0 to 1, an optional short message and small JSON data."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise InvalidRequest(f"progress fraction must be a number from 0 to 1, not {fraction!r}")
        if message is not None and len(str(message)) > MAX_MESSAGE_CHARS:
            raise InvalidRequest(f"progress message is {len(str(message))} characters, above the bound of "
                                 f"{MAX_MESSAGE_CHARS}; shorten it (or put details in `data`)")
        entry: dict[str, Any] = {"fraction": float(fraction), "message": None if message is None else str(message),
                                 "data": data, "updated_at": utcnow().isoformat()}
        try:
            text = json.dumps(entry, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"progress data is not JSON ({exc}); pass numbers, strings, lists and dicts") from exc
        data_bytes = len(json.dumps(data, separators=(",", ":")))
        if data_bytes > MAX_DATA_BYTES:
            raise InvalidRequest(f"progress data is {data_bytes:,} bytes of JSON, above the bound of "
                                 f"{MAX_DATA_BYTES:,} bytes; report a summary (results belong in the return value)")
        self._pending = text
        if time.monotonic() - self._last_write >= self._interval_s:
            self.flush()

    def due(self) -> bool:
        return self._pending is not None and time.monotonic() - self._last_write >= self._interval_s

    def flush(self) -> None:
        """Write the latest progress not yet written (the worker calls it when the task returns)."""
        if self._pending is None or self._script is None:
            return
        text, self._pending = self._pending, None
        self._last_write = time.monotonic()
        try:
            self._script(keys=[keys.job(self.job_id)], args=[self.job_id, text])
        except redis.RedisError as exc:
            if not self._warned:
                log.warning("job %s: progress not recorded (%s); the job goes on", self.job_id, exc)
                self._warned = True


class ProgressWriter:
    """A worker process's progress script (registered once on its connection) and its JobContext factory."""

    def __init__(self, conn: redis.Redis, interval_s: float) -> None:
        self.script = conn.register_script(PROGRESS)
        self.interval_s = interval_s

        self.current: JobContext | None = None

    def context(self, job_id: str, param: str | None) -> JobContext | None:
        """A context for the job when its task asks for one (`param` names the parameter), else None."""
        self.current = JobContext(job_id, self.script, self.interval_s) if param else None
        return self.current

    def flush_current(self) -> None:
        """Write the running job's held-back progress (the worker's heartbeat thread calls it): a value reported
        within the interval of the previous one is not left unwritten while the task works on."""
        current = self.current
        if current is not None and current.due():
            current.flush()


def read(raw: bytes | None) -> dict[str, Any] | None:
    """The stored progress as a dict for `models.Progress` (None if there is none or it is unreadable)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
