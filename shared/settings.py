"""The one settings object shared by producer, workers, CLI and client; each field reads FERRY_<NAME>."""

from __future__ import annotations

import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import up_state
from shared.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# No "_" in node ids: segment names are `ferry_<node>_<object>`, and one node's prefix must never match another's.
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,48}$")


def _default_node_id() -> str:
    """One node per host by default; in docker each replica's hostname is its container id."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:48] or "node"


def _split_names(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Configuration shared by producer, worker and CLI; each field reads FERRY_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", env_file=".env", extra="ignore")

    redis_url: str | None = None  # None: use the server `ferry up` started, if any
    api_token: SecretStr | None = None  # None: the API is open (fine on loopback only)
    node_id: str = Field(default_factory=_default_node_id)
    queues: Annotated[list[str], NoDecode] = ["high", "default", "low"]  # priority order
    default_queue: str = "default"
    task_modules: Annotated[list[str], NoDecode] = []  # e.g. "myapp.tasks,otherapp.tasks"

    job_timeout_s: int = Field(300, gt=0)
    default_retries: int = Field(2, ge=0)
    result_ttl_s: int = Field(86_400, gt=0)  # finished jobs and their results
    failure_ttl_s: int = Field(7 * 86_400, gt=0)  # failed jobs stay for inspection
    heartbeat_interval_s: float = Field(2.0, gt=0)
    abandoned_after_s: int = Field(20, gt=0)  # a started job with no heartbeat this long is retried
    reap_interval_s: float = Field(5.0, gt=0)
    idle_poll_s: float = Field(1.0, gt=0)  # idle workers also look for jobs this often: plain RQ publishes no wake-up
    # Bound on a job's data and result, compressed or not: nothing read from Redis is inflated beyond it.
    # Well above max_request_bytes, so anything the API accepts fits.
    max_job_data_bytes: int = Field(64 * 1024 * 1024, gt=0)
    prefetch_jobs: int = Field(4, ge=1, le=100)  # jobs one claim may take while the queue is busy and jobs are short

    processes: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)

    object_ttl_s: int = Field(86_400, gt=0)
    object_chunk_bytes: int = Field(2 * 1024 * 1024, gt=0, le=512 * 1024 * 1024)  # Redis's largest string: 512 MB
    result_object_threshold_bytes: int = Field(64 * 1024, ge=0)  # larger array results become objects
    shm_budget_bytes: int | None = Field(None, gt=0)  # None: 80% of /dev/shm's free space at node start

    # a waiting result request re-checks its job this often (a lost wake-up's bound)
    result_recheck_s: float = Field(5.0, gt=0)
    api_workers: int = Field(1, gt=0)  # producer processes (`ferry producer --workers`)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, gt=0, lt=65536)
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0)  # JSON bodies
    max_object_upload_bytes: int = Field(2 * 1024**3, gt=0)  # POST /v1/objects
    state_dir: Path = Path.home() / ".cache" / "ferry"  # where `ferry up` says which server it runs
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line (shared/logs.py)
    access_log: bool = True  # the producer logs one line per request (method, path, status, duration)
    # Delayed jobs: one node at a time holds the promoter lease (shared/delays.py); another takes over when it lapses.
    promoter_lease_s: float = Field(3.0, gt=0, le=300)
    scheduled_poll_s: float = Field(0.5, gt=0, le=60)  # the promoter looks this often at least (RQ never wakes it)
    promote_batch_jobs: int = Field(1000, ge=1, le=10_000)  # due jobs moved per script call
    # periodic jobs (shared/schedules.py): a tick not fired this long after its time is "missed" (catch_up policy)
    cron_grace_s: float = Field(10.0, gt=0)
    # A job whose input objects some node holds is offered to that node first, for this long; then to any
    # node. Read where jobs are submitted (client, producer); 0 turns placement off.
    placement_delay_s: float = Field(0.2, ge=0, le=60)
    # Large array results reach the node's memory (and the job reports done) before their write to Redis ends;
    # readers elsewhere wait for it (shared/handoff.py). False: written to Redis before the job reports done.
    result_write_behind: bool = True
    # A put on a host where a live node of this deployment runs copies the bytes into that node's shared memory
    # too (its first job reads them there: nothing fetched from Redis); shared/objects/local_put.py.
    put_local_copy: bool = True
    # ... and returns once they are there: that node writes them to Redis behind the put (readers elsewhere wait
    # for it). False, or `put(..., durable=True)`: put returns once the object is in Redis.
    put_write_behind: bool = True
    progress_interval_s: float = Field(0.25, ge=0)  # a task's progress is written at most this often (the last is kept)
    max_event_streams: int = Field(200, gt=0)  # open `GET /v1/jobs/{id}/events` streams per producer process

    _split_queues = field_validator("queues", "task_modules", mode="before")(_split_names)

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if not NODE_ID_PATTERN.match(value):
            raise ValueError("use 1-48 characters from A-Z a-z 0-9 - (no underscore)")
        return value

    @field_validator("default_queue")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("use 1-64 characters from A-Z a-z 0-9 _ -")
        return value

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one queue")
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"queue name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
        return value

    def resolved_redis_url(self) -> str:
        """FERRY_REDIS_URL, else the URL of a running `ferry up` (shared/up_state.py), else a ConfigError saying why."""
        if self.redis_url:
            return self.redis_url
        running = up_state.read(self.state_dir)
        if running:
            return running.redis_url
        raise ConfigError(
            "FERRY_REDIS_URL is not set and no `ferry up` is running: "
            "set FERRY_REDIS_URL=redis://HOST:6379/0, or run `ferry up` to start a private server."
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FERRY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
