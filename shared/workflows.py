"""Workflows: jobs that wait for other jobs (dependencies), groups (fan-out / fan-in) and chains.

A workflow is a tree of three kinds of node, the same in Python, JSON (`POST /v1/workflows`) and files
(`ferry workflow submit FILE.json`):

- a **step** `{"task": ..., "args": {...}}`: one job;
- a **group** `{"group": [node, ...]}`: its members run side by side; its result is the list of theirs, in order;
- a **chain** `{"chain": [node, ...]}`: each node starts when the one before has ended; its result is the last's.

**Results flow as arguments.** A step after another (in a chain) receives the previous node's result in its
parameter named by `input` (default `"input"`; a task without that parameter just runs after it). After a
group that is the list of the members' results, in order: the fan-in callback. A large array result arrives
as what it is stored as, an object: an `Array` parameter gets it as a read-only view of the node's shared
memory (the node that produced it already holds it); inside a list it arrives as a numpy view too. A failed
input reads as null (only with `on_failure="run"`).

**Failures.** `on_failure` is a step's policy for the nodes it waits for: `"fail"` (default) fails it at once
with an error naming the failed job (and so on down the chain), `"run"` runs it anyway. The same holds for
a plain job's `depends_on` (`JobRequest.depends_on`, a `Dependency(id, on_failure)` per job), and for RQ's
`Dependency(allow_failure=True)`, which is `run` for all.

Everything runs on RQ 3's dependency model (see shared/lifecycle/lua_workflows.py): the whole workflow is
validated first (task catalog, args schemas, object references), then enqueued by one script, all or nothing.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import redis
from pydantic import BaseModel, ConfigDict, Field

from shared import idempotency, keys, wire
from shared.catalog import Catalog
from shared.errors import Conflict, FerryError, InvalidArgs, InvalidRequest, NotFound
from shared.job_status import RESULT_TYPE_STATUS
from shared.lifecycle import lua
from shared.locality import placement_fields
from shared.models import QUEUE_PATTERN, Dependency, JobRequest, JobStatus
from shared.objects.lifetime import reference_job_objects
from shared.objects.ref import REF_MARKER, ObjectRef, refs_as_json
from shared.replies import text
from shared.settings import Settings
from shared.submission import checked_args, object_references
from shared.tasks import TaskRegistry
from shared.timeutil import rq_now, unix_now

RESULT_MARKER = "$ferry_result"  # {"$ferry_result": job id}: replaced by that job's result when the job runs
DEFAULT_INPUT = "input"
MAX_WORKFLOW_JOBS = 10_000
OnFailure = Literal["fail", "run"]


class WorkflowNotFound(NotFound):
    """No workflow with that id (or it expired)."""


# --- the tree ---
class Step(BaseModel):
    """One job of a workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    input: str | None = Field(None, min_length=1, max_length=200,
                              description='the parameter receiving the previous node\'s result; default "input"')
    on_failure: OnFailure = Field("fail", description="if a node it waits for fails: fail at once, or run anyway")
    queue: str | None = Field(None, pattern=QUEUE_PATTERN)
    timeout_s: int | None = Field(None, gt=0, le=7 * 86_400)
    retries: int | None = Field(None, ge=0, le=100)


class Group(BaseModel):
    """Members run side by side; the group's result is the list of their results, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: list[Node] = Field(min_length=1, max_length=MAX_WORKFLOW_JOBS)


class Chain(BaseModel):
    """Each node starts when the previous one has ended, and receives its result; the chain's is the last's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: list[Node] = Field(min_length=1, max_length=MAX_WORKFLOW_JOBS)


Node = Union[Step, Group, Chain]  # noqa: UP007 - a runtime alias pydantic resolves in the models above
Group.model_rebuild()
Chain.model_rebuild()


class WorkflowRequest(BaseModel):
    """A whole workflow to submit (`POST /v1/workflows`, `ferry workflow submit FILE.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: Node
    allow_unserved: bool = Field(False, description="queue jobs even if no live node serves their task yet")


def step(task: str, args: dict[str, Any] | None = None, *, input: str | None = None,  # noqa: A002 - the API's word
         on_failure: OnFailure = "fail", **options: Any) -> Step:
    """A job in a workflow; `input` names the parameter that receives the previous node's result."""
    return Step(task=task, args=refs_as_json(args or {}), input=input, on_failure=on_failure, **options)


def group(*members: Node | Iterable[Node]) -> Group:
    """`group(a, b, c)` or `group([a, b, c])`: fan-out; the next node gets their results as a list."""
    return Group(group=_flat(members))


def chain(*nodes: Node | Iterable[Node]) -> Chain:
    """`chain(a, b, c)`: a, then b with a's result, then c with b's."""
    return Chain(chain=_flat(nodes))


def _flat(items: Sequence[Any]) -> list[Node]:
    if len(items) == 1 and not isinstance(items[0], (Step, Group, Chain)):
        return list(items[0])
    return list(items)


# --- answers ---
class WorkflowSubmitted(BaseModel):
    id: str
    jobs: list[str] = Field(description="every job id, in the order of the tree (depth first)")
    status: JobStatus = JobStatus.QUEUED


class WorkflowJob(BaseModel):
    id: str
    task: str | None
    status: JobStatus
    worker: str | None = None
    error: str | None = None


class WorkflowInfo(BaseModel):
    """A workflow's state and results, read in one call."""

    id: str
    status: JobStatus = Field(description="finished when every job finished; failed / canceled once all ended and "
                                          "one did; started while any runs or has run; else queued")
    ready: bool = Field(description="every job has ended")
    counts: dict[str, int]
    jobs: list[WorkflowJob]
    result: Any = Field(None, description="the root node's result (a group's is a list), once ready; a large "
                                          'array is {"$ferry_ref": ObjectRef}')
    results: dict[str, Any] = Field(default_factory=dict, description="each finished job's result, by job id")


# --- planning ---
@dataclass
class Planned:
    id: str
    step: Step
    path: str
    deps: list[str] = field(default_factory=list)
    input_shape: Any = None  # the previous node's result shape, or None


def plan(root: Node) -> tuple[list[Planned], Any]:
    """The jobs of the tree in dependency order, and the root's result shape (markers in place of results)."""
    jobs: list[Planned] = []

    def walk(node: Node, path: str, exits: list[str], shape: Any) -> tuple[list[str], Any]:
        if isinstance(node, Step):
            job = Planned(wire.new_job_id(), node, path, list(exits), shape if exits else None)
            jobs.append(job)
            if len(jobs) > MAX_WORKFLOW_JOBS:
                raise InvalidRequest(f"a workflow holds at most {MAX_WORKFLOW_JOBS} jobs; split it")
            return [job.id], {RESULT_MARKER: job.id}
        if isinstance(node, Chain):
            for index, member in enumerate(node.chain):
                exits, shape = walk(member, f"{path}.chain[{index}]", exits, shape)
            return exits, shape
        all_exits: list[str] = []
        shapes = []
        for index, member in enumerate(node.group):
            member_exits, member_shape = walk(member, f"{path}.group[{index}]", exits, shape)
            all_exits += member_exits
            shapes.append(member_shape)
        return all_exits, shapes

    _, shape = walk(root, "workflow", [], None)
    return jobs, shape


def _input_name(step: Step, catalog: Catalog, local: TaskRegistry | None) -> str | None:
    """The parameter that receives the previous result; None when the task has no such parameter."""
    name = step.input or DEFAULT_INPUT
    params: set[str] = set()
    served = catalog.get(step.task)
    if served is not None:
        params |= set(served.input_schema.get("properties", {}))
    if local is not None and step.task in local.names():
        params |= set(local.get(step.task).input_model.model_fields)
    if name in params:
        return name
    if served is None and (local is None or step.task not in local.names()):
        return step.input  # an unserved task no code here knows (allow_unserved): trust `input`
    if step.input is not None:
        raise InvalidArgs(f"task {step.task!r} has no parameter {name!r} to receive the previous result; "
                          f"its parameters: {', '.join(sorted(params)) or 'none'}",
                          errors=[{"field": "input", "message": "no such parameter"}])
    return None


def _checked(request: JobRequest, input_name: str | None, catalog: Catalog, local: TaskRegistry | None,
             settings: Settings) -> dict[str, Any]:
    """The step's args, validated without the parameter the workflow fills in when the step runs."""
    if input_name is not None and input_name in request.args:
        raise InvalidArgs(f"args.{input_name} is filled in with the previous result; remove it (or set `input`)",
                          errors=[{"field": input_name, "message": "set by the workflow"}])
    try:
        return checked_args(request, catalog, local, settings)
    except InvalidArgs as exc:
        problems = [p for p in exc.details.get("errors", [])
                    if not (p.get("field") == input_name and p.get("message") == "Field required")]
        if problems or input_name is None:
            raise
        return dict(request.args)


def _located(exc: FerryError, path: str) -> FerryError:
    exc.details["path"] = path
    exc.message = f"{path}: {exc.message}; nothing was enqueued"
    exc.args = (exc.message,)
    return exc


def no_dependencies(request: JobRequest) -> None:
    """Batches and the async client enqueue with ENQUEUE, which knows no dependencies: refuse them clearly."""
    if request.depends_on:
        raise InvalidRequest("depends_on is not supported here (a batch, or the async client): submit the job "
                             "alone (Client.submit, POST /v1/jobs) or as a workflow (POST /v1/workflows)")


# --- the service ---
class Workflows:
    """Submit, read and cancel workflows; submit a job with `depends_on` (the sync client and the API use it)."""

    def __init__(self, conn: redis.Redis, settings: Settings, tasks: TaskRegistry,
                 catalog: Callable[[JobRequest], Catalog]) -> None:
        self.conn = conn
        self.settings = settings
        self.tasks = tasks
        self.catalog = catalog
        self._submit = conn.register_script(lua.WF_SUBMIT)
        self._cancel = conn.register_script(lua.WF_CANCEL)

    def submit(self, request: WorkflowRequest | Node) -> WorkflowSubmitted:
        """Validate every job, then enqueue the whole workflow in one script (all or nothing)."""
        if not isinstance(request, WorkflowRequest):
            request = WorkflowRequest(workflow=request)
        jobs, shape = plan(request.workflow)
        prepared = []
        for job in jobs:
            try:
                prepared.append(self._prepare(job, request.allow_unserved))
            except FerryError as exc:
                raise _located(exc, job.path)  # noqa: B904 - the same error, with where it is in the tree
        workflow_id = uuid.uuid4().hex
        spec = json.dumps({"output": shape, "jobs": [j.id for j in jobs]}, separators=(",", ":"))
        ttl = max(self.settings.failure_ttl_s, self.settings.result_ttl_s)
        self._run([keys.workflow(workflow_id), ""], ["spec", spec, "created_at", rq_now()], ttl, prepared)
        return WorkflowSubmitted(id=workflow_id, jobs=[j.id for j in jobs])

    def submit_job(self, request: JobRequest) -> tuple[str, JobStatus, int]:
        """One job with `depends_on` (deferred until they end): its id, status (deferred, queued or failed) and
        `idempotency.CREATED`; or, when its idempotency key names an earlier job, that job's id, `unknown` and
        `idempotency.DUPLICATE` (same request) or `idempotency.CONFLICT` (a different one), as ENQUEUE answers."""
        deps = [d if isinstance(d, Dependency) else Dependency(id=str(d)) for d in request.depends_on]
        step_ = Step(task=request.task, args=request.args, queue=request.queue, timeout_s=request.timeout_s,
                     retries=request.retries)
        planned = Planned(wire.new_job_id(), step_, "job", [d.id for d in deps])
        prepared = self._prepare(planned, request.allow_unserved, run_on=[d.id for d in deps if d.on_failure == "run"],
                                 idempotency_key=request.idempotency_key)
        idem = keys.idempotency(request.idempotency_key) if request.idempotency_key else ""
        reply = self._run(["", idem], [], self.settings.result_ttl_s, [prepared])
        if reply[0] != idempotency.CREATED:  # the key names an earlier job: nothing was enqueued
            return text(reply[1]), JobStatus.UNKNOWN, int(reply[0])
        return planned.id, JobStatus.parse(reply[1]), idempotency.CREATED

    def _prepare(self, job: Planned, allow_unserved: bool, run_on: list[str] | None = None,
                 idempotency_key: str | None = None) -> list[Any]:
        step_ = job.step
        request = JobRequest(task=step_.task, args=step_.args, queue=step_.queue, timeout_s=step_.timeout_s,
                             retries=step_.retries, allow_unserved=allow_unserved)
        catalog = self.catalog(request)
        input_name = _input_name(step_, catalog, self.tasks) if job.input_shape is not None else None
        args = _checked(request, input_name, catalog, self.tasks, self.settings)
        named = object_references(step_.task, args, catalog, self.tasks)
        reference_job_objects(self.conn, job.id, named)
        if input_name is not None:
            args = {**args, input_name: job.input_shape}
        queue = step_.queue or self.settings.default_queue
        fields = wire.job_fields(step_.task, args, queue, step_.timeout_s or self.settings.job_timeout_s,
                                 self.settings.default_retries if step_.retries is None else step_.retries,
                                 self.settings.result_ttl_s, self.settings.failure_ttl_s)
        fields.update(_placement(named, input_name is not None, self.settings))
        if run_on is None:
            run_on = job.deps if step_.on_failure == "run" else []
        # what makes two dependent submissions "the same job": ENQUEUE's fingerprint plus the dependencies
        fields.update(idempotency.fields(idempotency_key, step_.task, queue,
                                         {"args": args, "depends_on": job.deps, "run_on": run_on}))
        flat: list[Any] = [job.id, queue, "1" if input_name is not None else "", "", len(job.deps), *job.deps,
                           len(run_on), *run_on, len(fields)]
        for name, value in fields.items():
            flat += [name, value]
        return flat

    def _run(self, script_keys: list[str], wf_fields: list[Any], ttl: int, prepared: list[list[Any]]) -> list[Any]:
        args: list[Any] = [rq_now(), unix_now(), ttl, len(wf_fields) // 2, *wf_fields, len(prepared)]
        for flat in prepared:
            args += flat
        reply: list[Any] = self._submit(keys=script_keys, args=args)
        return reply

    # --- read ---
    def _spec(self, workflow_id: str) -> dict[str, Any]:
        raw = self.conn.hget(keys.workflow(workflow_id), "spec")
        if raw is None:
            raise WorkflowNotFound(f"no workflow {workflow_id!r} (unknown id, or it expired)")
        spec: dict[str, Any] = json.loads(raw)
        return spec

    def info(self, workflow_id: str) -> WorkflowInfo:
        """Status and results of every job, in one round trip after the workflow's own record."""
        spec = self._spec(workflow_id)
        ids: list[str] = spec["jobs"]
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "status", "ferry_task", "worker_name", "ferry_error")
            pipe.xrevrange(keys.results(job_id), "+", "-", count=1)
        replies = pipe.execute()
        jobs, values = [], {}
        for index, job_id in enumerate(ids):
            status_raw, task, worker, error = replies[2 * index]
            status = JobStatus.parse(status_raw)
            entry = replies[2 * index + 1]
            if entry:
                fields = {k if isinstance(k, bytes) else str(k).encode(): v for k, v in entry[0][1].items()}
                status = RESULT_TYPE_STATUS.get(fields.get(b"type", b""), status) if status_raw is None else status
                if fields.get(b"type") == b"1" and fields.get(b"return_value"):
                    values[job_id] = json.loads(wire.unb64(fields[b"return_value"]))
            jobs.append(WorkflowJob(id=job_id, task=text(task) if task else None, status=status,
                                    worker=text(worker) if worker else None, error=text(error) if error else None))
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        ready = all(job.status.is_final for job in jobs)
        return WorkflowInfo(id=workflow_id, status=_overall(jobs, ready), ready=ready, counts=counts, jobs=jobs,
                            result=substitute(spec["output"], values) if ready else None, results=values)

    def cancel(self, workflow_id: str) -> WorkflowInfo:
        """Cancel every job not yet ended (running ones are interrupted); Conflict if all had ended."""
        ids = self._spec(workflow_id)["jobs"]
        reply = self._cancel(args=[rq_now(), unix_now(), self.settings.failure_ttl_s, *ids])
        if not reply:
            raise Conflict(f"workflow {workflow_id} has already ended; nothing to cancel")
        return self.info(workflow_id)


def _overall(jobs: list[WorkflowJob], ready: bool) -> JobStatus:
    statuses = {job.status for job in jobs}
    if ready:
        for status in (JobStatus.FAILED, JobStatus.CANCELED):
            if status in statuses:
                return status
        return JobStatus.FINISHED
    if statuses & {JobStatus.STARTED, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED}:
        return JobStatus.STARTED
    return JobStatus.QUEUED


def substitute(shape: Any, values: dict[str, Any]) -> Any:
    """`shape` with each {"$ferry_result": id} replaced by that job's value (None if it has none)."""
    if isinstance(shape, dict) and RESULT_MARKER in shape:
        return values.get(shape[RESULT_MARKER])
    if isinstance(shape, list):
        return [substitute(item, values) for item in shape]
    return shape


# --- the worker's side: a job's inputs, copied into its hash as its dependencies finished ---
def _marked(value: Any) -> bool:
    if isinstance(value, dict):
        return RESULT_MARKER in value
    return isinstance(value, list) and bool(value) and isinstance(value[0], (dict, list)) and _marked(value[0])


def has_inputs(args: dict[str, Any]) -> bool:
    """True when an arg holds a previous step's result to fill in (cheap: top-level values, first items)."""
    return any(_marked(value) for value in args.values())


def _marker_ids(value: Any, out: list[str]) -> None:
    if isinstance(value, dict) and RESULT_MARKER in value:
        out.append(str(value[RESULT_MARKER]))
    elif isinstance(value, list):
        for item in value:
            _marker_ids(item, out)


def resolve_inputs(conn: redis.Redis, job_id: str, args: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The args with each result marker replaced by that dependency's result (its `ferry_in:<id>` copy), and
    the names of list args holding object results (to hand over as numpy views once validated).

    A single result that is an object becomes its ObjectRef (an `Array` parameter reads it from the node's
    shared memory); inside a list it stays `{"$ferry_ref": ...}` until `arrays_in` turns it into a view.
    """
    ids: list[str] = []
    for value in args.values():
        if _marked(value):
            _marker_ids(value, ids)
    raw = conn.hmget(keys.job(job_id), [f"ferry_in:{i}" for i in ids]) if ids else []
    values = {i: json.loads(base64.b64decode(r)) for i, r in zip(ids, raw, strict=True) if r is not None}
    out, lists = dict(args), set()
    for name, value in args.items():
        if isinstance(value, dict) and RESULT_MARKER in value:
            got = values.get(str(value[RESULT_MARKER]))
            out[name] = got[REF_MARKER] if isinstance(got, dict) and REF_MARKER in got else got
        elif _marked(value):
            out[name] = substitute(value, values)
            if REF_MARKER in json.dumps(out[name]):
                lists.add(name)
    return out, lists


def arrays_in(value: Any, read: Callable[[ObjectRef], np.ndarray]) -> Any:
    """`value` with each {"$ferry_ref": ObjectRef} replaced by `read(ref)` (a read-only view)."""
    if isinstance(value, dict) and REF_MARKER in value and len(value) == 1:
        return read(ObjectRef.model_validate(value[REF_MARKER]))
    if isinstance(value, list):
        return [arrays_in(item, read) for item in value]
    return value


__all__ = ["Chain", "Group", "Step", "WorkflowInfo", "WorkflowRequest", "WorkflowSubmitted", "Workflows", "chain",
           "group", "step"]


def _placement(named: list[tuple[str, ObjectRef]], takes_input: bool, settings: Settings) -> dict[str, Any]:
    """Placement fields: offered first to the node holding the job's object args or, for a step that takes the
    previous step's result, to the node holding that result's objects (FINISH names them; lua_locality)."""
    flat = placement_fields(named, settings)
    if not flat and takes_input and settings.placement_delay_s > 0:
        flat = ["ferry_placement_delay_s", settings.placement_delay_s]
    return dict(zip(flat[::2], flat[1::2], strict=True))
