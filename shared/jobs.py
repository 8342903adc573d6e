"""Job operations against Redis: submit (with validation and idempotency), status, result, cancel."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from shared import backoff, delays, idempotency, job_view, keys, wire
from shared.catalog import Catalog, CatalogCache
from shared.catalog import read as read_catalog
from shared.errors import Conflict, FerryError, JobNotFound
from shared.job_status import RESULT_TYPE_STATUS
from shared.lifecycle import Lifecycle
from shared.lifecycle.functions import call_together, is_missing_function
from shared.lifecycle.lua import RESULT_ENTRIES_KEPT
from shared.locality import placement_fields
from shared.models import AttemptError, JobInfo, JobRequest, JobResult, JobStatus, Submitted
from shared.objects.lifetime import reference_job_objects
from shared.replies import byte_fields, optional_bytes, text
from shared.settings import Settings
from shared.submission import (
    ScriptCall,
    checked_args,
    enqueue_call,
    indexed,
    needs_fresher_catalog,
    new_submission,
    object_references,
)
from shared.tasks import TaskRegistry
from shared.timeutil import rq_parse
from shared.workflows import Workflows, no_dependencies

WAIT_SLICE_S = 2.0  # blocking reads are sliced so no single command outlives the socket time-out
SUBMIT_BATCH = 500  # jobs per pipeline in submit_many


class JobService:
    """What producers need: put jobs in, watch them, get their results, cancel them."""

    def __init__(self, conn: redis.Redis, settings: Settings, tasks: TaskRegistry) -> None:
        self.conn = conn
        self.settings = settings
        self.tasks = tasks
        self.lifecycle = Lifecycle(conn, settings)
        self.catalog_cache = CatalogCache()
        self.workflows = Workflows(conn, settings, tasks, self._catalog)

    # --- submit (validation and the script's arguments: shared.submission, as in the async client) ---
    def _enqueue_args(self, request: JobRequest) -> ScriptCall:
        catalog = self._catalog(request)
        args = checked_args(request, catalog, self.tasks, self.settings)
        call = enqueue_call(request, args, self.settings, catalog)
        job_id = call[1][0]
        # Every referenced object exists and matches its stored metadata, and is kept while this job needs it.
        named = object_references(request.task, args, catalog, self.tasks)
        reference_job_objects(self.conn, job_id, named)
        call[1].extend(placement_fields(named, self.settings))  # offered first to the node holding them
        return call

    def _catalog(self, request: JobRequest) -> Catalog:
        """The task catalog, read at most once a second (and once more when it would refuse the job)."""
        cached = self.catalog_cache.fresh()
        refused = cached is not None and needs_fresher_catalog(request, cached, self.settings)
        if cached is None or (refused and not self.catalog_cache.fresh(for_miss=True)):
            cached = self.catalog_cache.store(read_catalog(self.conn))
        return cached

    def submit(self, request: JobRequest) -> Submitted:
        """Validate and enqueue one job; a repeated idempotency key returns the first job instead."""
        if request.depends_on:  # deferred until its dependencies end (shared/workflows.py)
            job_id, status, created = self.workflows.submit_job(request)
            if created != idempotency.CREATED:  # the key's earlier job: a duplicate, or a conflict (raised)
                return self._submitted(request, created, job_id)
            return new_submission(request, job_id, self.settings, status)
        script_keys, script_args = self._enqueue_args(request)
        ((created, job_id),) = call_together(self.conn, [(self.lifecycle.enqueue_script(), script_keys, script_args)])
        return self._submitted(request, created, job_id)

    def submit_many(self, requests: Sequence[JobRequest]) -> list[Submitted]:
        """Validate every job first (all or nothing), then enqueue them in pipelined batches."""
        prepared = []
        for index, request in enumerate(requests):
            try:
                no_dependencies(request)
                prepared.append(self._enqueue_args(request))
            except FerryError as exc:
                raise indexed(exc, index)  # noqa: B904 - the same error, re-raised with its index
        replies: list[Any] = []
        for start in range(0, len(prepared), SUBMIT_BATCH):
            replies += self._enqueue_batch(prepared[start : start + SUBMIT_BATCH])
        return [self._submitted(r, created, job_id) for r, (created, job_id) in zip(requests, replies, strict=True)]

    def _enqueue_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """One pipeline of ENQUEUE calls; sent again once if the server had lost the function library (a job
        enqueued by the first send is not enqueued twice: ENQUEUE skips an id that exists)."""
        for attempt in range(2):
            pipe = self.conn.pipeline(transaction=False)
            for script_keys, script_args in calls:
                self.lifecycle.enqueue_script()(keys=script_keys, args=script_args, client=pipe)
            try:
                return pipe.execute()
            except redis.ResponseError as exc:
                if attempt or not is_missing_function(exc):
                    raise
                self.lifecycle.library.load()
        raise AssertionError("unreachable")

    def _submitted(self, request: JobRequest, created: int, job_id: bytes | str) -> Submitted:
        if created == idempotency.CREATED:
            return new_submission(request, job_id, self.settings)
        job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
        info = self.status(job_id)
        if created == idempotency.CONFLICT:
            raise idempotency.conflict(request.idempotency_key or "", job_id, info.task, info.queue)
        return Submitted(id=job_id, status=info.status, queue=info.queue or "", duplicate=True)

    # --- inspect ---
    def status(self, job_id: str) -> JobInfo:
        pipe = self.conn.pipeline(transaction=False)
        queue_job_view(pipe, job_id)
        raw = read_job_view(pipe.execute())
        if not raw:
            raise JobNotFound(f"no job {job_id!r} (unknown id, or it expired after its result TTL)")
        return job_info(job_id, raw, self.settings.max_job_data_bytes)

    def result(self, job_id: str, wait_s: float = 0) -> JobResult:
        """The job's result; with wait_s, block up to that long for it to be ready.

        One round trip when the job ends within the wait: the status read and the blocking read of the
        result stream go out together (`_status_then_wait`).
        """
        deadline = time.monotonic() + wait_s
        stream = keys.results(job_id)
        while True:
            remaining = deadline - time.monotonic()
            block_ms = max(1, int(min(max(remaining, 0), WAIT_SLICE_S) * 1000))
            (raw_status, raw_error), entry = self._status_then_wait(job_id, stream, block_ms if remaining > 0 else 0)
            if entry is not None:
                return self._result_from_entry(job_id, entry, raw_error)
            status, error = self._status_and_error(job_id, raw_status, raw_error)  # raises JobNotFound
            if status.is_final:
                latest = self.conn.xrevrange(stream, "+", "-", count=1)  # it may have ended since our first read
                if latest:
                    return self._result_from_entry(job_id, byte_fields(latest[0][1]))
                return JobResult(id=job_id, status=status, ready=False, error=error or "its result expired")
            if deadline - time.monotonic() <= 0:
                return JobResult(id=job_id, status=status, ready=False, error=error)

    def _status_then_wait(self, job_id: str, stream: str, block_ms: int) -> tuple[list[Any], dict[bytes, bytes] | None]:
        """The job's (status, error) and its latest result entry, waiting up to block_ms for one (0: no wait).

        Both commands are sent at once. A final state writes the stream's entry (a requeue deletes the
        stream), so what XREAD brings is the result. When there is nothing to wait for (no such job, or it
        ended and its result expired), the blocked read is abandoned with its connection.
        """
        read = ["XREAD", "COUNT", RESULT_ENTRIES_KEPT, *(["BLOCK", block_ms] if block_ms else []),
                "STREAMS", stream, "0-0"]
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(
                [("HMGET", keys.job(job_id), "status", "ferry_error"), ("EXISTS", stream), read]))
            status, has_entry = connection.read_response(), connection.read_response()
            if block_ms and not has_entry and (status[0] is None or JobStatus.parse(status[0]).is_final):
                connection.disconnect()  # no such job, or its result expired: nothing will arrive
                return status, None
            arrived = connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        if not arrived:
            return status, None
        entries = next(iter(arrived.values())) if isinstance(arrived, dict) else arrived[0][1]  # RESP3 | RESP2
        fields = entries[-1][1]
        if isinstance(fields, dict):
            return status, byte_fields(fields)
        return status, dict(zip(fields[::2], fields[1::2], strict=True))

    def _status_and_error(self, job_id: str, raw_status: Any, raw_error: Any) -> tuple[JobStatus, str | None]:
        """The job's status and error from their HMGET reply; JobNotFound when it has no hash."""
        if raw_status is None and not self.conn.exists(keys.job(job_id)):
            raise JobNotFound(f"no job {job_id!r} (unknown id, or it expired after its result TTL)")
        return JobStatus.parse(raw_status), (text(raw_error, errors="replace") or None) if raw_error else None

    def _result_from_entry(self, job_id: str, entry: dict[bytes, bytes], error: bytes | None = None) -> JobResult:
        finished = entry.get(b"type") == b"1"
        if not finished and error is None:
            error = optional_bytes(self.conn.hget(keys.job(job_id), "ferry_error"))
        return result_from_entry(job_id, entry, error, self.settings.max_job_data_bytes)

    def traceback(self, job_id: str) -> str | None:
        latest = self.conn.xrevrange(keys.results(job_id), "+", "-", count=1)
        entry = byte_fields(latest[0][1]) if latest else {}
        if entry.get(b"exc_string"):
            try:
                return wire.read_exc_string(entry[b"exc_string"], self.settings.max_job_data_bytes)
            except FerryError as exc:
                return exc.message
        return None

    # --- control ---
    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job, or interrupt a running one; Conflict if it already ended."""
        outcome, state = self.lifecycle.cancel(job_id)
        if outcome == "missing":
            raise JobNotFound(f"no job {job_id!r} (unknown id, or it expired after its result TTL)")
        if outcome == "already":
            raise Conflict(f"job {job_id} is already {state}; only scheduled, queued or started jobs can be canceled")
        return self.status(job_id)


VIEW_FIELDS = ("status", "origin", "created_at", "enqueued_at", "started_at", "ended_at", "worker_name", "ferry_error",
               "retries_left", "number_of_retries", "timeout", "ferry_task", delays.DUE_FIELD,
               backoff.ATTEMPT_ERRORS_FIELD, "ferry_waiting", *job_view.VIEW_FIELDS)


def queue_job_view(pipe: redis.client.Pipeline, job_id: str) -> None:
    """Queue the reads a JobInfo needs (not `data` itself, which can be big: its size, and a bounded prefix)."""
    pipe.hmget(keys.job(job_id), VIEW_FIELDS)
    pipe.hstrlen(keys.job(job_id), "data")
    pipe.eval(DATA_IF_SMALL, 1, keys.job(job_id), VIEW_DATA_BYTES)


# A plain RQ job has no `ferry_task`: its name is read from `data`, fetched only when small.
VIEW_DATA_BYTES = 64 * 1024
DATA_IF_SMALL = ("if redis.call('HSTRLEN', KEYS[1], 'data') <= tonumber(ARGV[1]) then "
                 "return redis.call('HGET', KEYS[1], 'data') end return false")


def read_job_view(replies: list[Any]) -> dict[bytes, bytes]:
    """The job hash fields `queue_job_view` read (3 replies), as HGETALL would give them; {} for no job."""
    values, _size, data = replies[:3]
    raw = {name.encode(): value for name, value in zip(VIEW_FIELDS, values, strict=True) if value is not None}
    if data:
        raw[b"data"] = data
    return raw


def _last_line(encoded: bytes, max_bytes: int) -> str:
    try:
        lines = wire.read_exc_string(encoded, max_bytes).strip().splitlines()
    except FerryError as exc:
        return exc.message
    return lines[-1] if lines else "failed"


def result_from_entry(job_id: str, entry: dict[bytes, bytes], error: bytes | None, bound: int) -> JobResult:
    """A JobResult from the job's latest result-stream entry and its `ferry_error` field (both clients use it);
    a result over `bound` bytes (FERRY_MAX_JOB_DATA_BYTES) is reported, never decoded."""
    status = RESULT_TYPE_STATUS.get(entry.get(b"type", b""), JobStatus.FAILED)
    if status is JobStatus.FINISHED:
        raw = entry.get(b"return_value")
        if raw and len(raw) > bound * 4 // 3 + 4:
            too_large = wire.too_large("the job's result", len(raw) * 3 // 4, bound).message
            return JobResult(id=job_id, status=status, ready=True, error=too_large)
        value = json.loads(wire.unb64(raw)) if raw else None
        return JobResult(id=job_id, status=status, ready=True, value=value)
    if status is JobStatus.CANCELED:
        return JobResult(id=job_id, status=status, ready=True, error=(error or b"canceled").decode())
    exc = entry.get(b"exc_string")
    return JobResult(
        id=job_id,
        status=status,
        ready=True,
        error=(error.decode() if error else None) or (_last_line(exc, bound) if exc else "failed"),
    )


def job_info(job_id: str, raw: dict[bytes, bytes], max_data_bytes: int) -> JobInfo:
    """A JobInfo from a job hash; tolerant of jobs written by plain RQ. Never inflates beyond `max_data_bytes`."""

    def field(name: str) -> str | None:
        return (raw.get(name.encode()) or b"").decode(errors="replace") or None

    task = field("ferry_task")
    if task is None and raw.get(b"data"):
        try:
            task, _, _ = wire.decode_data(raw[b"data"], max_data_bytes)
        except Exception:  # noqa: BLE001 - a foreign or oversized job still gets a status view
            task = None
    status = JobStatus.parse(field("status"))
    retries_left, timeout = field("retries_left"), field("timeout")
    return JobInfo(
        id=job_id,
        task=task,
        queue=field("origin"),
        status=status,
        created_at=rq_parse(field("created_at")),
        enqueued_at=rq_parse(field("enqueued_at")),
        started_at=rq_parse(field("started_at")),
        ended_at=rq_parse(field("ended_at")),
        worker=field("worker_name"),
        error=field("ferry_error"),
        retries_left=int(retries_left) if retries_left else None,
        attempts=_attempts(status, int(field("number_of_retries") or 0), bool(field("started_at"))),
        timeout_s=int(float(timeout)) if timeout else None,
        due_at=delays.due_datetime(raw.get(delays.DUE_FIELD.encode())),
        attempt_errors=attempt_errors(raw.get(backoff.ATTEMPT_ERRORS_FIELD.encode())),
        waiting_for=field("ferry_waiting") if status == JobStatus.QUEUED else None,
        **job_view.extra(raw),
    )


def attempt_errors(raw: bytes | None) -> list[AttemptError]:
    """The job's kept attempt errors, oldest first; [] when none or unreadable."""
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except ValueError:
        return []
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            out.append(AttemptError(attempt=int(entry.get("attempt") or 0), error=str(entry.get("error") or ""),
                                    started_at=rq_parse(entry.get("started_at") or None),
                                    failed_at=rq_parse(entry.get("failed_at") or None)))
    return out


def _attempts(status: JobStatus, retries_used: int, ever_started: bool) -> int:
    """Executions so far: one per retry consumed, plus the current or last one unless the job waits to run."""
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED) or not ever_started:
        return retries_used
    return retries_used + 1
