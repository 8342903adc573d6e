"""Ferry's errors. Every one is a FerryError with a message a user can act on.

FerryError
├── ConfigError            bad or missing settings                    (exit 2, HTTP 500)
├── RedisUnavailable       Redis cannot be reached                    (exit 3, HTTP 503)
├── Unauthorized           missing or wrong API token                 (HTTP 401)
├── NotFound
│   ├── UnknownTask        no task registered under that name         (exit 4, HTTP 404)
│   ├── JobNotFound        no job with that id (or it expired)        (exit 4, HTTP 404)
│   └── ObjectNotFound     no object with that id (or it expired)     (exit 4, HTTP 404)
├── InvalidArgs            a task's arguments fail validation         (exit 2, HTTP 422)
├── InvalidRequest         any other malformed input                  (exit 2, HTTP 400)
│   └── UnsupportedMediaType  a body of a type the route does not read (HTTP 415)
├── Conflict               the job is in a state that forbids it      (exit 5, HTTP 409)
├── ObjectTooLarge         over a configured size limit               (exit 2, HTTP 413)
├── ShmFull                no room in the node's shared memory        (exit 6, HTTP 507)
├── RedisFull              Redis refused a write at its maxmemory     (exit 6, HTTP 507)
└── JobExecutionError      raised inside a worker while running a job (never leaves the worker)
    ├── JobTimeout
    └── JobCanceled

The CLI prints the message as one red line and exits with `exit_code`; the API answers with `http_status`
and the same message.
"""

from __future__ import annotations

from typing import Any


class FerryError(Exception):
    """Base of every error Ferry raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(FerryError):
    """The settings are missing or invalid."""

    exit_code = 2


class RedisUnavailable(FerryError):
    """Redis cannot be reached at the configured URL."""

    exit_code = 3
    http_status = 503


class Unauthorized(FerryError):
    """The request lacks the API token or carries a wrong one."""

    exit_code = 2
    http_status = 401


class NotFound(FerryError):
    """The named thing does not exist (or has expired)."""

    exit_code = 4
    http_status = 404


class UnknownTask(NotFound):
    """No task is registered under that name."""


class JobNotFound(NotFound):
    """No job has that id; it may have expired after its result TTL."""


class ObjectNotFound(NotFound):
    """No object has that id; it may have expired or been deleted."""


class InvalidArgs(FerryError):
    """A task's arguments fail its input model."""

    exit_code = 2
    http_status = 422


class InvalidRequest(FerryError):
    """Malformed input other than task arguments."""

    exit_code = 2
    http_status = 400


class UnsupportedMediaType(InvalidRequest):
    """The body's Content-Type is not one the route reads."""

    http_status = 415


class Conflict(FerryError):
    """The job's state forbids the operation (e.g. cancelling a finished job)."""

    exit_code = 5
    http_status = 409


class ObjectTooLarge(FerryError):
    """The data exceeds a configured size limit."""

    exit_code = 2
    http_status = 413


class ShmFull(FerryError):
    """The node's shared memory cannot hold the object."""

    exit_code = 6
    http_status = 507


class RedisFull(FerryError):
    """Redis refused a write because it reached its maxmemory."""

    exit_code = 6
    http_status = 507


class JobExecutionError(FerryError):
    """Raised inside a worker process while a job runs."""


class JobTimeout(JobExecutionError):
    """The job ran past its timeout and was interrupted."""


class JobCanceled(JobExecutionError):
    """The job was cancelled while it ran."""


# Errors that say the job itself is wrong: retrying cannot help, so the worker fails it at once.
# A missing object cannot come back by itself (objects live while jobs need them; a forced delete means it).
PERMANENT_ERRORS: tuple[type[FerryError], ...] = (UnknownTask, InvalidArgs, InvalidRequest, JobCanceled, ObjectNotFound)
