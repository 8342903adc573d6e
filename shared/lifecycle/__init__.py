"""The job lifecycle: every state change a job goes through, each one atomic Lua script safe to run twice.

    submit ─ENQUEUE─▶ queued ─CLAIM─▶ started ─FINISH─▶ finished     (ENQUEUE claims for an idle worker itself:
                                                                       `dispatch`, the job sent on its channel)
                        ▲               │ ╰──SETTLE──▶ failed | canceled
                        ╰── retried ────┤   (task error, timeout, cancel)
                        ╰── requeued ───╯   REQUEUE_HELD (supervisor: worker died), REAP (node died),
                                            RELEASE, RETIRE (a stopping worker gives back what it
                                            never started: prefetched or dispatched jobs)
    failed ─REQUEUE_FAILED─▶ queued          queued ─CANCEL─▶ canceled

Used by the worker process, the node supervisor, the reaper, `ferry requeue` and the API; nothing else
changes a job's state. Idempotency (see lua.py) makes Redis's at-least-once delivery of a command (a
redis-py re-send, or Ferry's own retry after an outage) change state exactly once: a repeated claim
returns the jobs that execution id already claimed, a repeated finish or settle writes and counts nothing.
Counters for /metrics (shared/job_metrics.py) move inside the same scripts, and the job id is published
on keys.DONE_CHANNEL whenever a job reaches a final state.
"""

from __future__ import annotations

import bisect
import functools
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.connection import Connection

from shared import job_metrics, keys, wire
from shared.lifecycle import functions, lua
from shared.objects.ref import refs_in_result
from shared.settings import Settings
from shared.timeutil import rq_now, unix_now

__all__ = ["Claimed", "Claims", "Failure", "Lifecycle", "Outcome", "new_execution_id"]

# Requeue reasons counted in ferry:metrics (job_metrics.REQUEUE_REASONS).
WORKER_DIED, NODE_DIED, TIMEOUT = job_metrics.REQUEUE_REASONS
REAP_BATCH = 500  # expired registry entries settled per queue per reap call
DISPATCH_COMMAND = lua.DISPATCH_MESSAGE.encode()  # a control-channel message carrying a job claimed for its worker


def new_execution_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Claimed:
    """One claimed job, as the claim scripts return it (layout: lua.CLAIM_FIELDS)."""

    id: str
    queue: str
    data: bytes
    data_bytes: int  # the stored size; data is empty when it exceeds the bound
    timeout_s: float | None
    result_ttl_s: int | None
    failure_ttl_s: int | None
    enqueued_at: str
    task: str
    execution_id: str
    cancel_requested: bool = False  # a cancel came while another worker held it (then gave it back): not run

    @property
    def member(self) -> str:
        """Its entry in the started registry (RQ 3: `job_id:execution_id`)."""
        return f"{self.id}:{self.execution_id}"

    @property
    def held(self) -> str:
        return f"{self.id}@{self.queue}"

    def wait_s(self, started_unix: float) -> float:
        """Seconds from (last) enqueue to start; 0 when the enqueue time is unreadable."""
        try:
            return max(0.0, started_unix - datetime.fromisoformat(self.enqueued_at).timestamp())
        except ValueError:
            return 0.0

    @property
    def dispatched(self) -> bool:
        """Claimed for its worker by the enqueue (lua `dispatch`), not by the worker's own claim."""
        return self.execution_id.startswith(lua.DISPATCH_PREFIX)

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> Claimed:
        f = dict(zip(lua.CLAIM_FIELDS, reply, strict=True))
        text = lambda name: f[name].decode() if isinstance(f[name], bytes) else str(f[name])  # noqa: E731
        return cls(
            id=text("id"), queue=text("queue"), data=f["data"] or b"", data_bytes=int(f["data_bytes"] or 0),
            timeout_s=float(f["timeout"]) if f["timeout"] else None,
            result_ttl_s=int(float(f["result_ttl"])) if f["result_ttl"] else None,
            failure_ttl_s=int(float(f["failure_ttl"])) if f["failure_ttl"] else None,
            enqueued_at=text("enqueued_at"), task=text("task"), execution_id=text("exec"),
            cancel_requested=text("cancel_requested") == "1",
        )

    @classmethod
    def from_dispatch(cls, message: bytes) -> Claimed | None:
        """The job in a dispatch message (`job ` then each CLAIM_FIELDS value as `<length>:<bytes>`), or None
        when the message is not one (a truncated or foreign message is ignored: the claim record still has it)."""
        if not message.startswith(DISPATCH_COMMAND):
            return None
        fields: list[bytes] = []
        pos = len(DISPATCH_COMMAND)
        try:
            while pos < len(message):
                colon = message.index(b":", pos)
                end = colon + 1 + int(message[pos:colon])
                fields.append(message[colon + 1 : end])
                pos = end
            return cls.from_reply(fields) if pos == len(message) else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Outcome:
    """What a finish or settle did: `finished`, `retried`, `failed`, `canceled`; or `already` / `gone` /
    `deleted` when there was nothing left to change (a repeat, or someone settled it first)."""

    job_id: str
    outcome: str


@dataclass(frozen=True)
class Failure:
    """A failed execution to settle: requeue while retries remain (if `retryable`), else fail."""

    short: str  # one line, shown as the job's error
    text: str  # the traceback or full message, kept in the result stream
    retryable: bool
    reason: str = ""  # a requeue reason (job_metrics.REQUEUE_REASONS) or ""
    front: bool = False  # requeue at the front of the queue (the job was interrupted, not at fault)
    delay_s: float = 0.0  # retry back-off (shared/backoff.py): > 0 sends the retry to the scheduled registry


@dataclass(frozen=True, slots=True)
class Timing:
    """A run's timing, for the run/wait histograms (computed in Python, passed to the scripts)."""

    task: str
    run_s: float
    wait_s: float

    def args(self) -> list[Any]:
        run, wait = _histogram_fields(self.task)
        return [*run[bisect.bisect_left(job_metrics.BUCKETS_S, self.run_s)], self.run_s,
                *wait[bisect.bisect_left(job_metrics.BUCKETS_S, self.wait_s)], self.wait_s]


@functools.lru_cache(maxsize=1024)
def _histogram_fields(task: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Per kind, (bucket field, sum field) by bucket index: job_metrics' names, computed once per task."""
    edges = [*job_metrics.BUCKETS_S, float("inf")]  # the bucket of each edge is the edge's own (le is inclusive)
    run, wait = (
        [(job_metrics.bucket_field(kind, task, edge), job_metrics.sum_field(kind, task)) for edge in edges]
        for kind in ("run", "wait"))
    return run, wait


NO_TIMING = ["", "", 0, "", "", 0]


class Claims(list[Claimed]):
    """The jobs a claim took; when none, `offer_wait_s` says when other nodes' offers on its queues end
    (None: no offer is open), so an idle worker knows when to look again without asking."""

    offer_wait_s: float | None = None

    @classmethod
    def from_reply(cls, items: Sequence[Any], wait_ms: Any) -> Claims:
        claims = cls(Claimed.from_reply(item) for item in items)
        claims.offer_wait_s = int(wait_ms) / 1000 if int(wait_ms) >= 0 else None
        return claims


class Lifecycle:
    """The lifecycle scripts bound to one connection. The hot ones (enqueue, claim, finish, settle) are Redis
    functions (functions.py: the prelude is not run on every call); the others EVALSHA. Both are loaded again
    when the server forgot them."""

    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.library = functions.Library(conn)
        self._enqueue = functions.HotScript(self.library, "enqueue", lua.ENQUEUE)
        self._claim = functions.HotScript(self.library, "claim", lua.CLAIM_SCRIPT)
        self._finish = functions.HotScript(self.library, "finish", lua.FINISH)
        self._settle = functions.HotScript(self.library, "settle", lua.SETTLE)
        self._requeue_held = conn.register_script(lua.REQUEUE_HELD)
        self._release = conn.register_script(lua.RELEASE)
        self._retire = conn.register_script(lua.RETIRE)
        self._reap = conn.register_script(lua.REAP)
        self._cancel = conn.register_script(lua.CANCEL)
        self._requeue_failed = conn.register_script(lua.REQUEUE_FAILED)

    @property
    def max_data_bytes(self) -> int:
        return self.settings.max_job_data_bytes

    @property
    def record_ttl_s(self) -> int:
        return self.settings.abandoned_after_s + 60

    def deadline(self) -> float:
        return unix_now() + self.settings.abandoned_after_s

    # --- submit ---
    def enqueue_script(self) -> functions.HotScript:
        """ENQUEUE (KEYS job, queue, idempotency key; ARGV id, queue, ttl, fields...); jobs.py pipelines it."""
        return self._enqueue

    # --- worker ---
    def claim(self, worker: str, queues: Sequence[str], execution_id: str, count: int = 1) -> Claims:
        """Claim up to `count` jobs from `queues` in priority order; repeating the call returns the same jobs."""
        items, wait_ms = self._claim(args=self._claim_args(worker, queues, execution_id, count))
        return Claims.from_reply(items, wait_ms)

    def _claim_args(self, worker: str, queues: Sequence[str], execution_id: str, count: int) -> list[Any]:
        return [worker, rq_now(), self.deadline(), execution_id, count, self.record_ttl_s, self.max_data_bytes,
                *queues]

    def finish_args(self, job: Claimed, worker: str, payload: bytes, started: float, ended: float, timing: Timing,
                    stats_key: str = "", stats: dict[str, int] | None = None, next_job: str = "",
                    claim_from: Sequence[str] = (), claim_count: int = 0, next_execution_id: str = "") -> list[Any]:
        """The FINISH call's arguments (built once, so a retry sends exactly the same command)."""
        result_ttl = job.result_ttl_s or self.settings.result_ttl_s
        stats_text = ",".join(f"{k}={v}" for k, v in (stats or {}).items())
        return [job.id, job.queue, job.execution_id, rq_now(), unix_now(), result_ttl, wire.b64(payload), worker,
                started, ended, timing.task, *timing.args(), next_job, stats_key if stats_text else "", stats_text,
                claim_count if claim_from else 0, next_execution_id, self.deadline(), self.record_ttl_s,
                self.max_data_bytes, refs_in_result(payload), *claim_from]

    def finish(self, job: Claimed, worker: str, payload: bytes, started: float, ended: float, timing: Timing,
               stats_key: str = "", stats: dict[str, int] | None = None, next_job: str = "",
               claim_from: Sequence[str] = (), claim_count: int = 0,
               next_execution_id: str = "") -> tuple[Outcome, Claims]:
        """Record a finished run (and, with claim_count, claim the next jobs in the same round trip)."""
        args = self.finish_args(job, worker, payload, started, ended, timing, stats_key, stats, next_job, claim_from,
                                claim_count, next_execution_id)
        return self.finish_reply(job.id, next_execution_id, self._finish(args=args))

    def finish_then_claim(self, job: Claimed, worker: str, payload: bytes, started: float, ended: float,
                          timing: Timing, stats_key: str, stats: dict[str, int] | None, claim_from: Sequence[str],
                          claim_count: int, next_execution_id: str) -> tuple[Outcome, Claims]:
        """FINISH, then CLAIM as a second command of the same write: still one round trip, but Redis serves the
        job's waiters (blocked on its result stream) between the two, not after the claim (~40 µs sooner)."""
        finish = self.finish_args(job, worker, payload, started, ended, timing, stats_key, stats)
        claim = self._claim_args(worker, claim_from, next_execution_id, claim_count)
        finished, (items, wait_ms) = functions.call_together(self.conn, [(self._finish, (), finish),
                                                                         (self._claim, (), claim)])
        return self.finish_reply(job.id, next_execution_id, finished)[0], Claims.from_reply(items, wait_ms)

    def finish_reply(self, job_id: str, next_execution_id: str, reply: Any) -> tuple[Outcome, Claims]:
        outcome, claimed, wait_ms = reply
        return Outcome(job_id, _text(outcome)), Claims.from_reply(claimed, wait_ms)

    # --- pipelined finish: sent before the next prefetched job runs, its reply read after ---
    def load(self) -> None:
        """Load the scripts a worker sends itself, without redis-py's reload on NOSCRIPT (`send_finish`)."""
        self.library.functions = None  # ask the server again: it may have lost the library
        if not self.library.ready():
            self._finish.script.sha = self.conn.script_load(self._finish.script.script)

    def send_finish(self, connection: Connection, args: list[Any]) -> None:
        """Write FINISH to `connection` without waiting: once written, a SIGKILL of this process cannot lose it."""
        connection.send_packed_command(functions.pack(connection, [self._finish.command(args)]))

    def finish_again(self, job_id: str, next_execution_id: str, args: list[Any]) -> tuple[Outcome, Claims]:
        """Send a FINISH built by `finish_args` again, synchronously (after a failed `send_finish`/`read_finish`)."""
        return self.finish_reply(job_id, next_execution_id, self._finish(args=args))

    def read_finish(self, connection: Connection, job_id: str,
                    next_execution_id: str = "") -> tuple[Outcome, Claims]:
        """The reply of a `send_finish`; raises what redis-py raises (the caller re-sends with `finish_again`),
        and NoScriptError when the server lost the script or function (the caller loads it first)."""
        try:
            reply = connection.read_response()
        except redis.ResponseError as exc:
            if functions.is_missing_function(exc):
                raise redis.exceptions.NoScriptError(str(exc)) from exc
            raise
        return self.finish_reply(job_id, next_execution_id, reply)

    def settle(self, job: Claimed, worker: str, failure: Failure, timing: Timing | None = None) -> Outcome:
        """Settle a failed execution (requeue or fail); a repeat, or a job someone else settled, is `gone`."""
        args = self._settle_args(job.id, job.queue, job.execution_id, worker, job.task, failure, job.failure_ttl_s,
                                 timing)
        return Outcome(job.id, _text(self._settle(args=args)))

    def release(self, worker: str, execution_id: str, jobs: Sequence[Claimed]) -> list[Outcome]:
        """Give back claimed jobs that never started (front of their queues, in order, no retry used)."""
        if not jobs:
            return []
        reply = self._release(args=[worker, execution_id, *(j.held for j in jobs)])
        return [Outcome(_text(i), _text(o)) for i, o in reply]

    def retire(self, worker: str) -> list[Outcome]:
        """A stopping worker: nothing is dispatched to it any more, and jobs dispatched to it that it never
        received go back to the front of their queues (no retry used)."""
        return [Outcome(_text(i), _text(o)) for i, o in self._retire(args=[worker])]

    # --- supervisor and reaper ---
    def requeue_held(self, worker: str, failure: Failure, execution_id: str = "") -> list[Outcome]:
        """A dead worker's jobs back to the front of their queues (the running one uses a retry)."""
        reply = self._requeue_held(args=[worker, execution_id, *self._settle_args("", "", "", "", "", failure)])
        return [Outcome(_text(i), _text(o)) for i, o in reply]

    def reap(self, failure: Failure) -> list[Outcome]:
        """Settle every started job whose heartbeat deadline passed (and drop expired registry entries)."""
        reply = self._reap(args=[REAP_BATCH, *self._settle_args("", "", "", "", "", failure)])
        return [Outcome(_text(i), _text(o)) for i, o in reply]

    # --- operators and producers ---
    def cancel(self, job_id: str) -> tuple[str, str]:
        """(`canceled` | `canceling` | `missing` | `already`, the status when already final)."""
        ttl = self.settings.failure_ttl_s
        outcome, *state = (_text(part) for part in self._cancel(keys=[keys.job(job_id)],
                                                                args=[job_id, rq_now(), ttl, unix_now()]))
        return outcome, (state[0] if state else "")

    def requeue_failed(self, job_id: str, queue: str) -> bool:
        """A failed job back on its queue for one more attempt; False if it is not (or no longer) failed."""
        return bool(self._requeue_failed(args=[job_id, queue, rq_now()]))

    def _settle_args(self, job_id: str, queue: str, execution_id: str, worker: str, task: str, failure: Failure,
                     failure_ttl_s: int | None = None, timing: Timing | None = None) -> list[Any]:
        return [job_id, queue, execution_id, rq_now(), unix_now(), failure.short[:1000], wire.exc_string(failure.text),
                zlib.compress(failure.text.encode()), failure_ttl_s or self.settings.failure_ttl_s,
                "1" if failure.retryable else "0", worker, task, failure.reason, "1" if failure.front else "0",
                *(timing.args() if timing else NO_TIMING),
                repr(unix_now() + failure.delay_s) if failure.delay_s > 0 else ""]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
