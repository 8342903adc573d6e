"""Models for everything that crosses HTTP or Redis: job requests, job views, results, queues, nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import job_settings, limits
from shared.backoff import MAX_RETRY_DELAY_S, Backoff
from shared.delays import MAX_DELAY_S
from shared.job_status import JobStatus
from shared.objects.ref import ObjectRef

QUEUE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
LIMIT_KEY_PATTERN = r"^[A-Za-z0-9_.:@/+=-]{1,200}$"


class Dependency(BaseModel):
    """A job to wait for, and what to do if it fails or is canceled: fail at once (`fail`) or run anyway (`run`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    on_failure: Literal["fail", "run"] = "fail"


class JobRequest(BaseModel):
    """A job to run: a registered task, its JSON args, and optional routing and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(min_length=1, max_length=200, examples=["echo"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"value": "hello"}])
    queue: str | None = Field(None, pattern=QUEUE_PATTERN, description="default: FERRY_DEFAULT_QUEUE")
    timeout_s: int | None = Field(None, gt=0, le=7 * 86_400, description="default: FERRY_JOB_TIMEOUT_S")
    retries: int | None = Field(
        None, ge=0, le=100, description="extra attempts after a failure; default: FERRY_DEFAULT_RETRIES")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="the same key with the same task, queue and args returns the first job "
        "(`duplicate: true`); with different ones it is a conflict (409); a job that fails for good or is "
        "canceled gives its key back"
    )
    allow_unserved: bool = Field(
        False, description="queue the job even if no live node serves its task on its queue (it waits for one)"
    )
    delay_s: float | None = Field(
        None, ge=0, le=MAX_DELAY_S, examples=[30],
        description="run the job no earlier than this many seconds from now (it waits as `scheduled`); not with run_at")
    run_at: datetime | None = Field(
        None, examples=["2026-11-29T21:00:00Z"],
        description="run the job no earlier than this moment: ISO-8601 with a zone (UTC: `Z`); not with delay_s")
    retry_delay_s: float | None = Field(
        None, ge=0, le=MAX_RETRY_DELAY_S,
        description="wait before a retry (exponential: before the first, doubled each time); default: the task's")
    retry_backoff: Backoff | None = Field(None, description="`fixed` or `exponential`; default: the task's, else fixed")
    retry_max_delay_s: float | None = Field(
        None, ge=0, le=MAX_RETRY_DELAY_S, description="cap on any one wait between attempts; default: the task's")
    retry_jitter: float | None = Field(
        None, ge=0, le=1, description="fraction taken off each wait at random, 0-1 (0.5: a wait d is 0.5d to d)")

    @model_validator(mode="after")
    def _one_due_time(self) -> JobRequest:
        if self.delay_s is not None and self.run_at is not None:
            raise ValueError("give either delay_s or run_at, not both")
        if self.run_at is not None and self.run_at.utcoffset() is None:
            raise ValueError("run_at needs a time zone: write it in UTC with a trailing Z, e.g. 2026-11-29T21:00:00Z")
        if self.depends_on and (self.delay_s is not None or self.run_at is not None):
            raise ValueError("a job with depends_on starts when its dependencies end: it cannot also have delay_s or "
                             "run_at (delay the first job of the chain instead)")
        return self

    depends_on: list[str | Dependency] = Field(
        default_factory=list, max_length=1000,
        description="jobs (ids, or {id, on_failure}) this one waits for; it is `deferred` until they end, then "
        "queued; if one fails or is canceled it fails at once naming it, unless its on_failure is \"run\"")

    @field_validator("depends_on", mode="before")
    @classmethod
    def _dependency_ids(cls, value: Any) -> Any:
        """`Submitted` answers (anything with an `id`) stand for their ids, as elsewhere in the client."""
        if isinstance(value, (list, tuple)):
            return [getattr(v, "id", v) if not isinstance(v, (str, dict, Dependency)) else v for v in value]
        return value

    limit_key: str | None = Field(
        None, pattern=LIMIT_KEY_PATTERN,
        description="the key jobs sharing a concurrency_limit or rate_limit have in common (e.g. a customer id)")
    concurrency_limit: int | None = Field(
        None, ge=1, le=limits.MAX_CONCURRENCY,
        description="at most this many jobs with the same limit_key run at once, cluster-wide; the others wait "
                    "(in Redis, not in a worker) for a slot")
    rate_limit: str | None = Field(
        None, max_length=40, examples=["100/60s"],
        description="at most STARTS jobs with the same limit_key start per PERIOD, e.g. '100/60s', '5/s'")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None:
            limits.parse_rate(value)
        return value

    @model_validator(mode="after")
    def _check_limit_key(self) -> JobRequest:
        has_limit = self.concurrency_limit is not None or self.rate_limit is not None
        if has_limit and not self.limit_key:
            raise ValueError("concurrency_limit and rate_limit apply to the jobs sharing a limit_key: give limit_key "
                             "too (e.g. a customer id)")
        if self.limit_key and not has_limit:
            raise ValueError(f"limit_key {self.limit_key!r} is given without concurrency_limit or rate_limit: "
                             "give one of them (task-wide limits are declared on the @task decorator)")
        return self

    result_ttl_s: int | None = Field(
        None, gt=0, le=job_settings.MAX_TTL_S,
        description="seconds a finished job and its result are kept; default: FERRY_RESULT_TTL_S")
    failure_ttl_s: int | None = Field(
        None, gt=0, le=job_settings.MAX_TTL_S,
        description="seconds a failed or canceled job is kept; default: FERRY_FAILURE_TTL_S")
    meta: dict[str, Any] | None = Field(
        None, description=f"a small JSON object (at most {job_settings.META_MAX_BYTES} bytes) kept with the job in "
        "RQ's own `meta` field (rq-dashboard and `rq.job.Job.meta` show it)", examples=[{"customer": "acme"}])
    tags: list[Annotated[str, Field(pattern=job_settings.TAG_PATTERN)]] = Field(
        default_factory=list, description=f"at most {job_settings.MAX_TAGS} short labels "
        "(letters, digits, `_.:-`, up to 64 characters); list jobs by tag with `GET /v1/jobs?tag=`",
        examples=[["nightly", "customer:acme"]])

    @field_validator("meta")
    @classmethod
    def _bounded_meta(cls, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        return job_settings.check_meta(meta)

    @field_validator("tags")
    @classmethod
    def _few_tags(cls, tags: list[str]) -> list[str]:
        return job_settings.check_tags(tags)


class Submitted(BaseModel):
    """The answer to a submission (`Client.submit`, `submit_many`, `POST /v1/jobs`).

    It reads where a job id is expected: `str(submitted)` is the id, and it is hashable (frozen).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    queue: str
    duplicate: bool = Field(False, description="true when the idempotency key matched an earlier job")

    def __str__(self) -> str:
        return self.id


class AttemptError(BaseModel):
    """One failed attempt of a job: when it ran and what it raised."""

    attempt: int
    started_at: datetime | None = None
    failed_at: datetime | None = None
    error: str


class Progress(BaseModel):
    """How far a running job says it is (`JobContext.progress`)."""

    fraction: float = Field(ge=0, le=1, description="0 to 1")
    message: str | None = None
    data: Any = Field(None, description="small JSON the task attached (at most 4096 bytes)")
    updated_at: datetime | None = None


class JobInfo(BaseModel):
    """A job's state, as stored in Redis."""

    id: str
    task: str | None
    queue: str | None
    status: JobStatus
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker: str | None = None
    error: str | None = None
    retries_left: int | None = None
    attempts: int = 0
    timeout_s: int | None = None
    due_at: datetime | None = Field(None, description="when a delayed job (or a retry with back-off) is due to run")
    attempt_errors: list[AttemptError] = Field(
        default_factory=list, description="the errors of the last failed attempts (at most 10, each cut to 500 chars)")
    waiting_for: str | None = Field(
        None, description="while queued: the limit the job waits for (set aside in Redis, holding no worker)")
    tags: list[str] = Field(default_factory=list, description="the job's tags")
    meta: dict[str, Any] = Field(default_factory=dict, description="the job's meta (RQ's `meta` field)")
    progress: Progress | None = Field(None, description="the latest progress its task reported, if any")


class JobResult(BaseModel):
    """A job's outcome: `ready` is false while it is still queued or started."""

    id: str
    status: JobStatus
    ready: bool
    value: Any = None
    error: str | None = None

    def object_ref(self) -> ObjectRef | None:
        """The ObjectRef when the task returned a large array that was stored as an object."""
        from shared.objects.ref import REF_MARKER

        if isinstance(self.value, dict) and REF_MARKER in self.value:
            return ObjectRef.model_validate(self.value[REF_MARKER])
        return None


class QueueInfo(BaseModel):
    name: str
    queued: int
    started: int
    finished: int
    failed: int
    canceled: int
    scheduled: int = Field(0, description="delayed jobs (and retries waiting out a back-off) not yet due")
    paused: bool = Field(False, description="no worker claims from it (ferry pause, or rq suspend for every queue)")
    waiting: int = Field(0, description="queued jobs set aside for a concurrency or rate limit (not in `queued`)")


class WorkerInfo(BaseModel):
    name: str
    node: str | None
    pid: int | None
    state: str
    current_job: str | None
    queues: list[str]
    successful: int = 0
    failed: int = 0
    last_heartbeat: datetime | None = None


class NodeInfo(BaseModel):
    id: str
    host: str
    pid: int
    processes: int
    queues: list[str]
    started_at: float
    last_heartbeat: float
    alive: bool
    state: str = "running"  # "stopped" after a clean shutdown
    shm_budget_bytes: int
    stats: dict[str, int] = Field(default_factory=dict)


class TaskInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
