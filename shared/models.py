"""Models for everything that crosses HTTP or Redis: job requests, job views, results, queues, nodes."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import job_settings
from shared.objects.ref import ObjectRef

QUEUE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class JobStatus(str, Enum):  # noqa: UP042 - StrEnum would change str(status) ("queued", not "JobStatus.QUEUED")
    """RQ's job states (rq/job.py), plus `unknown` for a hash whose status is missing or foreign."""

    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    STOPPED = "stopped"
    CREATED = "created"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self.value in FINAL_STATUSES

    @classmethod
    def parse(cls, text: str | bytes | None) -> JobStatus:
        """The status a job hash names; UNKNOWN for anything else (a status view never fails)."""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


# The states a job never leaves (its result is written, waiters are told on keys.DONE_CHANNEL); the
# lifecycle scripts get this set from here.
FINAL_STATUSES = frozenset({JobStatus.FINISHED.value, JobStatus.FAILED.value, JobStatus.CANCELED.value})


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
