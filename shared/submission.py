"""Submitting a job, without I/O: which task code vouches for the args, and the ENQUEUE script's keys and args.

The sync client (`shared.jobs`) and the async one (`shared.async_client`) both call these, so a job is
checked and written the same way whichever way it comes in. Validation, in order:

1. A live node serves the task on the job's queue: validate against the schema in its catalog entry
   (what will actually run), with `jsonschema`; no task code is needed here. When this process has
   the same code (same source hash), its pydantic model validates instead: the worker's own messages.
2. Otherwise the job is refused (`TaskNotServed`, or `UnknownTask` listing what the stack serves),
   unless the request says `allow_unserved`: then it is validated against any catalog entry, else the
   task code registered in this process (apps that have it), else not at all (the worker validates).
"""

from __future__ import annotations

import logging
from typing import Any

from shared import backoff, delays, idempotency, job_settings, keys, wire
from shared.catalog import Catalog
from shared.errors import FerryError, TaskNotServed, UnknownTask
from shared.limits import job_limits
from shared.models import JobRequest, JobStatus, Submitted
from shared.objects.ref import ObjectRef
from shared.settings import Settings
from shared.tasks import TaskRegistry
from shared.timeutil import unix_now

ScriptCall = tuple[list[str], list[Any]]

log = logging.getLogger("ferry.submit")


def needs_fresher_catalog(request: JobRequest, catalog: Catalog, settings: Settings) -> bool:
    """True when the cached catalog would refuse the job: read it again first (a node may have just started)."""
    return not catalog.serves(request.task, request.queue or settings.default_queue)


def checked_args(
    request: JobRequest, catalog: Catalog, local: TaskRegistry | None, settings: Settings
) -> dict[str, Any]:
    """The args to enqueue, once validated; UnknownTask, TaskNotServed or InvalidArgs otherwise."""
    queue = request.queue or settings.default_queue
    served = catalog.get(request.task)
    known_here = local is not None and request.task in local.names()
    if served is not None and (catalog.serves(request.task, queue) or request.allow_unserved):
        if known_here and local is not None and local.get(request.task).version in served.versions.values():
            # The same code as a serving node: its pydantic model gives the very messages the worker would.
            return local.get(request.task).validate(request.args).model_dump(mode="json", exclude_unset=True)
        catalog.validate(request.task, request.args)
        return request.args
    if not request.allow_unserved:
        raise _refusal(request.task, queue, catalog, known_here)
    if known_here:
        assert local is not None
        return local.get(request.task).validate(request.args).model_dump(mode="json", exclude_unset=True)
    return request.args


def object_references(
    task: str, args: dict[str, Any], catalog: Catalog, local: TaskRegistry | None
) -> list[tuple[str, ObjectRef]]:
    """The (argument name, ObjectRef) pairs of a validated job: its array parameters, known from the local task
    code or from the catalog's schema (a property that is an ObjectRef), so no task code is needed."""
    names: set[str] = set()
    if local is not None and task in local.names():
        names |= local.get(task).array_params
    served = catalog.get(task)
    if served is not None:
        properties = served.input_schema.get("properties", {})
        names |= {name for name, schema in properties.items() if _is_object_ref(schema)}
    return [(name, ObjectRef.model_validate(args[name])) for name in sorted(names) if args.get(name) is not None]


def _is_object_ref(schema: dict[str, Any]) -> bool:
    options = [schema, *schema.get("anyOf", []), *schema.get("allOf", [])]
    return any(str(option.get("$ref", "")).endswith("/ObjectRef") for option in options)


def _refusal(task: str, queue: str, catalog: Catalog, known_here: bool) -> FerryError:
    served = catalog.get(task)
    hint = 'pass allow_unserved (API: "allow_unserved": true, CLI: --allow-unserved) to queue it anyway'
    if served is not None:
        return TaskNotServed(
            f"task {task!r} is served on queues {', '.join(served.queues)} (nodes {', '.join(served.nodes)}), "
            f"not on queue {queue!r}: submit to one of those queues, start a node serving {queue!r}, or {hint}",
            task=task,
            queue=queue,
            queues=served.queues,
        )
    if not catalog.nodes:
        return (TaskNotServed if known_here else UnknownTask)(
            f"no live worker node serves task {task!r} (no node is running): start one with `ferry worker`, or {hint}",
            task=task,
            known=[],
        )
    if known_here:
        return TaskNotServed(
            f"task {task!r} is registered here but no live node serves it: start a node whose FERRY_TASK_MODULES "
            f"includes it, or {hint}",
            task=task,
            queue=queue,
        )
    known = catalog.names()
    return UnknownTask(
        f"no task named {task!r} is served by the live nodes; known tasks: {', '.join(known)}", known=known
    )


def enqueue_call(request: JobRequest, args: dict[str, Any], settings: Settings,
                 catalog: Catalog | None = None) -> ScriptCall:
    """The ENQUEUE script's keys and args for a validated job (a new job id each call); `catalog` gives the
    task's own limits."""
    queue = request.queue or settings.default_queue
    job_id = wire.new_job_id()
    fields = wire.job_fields(
        request.task,
        args,
        queue,
        request.timeout_s or settings.job_timeout_s,
        settings.default_retries if request.retries is None else request.retries,
        request.result_ttl_s or settings.result_ttl_s,
        request.failure_ttl_s or settings.failure_ttl_s,
    )
    limits = job_limits(request.task, _task_limits(request.task, catalog), request.limit_key,
                        request.concurrency_limit, request.rate_limit)
    if limits:
        fields["ferry_limits"] = limits
    fields.update(idempotency.fields(request.idempotency_key, request.task, queue, args))
    fields.update(job_settings.fields(request.meta, request.tags))
    job_settings.leave_ttls_to_the_task(fields, request.result_ttl_s, request.failure_ttl_s)
    idem = keys.idempotency(request.idempotency_key) if request.idempotency_key else ""
    scheduled = ""  # the 4th key: RQ's scheduled registry, where ENQUEUE puts a delayed job instead of the queue
    due = delays.due_unix(request.delay_s, request.run_at, unix_now())
    if due is not None:
        fields.update(delays.scheduled_fields(due))
        scheduled = keys.scheduled(queue)
    fields.update(backoff.job_fields(request))
    # the key (and a tag's index) outlives the job's TTLs; a key whose job expired is taken over (idem_take)
    flat: list[Any] = [job_id, queue, job_settings.longest_ttl_s(request.result_ttl_s, request.failure_ttl_s,
                                                                      settings)]
    for name, value in fields.items():
        flat += [name, value]
    return [keys.job(job_id), keys.queue(queue), idem, scheduled, *job_settings.tag_keys(request.tags)], flat


def _task_limits(task: str, catalog: Catalog | None) -> dict[str, Any] | None:
    served = catalog.get(task) if catalog is not None else None
    return served.limits if served is not None else None


def new_submission(request: JobRequest, job_id: bytes | str, settings: Settings,
                   status: JobStatus = JobStatus.QUEUED) -> Submitted:
    """The answer for a job the script created (a duplicate needs its status read: see the clients)."""
    job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
    queue = request.queue or settings.default_queue
    log.debug("job %s: submitted (%s on %s)", job_id, request.task, queue,
              extra={"job_id": job_id, "task": request.task, "queue": queue})  # hot path: DEBUG only
    if status == JobStatus.QUEUED and (request.delay_s is not None or request.run_at is not None):
        if delays.due_unix(request.delay_s, request.run_at, unix_now()) is not None:
            status = JobStatus.SCHEDULED
    return Submitted(id=job_id, status=status, queue=queue)


def indexed(exc: FerryError, index: int) -> FerryError:
    """The error of the batch's job `index`, saying that nothing was enqueued."""
    exc.details["index"] = index
    exc.message = f"jobs[{index}]: {exc.message}; no job was enqueued"
    exc.args = (exc.message,)
    return exc
