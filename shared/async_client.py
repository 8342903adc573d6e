"""The asyncio Python client: the sync `Client`'s API and validation, on redis.asyncio.

Submitting checks the job with the same code as the sync client (`shared.submission`, against the
task catalog). Waiting for a result holds neither a thread nor a pooled connection: one `ferry:done`
subscription per client wakes every waiter (`shared.done`). Connections come from a bounded,
blocking pool: a burst waits for a free connection instead of failing with "Too many connections".
Objects (large bodies, numpy work) run the sync object store in a thread, on a small pool of their own.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import hiredis
import numpy as np
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError
from redis.utils import HIREDIS_AVAILABLE

from shared import idempotency, job_events, keys, limits, schedules
from shared.admin import Admin
from shared.catalog import Catalog, CatalogCache
from shared.catalog import aread as read_catalog
from shared.client import job_id_of, workflow_id_of, workflow_request
from shared.done import DoneWaiter
from shared.errors import FerryError, JobNotFound, RedisUnavailable
from shared.jobs import JobService, job_info, result_from_entry
from shared.lifecycle import functions
from shared.lifecycle.lua import ENQUEUE
from shared.locality import placement_fields
from shared.models import JobInfo, JobRequest, JobResult, JobStatus, QueueInfo, Submitted
from shared.objects.lifetime import REFERENCE, missing_object, raise_for_reference, reference_call
from shared.objects.local_put import LocalPut
from shared.objects.ref import ObjectRef, refs_as_json
from shared.objects.store import ObjectStore
from shared.redis_conn import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S, redact, unavailable
from shared.replies import byte_fields, optional_bytes
from shared.schedules import ScheduleInfo
from shared.settings import Settings, get_settings
from shared.submission import (
    ScriptCall,
    checked_args,
    enqueue_call,
    indexed,
    needs_fresher_catalog,
    new_submission,
    object_references,
)
from shared.tasks import load_tasks
from shared.workflows import Node, WorkflowInfo, WorkflowRequest, WorkflowSubmitted, no_dependencies

P = ParamSpec("P")
R = TypeVar("R")

MAX_CONNECTIONS = (
    32  # per client: every command holds one for a single round trip, so a few dozen serve thousands of requests
)
POOL_WAIT_S = 10.0  # a command waits this long for a free connection before failing as RedisUnavailable
OBJECT_CONNECTIONS = 8  # object uploads and downloads (long transfers) have a pool of their own


class _HiredisPacked(redis.asyncio.Connection):
    """Commands packed by hiredis in C, as the sync client does.

    redis.asyncio packs them in pure Python: ~100 us for ENQUEUE's 40 arguments.
    """

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " not in first:  # every command but "SCRIPT LOAD" and its kind
            try:  # straight to C: redis-py's serializer first copies the args in a Python loop (~8 us for ENQUEUE)
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # a bytearray (the serializer converts it), or a bad type (the serializer's DataError)
        return self._serializer.pack(*args)


def connect_async(url: str, max_connections: int = MAX_CONNECTIONS, **overrides: Any) -> redis.asyncio.Redis:
    """An asyncio client for `url` on a blocking pool of `max_connections`; same time-outs and retries as `connect`."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    options.update(overrides)
    try:
        if HIREDIS_AVAILABLE and urlsplit(url).scheme == "redis":
            options.setdefault("connection_class", _HiredisPacked)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=POOL_WAIT_S, **options
        )
    except ValueError as exc:
        raise RedisUnavailable(
            f"FERRY_REDIS_URL={redact(url)!r} is not a Redis URL ({exc}); use redis://HOST:6379/0"
        ) from exc
    return redis.asyncio.Redis(connection_pool=pool)


def _redis_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn a Redis connection failure into RedisUnavailable, naming the URL and the fix."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(args[0].url, exc) from exc  # type: ignore[attr-defined]  # args[0]: the client

    return wrapper


class _EnqueueBatcher:
    """ENQUEUE calls made while one batch is on its way go together in the next: one pipeline, one send, one reply.

    Under load (many concurrent submits) this is the producer's main saving: a round trip and a
    syscall pair for many jobs instead of one each. A lone submit waits for nothing but one loop turn.
    Each job keeps its own reply, or its own error.
    """

    MAX_BATCH = 256

    def __init__(self, conn: redis.asyncio.Redis) -> None:
        self.conn = conn
        self.sha = hashlib.sha1(ENQUEUE.encode()).hexdigest()
        self.function = f"{functions.LIBRARY_NAME}_enqueue"  # the lifecycle's function library (EVALSHA on Redis 6)
        self.functions = True
        self.pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.draining: asyncio.Task[None] | None = None

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((keys, args, future))
        if self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the submits of this loop turn join the first batch
            while self.pending:
                batch, self.pending = self.pending[: self.MAX_BATCH], self.pending[self.MAX_BATCH :]
                try:
                    replies = await self._run(batch)
                except BaseException as exc:  # noqa: BLE001 - every caller gets the error, none is left waiting
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self.draining = None

    async def _run(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        uses_functions = self.functions
        async with self.conn.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:  # bare calls: a pipeline of Script calls would send SCRIPT EXISTS first
                if uses_functions:
                    pipe.fcall(self.function, len(keys), *keys, *args)
                else:
                    pipe.evalsha(self.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies)
                   if isinstance(r, NoScriptError) or functions.is_missing_function(r) or functions.lacks_functions(r)]
        if missing:  # a new or flushed server: load the code, run again only the calls that did nothing
            if uses_functions and functions.lacks_functions(replies[missing[0]]):
                self.functions = False  # a server without functions (Redis 6)
            elif uses_functions:
                await self.conn.function_load(functions.LIBRARY_CODE, replace=True)
            else:
                await self.conn.script_load(ENQUEUE)
            again = await self._run([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies


class AsyncClient:
    """Submit jobs, read their results, and put or get objects, from asyncio code.

    >>> async with AsyncClient("redis://localhost:6379/0") as client:
    ...     job = await client.submit("echo", {"value": 42})
    ...     (await client.result(job, wait_s=10)).value
    42
    """

    def __init__(
        self, redis_url: str | None = None, settings: Settings | None = None, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.settings = settings or get_settings()
        self.url = redis_url or self.settings.resolved_redis_url()
        self.conn = connect_async(self.url, max_connections)
        self.tasks = load_tasks(self.settings.task_modules)  # apps that have task code may validate with it
        self.catalog_cache = CatalogCache()
        self._catalog_read: asyncio.Task[Catalog] | None = None
        self._enqueue = _EnqueueBatcher(self.conn)
        self._reference = self.conn.register_script(REFERENCE)
        self._bound = self.settings.max_job_data_bytes
        self.done = DoneWaiter(lambda: connect_async(self.url, 1, socket_timeout=None), self.settings.result_recheck_s)
        self.events = DoneWaiter(lambda: connect_async(self.url, 1, socket_timeout=None),  # subscribes on first watch
                                 self.settings.result_recheck_s, channels=(keys.DONE_CHANNEL, keys.EVENTS_CHANNEL))
        self._sync_services: tuple[JobService, ObjectStore] | None = None

    # --- jobs ---
    async def submit(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> Submitted:
        """Enqueue a job. Options: queue, timeout_s, retries, idempotency_key, allow_unserved,
        delay_s or run_at (an aware datetime), retry_delay_s, retry_backoff, retry_max_delay_s, retry_jitter."""
        return await self.submit_request(JobRequest(task=task, args=refs_as_json(args or {}), **options))

    @_redis_errors
    async def submit_request(self, request: JobRequest) -> Submitted:
        if request.depends_on:  # deferred: the workflows' script (shared/workflows.py), on the sync pool
            return await asyncio.to_thread(self._sync()[0].submit, request)
        script_keys, script_args = await self._prepared(request)
        created, job_id = await self._enqueue(script_keys, script_args)
        return await self._submitted(request, created, job_id)

    @_redis_errors
    async def submit_many(self, requests: Iterable[JobRequest | dict[str, Any]]) -> list[Submitted]:
        """Enqueue many jobs in a few round trips; all are validated before any is enqueued."""
        parsed = [r if isinstance(r, JobRequest) else JobRequest.model_validate(refs_as_json(r)) for r in requests]
        prepared = []
        for index, request in enumerate(parsed):
            try:
                prepared.append(await self._prepared(request))
            except FerryError as exc:
                raise indexed(exc, index)  # noqa: B904 - the same error, re-raised with its index
        replies = await asyncio.gather(*(self._enqueue(k, a) for k, a in prepared))  # batched as they come
        return [await self._submitted(r, created, job_id) for r, (created, job_id) in zip(parsed, replies, strict=True)]

    async def _prepared(self, request: JobRequest) -> ScriptCall:
        """Validate the job and check (and record) the objects it takes; ENQUEUE's keys and args."""
        no_dependencies(request)
        catalog = self.catalog_cache.fresh()
        if catalog is None or (
            needs_fresher_catalog(request, catalog, self.settings) and not self.catalog_cache.fresh(for_miss=True)
        ):
            catalog = await self.catalog()
        args = checked_args(request, catalog, self.tasks, self.settings)
        call = enqueue_call(request, args, self.settings, catalog)
        named = object_references(request.task, args, catalog, self.tasks)
        referencing = reference_call(str(call[1][0]), named)
        if referencing is not None:  # the same check as the sync client's (shared.objects.lifetime)
            reply = await self._reference(keys=referencing[0], args=referencing[1])
            missing = missing_object(named, reply)
            tombstone = optional_bytes(await self.conn.get(keys.object_tombstone(missing))) if missing else None
            raise_for_reference(named, reply, tombstone)
        call[1].extend(placement_fields(named, self.settings))  # offered first to the node holding them
        return call

    async def catalog(self) -> Catalog:
        """The task catalog as the live nodes publish it, read now (concurrent callers share one read)."""
        if self._catalog_read is None or self._catalog_read.done():
            self._catalog_read = asyncio.ensure_future(read_catalog(self.conn))
        return self.catalog_cache.store(await asyncio.shield(self._catalog_read))

    async def _submitted(self, request: JobRequest, created: int, job_id: bytes | str) -> Submitted:
        if created == idempotency.CREATED:
            return new_submission(request, job_id, self.settings)
        job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
        info = await self.status(job_id)
        if created == idempotency.CONFLICT:
            raise idempotency.conflict(request.idempotency_key or "", job_id, info.task, info.queue)
        return Submitted(id=job_id, status=info.status, queue=info.queue or "", duplicate=True)

    @_redis_errors
    async def status(self, job: Submitted | str) -> JobInfo:
        """The job's state (`job`: what `submit` returned, or a job id)."""
        job_id = job_id_of(job)
        raw = byte_fields(await self.conn.hgetall(keys.job(job_id)))
        if not raw:
            raise _not_found(job_id)
        return job_info(job_id, raw, self.settings.max_job_data_bytes)

    @_redis_errors
    async def result(self, job: Submitted | str, wait_s: float = 0) -> JobResult:
        """The job's result, waiting up to wait_s seconds (holding no connection); `ready` is false if not done."""
        job_id = job_id_of(job)
        outcome = await self._result_now(job_id)
        if wait_s <= 0 or _ended(outcome):
            return outcome
        return await self.done.wait(job_id, wait_s, lambda: self._result_now(job_id), _ended)

    async def _result_now(self, job_id: str) -> JobResult:
        stream = keys.results(job_id)
        async with self.conn.pipeline(transaction=False) as pipe:
            pipe.xrevrange(stream, "+", "-", count=1)
            pipe.hgetall(keys.job(job_id))
            latest, raw = await pipe.execute()
        if latest:
            return result_from_entry(job_id, latest[0][1], raw.get(b"ferry_error") if raw else None, self._bound)
        if not raw:
            raise _not_found(job_id)
        info = job_info(job_id, raw, self.settings.max_job_data_bytes)
        if isinstance(info.status, JobStatus) and info.status.is_final:
            again: Any = await self.conn.xrevrange(stream, "+", "-", count=1)  # it may have ended between the reads
            if again:
                return result_from_entry(job_id, again[0][1], raw.get(b"ferry_error"), self._bound)
            return JobResult(id=job_id, status=info.status, ready=False, error=info.error or "its result expired")
        return JobResult(id=job_id, status=info.status, ready=False, error=info.error)

    def watch(self, job: Submitted | str, timeout_s: float = 3600,
              keepalive_s: float | None = None) -> AsyncIterator[JobInfo | None]:
        """The job's state now, then each change of status or progress until it is final (`async for`)."""
        return job_events.watch_async(self, job_id_of(job), timeout_s, keepalive_s)

    @_redis_errors
    async def cancel(self, job: Submitted | str) -> JobInfo:
        """Cancel a queued job, or interrupt a running one; Conflict if it already ended (sync code, in a thread)."""
        return await asyncio.to_thread(self._sync()[0].cancel, job_id_of(job))

    # --- workflows (shared/workflows.py): the sync service in a thread; waiting holds no connection ---
    @_redis_errors
    async def submit_workflow(self, workflow: Node | WorkflowRequest | dict[str, Any],
                              allow_unserved: bool = False) -> WorkflowSubmitted:
        """Validate every job of a workflow, then enqueue it all at once (see `Client.submit_workflow`)."""
        request = workflow_request(workflow, allow_unserved)
        return await asyncio.to_thread(self._sync()[0].workflows.submit, request)

    @_redis_errors
    async def workflow(self, workflow: WorkflowSubmitted | str, wait_s: float = 0) -> WorkflowInfo:
        """Every job's status and result in one call; with wait_s, wait up to that long for all to end."""
        workflow_id = workflow_id_of(workflow)
        deadline = time.monotonic() + wait_s
        while True:
            info = await asyncio.to_thread(self._sync()[0].workflows.info, workflow_id)
            if info.ready or time.monotonic() >= deadline:
                return info
            pending = next(job.id for job in reversed(info.jobs) if not job.status.is_final)
            await self.result(pending, min(2.0, max(0.01, deadline - time.monotonic())))

    @_redis_errors
    async def cancel_workflow(self, workflow: WorkflowSubmitted | str) -> WorkflowInfo:
        """Cancel every job of the workflow that has not ended (running ones are interrupted)."""
        workflow_id = workflow_id_of(workflow)
        return await asyncio.to_thread(self._sync()[0].workflows.cancel, workflow_id)

    # --- pause (sync code, in a thread: rare operator actions) ---
    async def pause(self, *queues: str) -> list[QueueInfo]:
        """Pause these queues (every queue when none is named, as `rq suspend`); see `Client.pause`."""
        return await asyncio.to_thread(self._switch, limits.pause, queues)

    async def resume(self, *queues: str) -> list[QueueInfo]:
        """Resume these queues (everything, and an `rq suspend`, when none is named); idle workers wake at once."""
        return await asyncio.to_thread(self._switch, limits.resume, queues)

    def _switch(self, action: Callable[[redis.Redis, list[str]], None], queues: tuple[str, ...]) -> list[QueueInfo]:
        conn = self._sync()[0].conn
        action(conn, limits.check_queue_names(queues))
        return Admin(conn, self.settings).queues()

    # --- objects: the sync store in a thread, on a small pool of its own ---
    def _sync(self) -> tuple[JobService, ObjectStore]:
        """Sync services on their own bounded pool, for rare or long operations (cancel, object transfers)."""
        if self._sync_services is None:
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=OBJECT_CONNECTIONS,
                timeout=POOL_WAIT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_keepalive=True,
            )
            conn = redis.Redis(connection_pool=pool)
            self._sync_services = (
                JobService(conn, self.settings, self.tasks),
                ObjectStore(conn, self.settings.object_chunk_bytes, self.settings.object_ttl_s,
                            LocalPut.from_settings(conn, self.settings)),
            )
        return self._sync_services

    @property
    def objects(self) -> ObjectStore:
        return self._sync()[1]

    @_redis_errors
    async def put(self, data: np.ndarray | bytes, ttl_s: int | None = None, durable: bool | None = None) -> ObjectRef:
        """Store an array or bytes once in Redis; pass the returned ObjectRef as a task's Array argument.

        On a host with a live node, see `Client.put` (the copy into its memory, `durable`).
        """
        return await asyncio.to_thread(self.objects.put, data, ttl_s, durable)

    @_redis_errors
    async def get(self, ref: ObjectRef | str) -> np.ndarray | bytes:
        return await asyncio.to_thread(self.objects.get, ref)

    @_redis_errors
    async def delete(self, ref: ObjectRef | str) -> bool:
        return await asyncio.to_thread(self.objects.delete, ref.id if isinstance(ref, ObjectRef) else ref)

    async def fetch_result(self, job: Submitted | str, wait_s: float = 0) -> Any:
        """The result value, with an object reference replaced by its array; FerryError if it failed."""
        job_id = job_id_of(job)
        result = await self.result(job_id, wait_s)
        if not result.ready:
            raise FerryError(f"job {job_id} is still {result.status}")
        if result.error is not None:
            raise FerryError(f"job {job_id} {result.status}: {result.error}")
        ref = result.object_ref()
        return await self.get(ref) if ref else result.value

    # --- periodic jobs (shared/schedules.py): rare operator calls, the sync code in a thread ---
    @_redis_errors
    async def add_schedule(self, name: str, task: str, args: dict[str, Any] | None = None, *, replace: bool = False,
                           allow_unserved: bool = False, **options: Any) -> ScheduleInfo:
        """As `Client.add_schedule`: `cron=` or `every_s=`, tz, queue, enabled, catch_up, catch_up_max."""
        schedule = schedules.parse({"name": name, "task": task, "args": refs_as_json(args or {}), **options})
        return await asyncio.to_thread(schedules.create, self._sync()[0].conn, schedule, self.settings, self.tasks,
                                       replace, allow_unserved)

    @_redis_errors
    async def schedules(self) -> list[ScheduleInfo]:
        return await asyncio.to_thread(schedules.listing, self._sync()[0].conn)

    @_redis_errors
    async def schedule(self, name: str) -> ScheduleInfo:
        return await asyncio.to_thread(schedules.info, self._sync()[0].conn, name)

    @_redis_errors
    async def delete_schedule(self, name: str) -> None:
        await asyncio.to_thread(schedules.delete, self._sync()[0].conn, name)

    @_redis_errors
    async def pause_schedule(self, name: str, paused: bool = True) -> ScheduleInfo:
        conn = self._sync()[0].conn
        await asyncio.to_thread(schedules.set_paused, conn, name, paused)
        return await asyncio.to_thread(schedules.info, conn, name)

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume a paused schedule (see `Client.resume_schedule`)."""
        return await self.pause_schedule(name, paused=False)

    async def close(self) -> None:
        await self.done.close()
        await self.events.close()
        await self.conn.aclose()
        if self._sync_services is not None:
            if self._sync_services[1].local is not None:
                self._sync_services[1].local.close()
            self._sync_services[1].conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _ended(outcome: JobResult) -> bool:
    return outcome.ready or (isinstance(outcome.status, JobStatus) and outcome.status.is_final)


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job {job_id!r} (unknown id, or it expired after its result TTL)")
