"""The Python client other apps use: talks to Redis directly, with the same validation as the HTTP API."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

import numpy as np
import redis

from shared import job_events, limits, schedules
from shared.admin import Admin
from shared.catalog import Catalog
from shared.catalog import read as read_catalog
from shared.errors import FerryError
from shared.jobs import JobService
from shared.limits import check_queue_names
from shared.models import JobInfo, JobRequest, JobResult, QueueInfo, Submitted
from shared.objects.local_put import LocalPut
from shared.objects.ref import ObjectRef, refs_as_json
from shared.objects.store import ObjectStore
from shared.redis_conn import connect, unavailable
from shared.schedules import ScheduleInfo
from shared.settings import Settings, get_settings
from shared.tasks import load_tasks
from shared.workflows import Node, WorkflowInfo, WorkflowRequest, WorkflowSubmitted

P = ParamSpec("P")
R = TypeVar("R")


def _redis_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a Redis connection failure into RedisUnavailable, naming the URL and the fix."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(args[0].url, exc) from exc  # type: ignore[attr-defined]  # args[0]: the Client

    return wrapper


class Client:
    """Submit jobs, read their results, and put or get objects.

    `Client()` uses FERRY_REDIS_URL, else the server of a `ferry up` running on this machine. A malformed URL
    fails here (ConfigError); one where nothing, or something that is not Redis, answers fails at the first call,
    within seconds, with one line that says what to fix (RedisUnavailable). Constructing it needs no server, so
    that a service can start before Redis does and answer 503 meanwhile.

    >>> client = Client()
    >>> job = client.submit("echo", {"value": 42})
    >>> client.result(job.id, wait_s=10).value
    42
    """

    def __init__(self, redis_url: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.url = redis_url or self.settings.resolved_redis_url()
        self.conn = connect(self.url)
        self.tasks = load_tasks(self.settings.task_modules)
        self.jobs = JobService(self.conn, self.settings, self.tasks)
        self.objects = ObjectStore(self.conn, self.settings.object_chunk_bytes, self.settings.object_ttl_s,
                                   LocalPut.from_settings(self.conn, self.settings))
        self.admin = Admin(self.conn, self.settings)

    # --- jobs ---
    @_redis_errors
    def submit(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> Submitted:
        """Enqueue a job (its id is `.id`). Options: queue, timeout_s, retries, idempotency_key, allow_unserved,
        delay_s or run_at (an aware datetime), retry_delay_s, retry_backoff, retry_max_delay_s, retry_jitter.

        The args are checked against the task catalog the live nodes publish (no task code needed here);
        a task no live node serves on the queue is refused unless `allow_unserved=True`.
        """
        return self.submit_request(JobRequest(task=task, args=refs_as_json(args or {}), **options))

    @_redis_errors
    def submit_request(self, request: JobRequest) -> Submitted:
        return self.jobs.submit(request)

    @_redis_errors
    def submit_many(self, requests: Iterable[JobRequest | dict[str, Any]]) -> list[Submitted]:
        """Enqueue many jobs in a few round trips; all are validated before any is enqueued."""
        parsed = [r if isinstance(r, JobRequest) else JobRequest.model_validate(refs_as_json(r)) for r in requests]
        return self.jobs.submit_many(parsed)

    @_redis_errors
    def catalog(self) -> Catalog:
        """The tasks the live nodes serve, with their schemas, queues and nodes (read now)."""
        return self.jobs.catalog_cache.store(read_catalog(self.conn))

    @_redis_errors
    def status(self, job: Submitted | str) -> JobInfo:
        """The job's state (`job`: what `submit` returned, or a job id)."""
        return self.jobs.status(job_id_of(job))

    @_redis_errors
    def result(self, job: Submitted | str, wait_s: float = 0) -> JobResult:
        """The job's result, waiting up to wait_s seconds for it; `ready` is false if it is not done."""
        return self.jobs.result(job_id_of(job), wait_s)

    def watch(self, job: Submitted | str, timeout_s: float = 3600) -> Iterator[JobInfo]:
        """The job's state now, then each change of status or progress until it is final or `timeout_s` passed."""
        return job_events.watch(self, job_id_of(job), timeout_s)

    @_redis_errors
    def cancel(self, job: Submitted | str) -> JobInfo:
        return self.jobs.cancel(job_id_of(job))

    # --- workflows (shared/workflows.py) ---
    @_redis_errors
    def submit_workflow(self, workflow: Node | WorkflowRequest | dict[str, Any],
                        allow_unserved: bool = False) -> WorkflowSubmitted:
        """Validate every job of a workflow (`chain`, `group`, `step`, or its JSON), then enqueue it all at once.

        >>> from shared.workflows import chain, group, step
        >>> wf = client.submit_workflow(chain(group(step("echo", {"value": 1}), step("echo", {"value": 2})),
        ...                                   step("echo", input="value")))
        >>> client.workflow(wf.id, wait_s=10).result
        [1, 2]
        """
        return self.jobs.workflows.submit(workflow_request(workflow, allow_unserved))

    @_redis_errors
    def workflow(self, workflow: WorkflowSubmitted | str, wait_s: float = 0) -> WorkflowInfo:
        """Every job's status and result in one call; with wait_s, wait up to that long for all to end."""
        workflow_id = workflow_id_of(workflow)
        deadline = time.monotonic() + wait_s
        while True:
            info = self.jobs.workflows.info(workflow_id)
            if info.ready or time.monotonic() >= deadline:
                return info
            pending = next(job.id for job in reversed(info.jobs) if not job.status.is_final)  # the last step first
            self.jobs.result(pending, min(2.0, max(0.01, deadline - time.monotonic())))

    @_redis_errors
    def cancel_workflow(self, workflow: WorkflowSubmitted | str) -> WorkflowInfo:
        """Cancel every job of the workflow that has not ended (running ones are interrupted)."""
        return self.jobs.workflows.cancel(workflow_id_of(workflow))

    # --- pause ---
    @_redis_errors
    def pause(self, *queues: str) -> list[QueueInfo]:
        """Pause these queues (every queue when none is named, as `rq suspend` does): their jobs stay queued, running
        jobs finish, no worker claims from them until `resume`. Returns the queues as they are now."""
        limits.pause(self.conn, check_queue_names(queues))
        return self.admin.queues()

    @_redis_errors
    def resume(self, *queues: str) -> list[QueueInfo]:
        """Resume these queues (all, and an `rq suspend`, when none is named): idle workers wake at once."""
        limits.resume(self.conn, check_queue_names(queues))
        return self.admin.queues()

    # --- objects ---
    @_redis_errors
    def put(self, data: np.ndarray | bytes, ttl_s: int | None = None, durable: bool | None = None) -> ObjectRef:
        """Store an array or bytes once in Redis; pass the returned ObjectRef as a task's Array argument.

        On a host with a live node, the bytes also go into its memory and (unless `durable`, default: not
        FERRY_PUT_WRITE_BEHIND) that node writes them to Redis behind the put; readers elsewhere wait for it.
        """
        return self.objects.put(data, ttl_s, durable)

    @_redis_errors
    def get(self, ref: ObjectRef | str) -> np.ndarray | bytes:
        return self.objects.get(ref)

    @_redis_errors
    def delete(self, ref: ObjectRef | str) -> bool:
        return self.objects.delete(ref.id if isinstance(ref, ObjectRef) else ref)

    def fetch_result(self, job: Submitted | str, wait_s: float = 0) -> Any:
        """The result value, with an object reference replaced by its array; FerryError if it failed."""
        job_id = job_id_of(job)
        result = self.result(job_id, wait_s)
        if not result.ready:
            raise FerryError(f"job {job_id} is still {result.status}")
        if result.error is not None:
            raise FerryError(f"job {job_id} {result.status}: {result.error}")
        ref = result.object_ref()
        return self.get(ref) if ref else result.value

    # --- periodic jobs (shared/schedules.py) ---
    @_redis_errors
    def add_schedule(self, name: str, task: str, args: dict[str, Any] | None = None, *, replace: bool = False,
                     allow_unserved: bool = False, **options: Any) -> ScheduleInfo:
        """Run `task` periodically: `cron="0 3 * * *"` (5 fields, or 6 with seconds first) or `every_s=60`; options
        tz (IANA, default UTC), queue, enabled, catch_up (latest | skip | all), catch_up_max. Checked like a
        submit (the task is served, the args fit, unless `allow_unserved=True`); `replace=True` overwrites a
        schedule of that name."""
        schedule = schedules.parse({"name": name, "task": task, "args": refs_as_json(args or {}), **options})
        return schedules.create(self.conn, schedule, self.settings, self.tasks, replace, allow_unserved)

    @_redis_errors
    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule (added at run time, or declared in code by a live node) with its next and last run."""
        return schedules.listing(self.conn)

    @_redis_errors
    def schedule(self, name: str) -> ScheduleInfo:
        return schedules.info(self.conn, name)

    @_redis_errors
    def delete_schedule(self, name: str) -> None:
        """Remove a schedule added at run time (one declared in code can only be paused)."""
        schedules.delete(self.conn, name)

    @_redis_errors
    def pause_schedule(self, name: str, paused: bool = True) -> ScheduleInfo:
        """Pause (no tick runs) or, with paused=False, resume (from now on; ticks in the pause are not caught up)."""
        schedules.set_paused(self.conn, name, paused)
        return schedules.info(self.conn, name)

    def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume a paused schedule (the CLI's `ferry schedules resume`, the API's `.../resume`)."""
        return self.pause_schedule(name, paused=False)

    def close(self) -> None:
        if self.objects.local is not None:
            self.objects.local.close()
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_id_of(job: Submitted | str) -> str:
    """A job's id, from what `submit` returned or from the id itself."""
    return job.id if isinstance(job, Submitted) else job


def workflow_id_of(workflow: WorkflowSubmitted | str) -> str:
    """A workflow's id, from what `submit_workflow` returned or from the id itself."""
    return workflow.id if isinstance(workflow, WorkflowSubmitted) else workflow


def workflow_request(workflow: Node | WorkflowRequest | dict[str, Any], allow_unserved: bool) -> WorkflowRequest:
    """What both clients' `submit_workflow` accept (a built tree, a request, or its JSON), as one request."""
    if isinstance(workflow, dict):
        return WorkflowRequest.model_validate(refs_as_json(workflow))
    if isinstance(workflow, WorkflowRequest):
        return workflow
    return WorkflowRequest(workflow=workflow, allow_unserved=allow_unserved)


__all__ = ["Client", "job_id_of"]
