"""Ferry's errors and the CLI's exit codes. Every error is a FerryError with a message a user can act on.

FerryError
├── ConfigError            bad or missing settings, a malformed URL   (exit 2, HTTP 500)
├── RedisUnavailable       Redis cannot be reached                    (exit 3, HTTP 503)
├── Unauthorized           missing or wrong API token                 (HTTP 401)
├── NotFound
│   ├── UnknownTask        no task registered under that name         (exit 4, HTTP 404)
│   ├── JobNotFound        no job with that id (or it expired)        (exit 4, HTTP 404)
│   └── ObjectNotFound     no object with that id (or it expired)     (exit 4, HTTP 404)
├── InvalidArgs            a task's arguments fail validation         (exit 2, HTTP 422)
├── InvalidRequest         any other malformed input                  (exit 2, HTTP 400)
│   └── UnsupportedMediaType  a body of a type the route does not read (HTTP 415)
├── Conflict               the job's status forbids the action          (exit 5, HTTP 409)
│   ├── TaskNotServed      no live node serves the task on that queue   (exit 5, HTTP 409)
│   └── IdempotencyConflict  the key names a job with other args        (exit 5, HTTP 409)
├── ObjectTooLarge         over a configured size limit               (exit 2, HTTP 413)
├── ShmFull                no room in the node's shared memory        (exit 6, HTTP 507)
├── RedisFull              Redis refused a write at its maxmemory     (exit 6, HTTP 507)
└── JobExecutionError      raised inside a worker while running a job (never leaves the worker)
    ├── JobTimeout
    └── JobCanceled

The CLI prints the message as one red line and exits with `exit_code`; the API answers with `http_status`
and the same message. The exit codes below are the only place their numbers are written (README's table
and `ferry --help` say the same).
"""

from __future__ import annotations

from typing import Any

# Exit codes of every `ferry` command (dramatiq's style: named, one comment each).
EXIT_OK = 0  # done, or nothing to do
EXIT_FAILED = 1  # the answer is no: the job failed or was canceled, the demo's check failed, the node is not healthy
EXIT_USAGE = 2  # bad input or settings: an option, an argument, a FERRY_* variable, a malformed URL, a busy port
EXIT_REDIS = 3  # Redis cannot be reached, or what answers at FERRY_REDIS_URL is not Redis
EXIT_NOT_FOUND = 4  # no such job, task or object (or it expired)
EXIT_CONFLICT = 5  # the job's status forbids the action (e.g. canceling a finished job)
EXIT_FULL = 6  # the node's shared memory or Redis's memory is full
EXIT_NOT_READY = 7  # waited, and the job has not ended yet (its result is not ready: the API says `ready: false`)
EXIT_INTERNAL = 70  # an unexpected error (a bug, or a service `ferry up` started died): see the traceback or log

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok (or nothing to do)",
    EXIT_FAILED: "the job failed or was canceled (`ferry health`: not healthy)",
    EXIT_USAGE: "bad input or settings (including a malformed FERRY_REDIS_URL or a busy port)",
    EXIT_REDIS: "Redis unreachable (or not Redis at FERRY_REDIS_URL)",
    EXIT_NOT_FOUND: "not found",
    EXIT_CONFLICT: "conflict (e.g. canceling a finished job)",
    EXIT_FULL: "shared memory or Redis memory full",
    EXIT_NOT_READY: "the job has not ended after --wait-s",
    EXIT_INTERNAL: "unexpected error (a bug, or a service died: see its log)",
}


class FerryError(Exception):
    """Base of every error Ferry raises on purpose."""

    exit_code: int = EXIT_FAILED
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(FerryError):
    """The settings are missing or invalid."""

    exit_code = EXIT_USAGE


class RedisUnavailable(FerryError):
    """Redis cannot be reached at the configured URL."""

    exit_code = EXIT_REDIS
    http_status = 503


class Unauthorized(FerryError):
    """The request lacks the API token or carries a wrong one."""

    exit_code = EXIT_USAGE
    http_status = 401


class NotFound(FerryError):
    """The named thing does not exist (or has expired)."""

    exit_code = EXIT_NOT_FOUND
    http_status = 404


class UnknownTask(NotFound):
    """No task is registered under that name."""


class JobNotFound(NotFound):
    """No job has that id; it may have expired after its result TTL."""


class ObjectNotFound(NotFound):
    """No object has that id; it may have expired or been deleted."""


class InvalidArgs(FerryError):
    """A task's arguments fail its input model."""

    exit_code = EXIT_USAGE
    http_status = 422


class InvalidRequest(FerryError):
    """Malformed input other than task arguments."""

    exit_code = EXIT_USAGE
    http_status = 400


class UnsupportedMediaType(InvalidRequest):
    """The body's Content-Type is not one the route reads."""

    http_status = 415


class Conflict(FerryError):
    """The job's status forbids the operation (e.g. canceling a finished job)."""

    exit_code = EXIT_CONFLICT
    http_status = 409


class TaskNotServed(Conflict):
    """No live node serves the task on the job's queue (the caller may still queue it on purpose)."""


class IdempotencyConflict(Conflict):
    """The idempotency key already names a job with a different task, queue or args."""


class ObjectTooLarge(FerryError):
    """The data exceeds a configured size limit."""

    exit_code = EXIT_USAGE
    http_status = 413


class ShmFull(FerryError):
    """The node's shared memory cannot hold the object."""

    exit_code = EXIT_FULL
    http_status = 507


# The one fix for a full Redis, whichever surface the write came through (CLI, client, HTTP upload or submit).
REDIS_FULL_FIX = (
    "delete objects you no longer need (`ferry objects delete ID`, `DELETE /v1/objects/{id}` or `Client.delete`), "
    "shorten FERRY_OBJECT_TTL_S, or raise Redis's maxmemory (docker compose: FERRY_REDIS_MAXMEMORY)"
)


class RedisFull(FerryError):
    """Redis refused a write because it reached its maxmemory."""

    exit_code = EXIT_FULL
    http_status = 507

    @classmethod
    def refused(cls, what: str, cause: BaseException, where: str = "Redis") -> RedisFull:
        """The error for a write Redis refused at its maxmemory: the same fix on every surface."""
        return cls(f"{where} is out of memory and refused {what} ({cause}); {REDIS_FULL_FIX}")


class JobExecutionError(FerryError):
    """Raised inside a worker process while a job runs."""


class JobTimeout(JobExecutionError):
    """The job ran past its timeout and was interrupted."""


class JobCanceled(JobExecutionError):
    """The job was canceled while it ran."""


# Errors that say the job itself is wrong: retrying cannot help, so the worker fails it at once.
# A missing object cannot come back by itself (objects live while jobs need them; a forced delete means it).
PERMANENT_ERRORS: tuple[type[FerryError], ...] = (UnknownTask, InvalidArgs, InvalidRequest, JobCanceled, ObjectNotFound)
