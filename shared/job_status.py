"""A job's status: RQ's state words, which of them are final, and what a result entry's type says.

Its own module because both sides of the lifecycle need it: the Lua scripts (shared/lifecycle/lua.py takes
FINAL_STATUSES from here) and the models and views above them.
"""

from __future__ import annotations

from enum import Enum


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

# A result-stream entry's `type` (RQ's Result.Type): the final status it records.
RESULT_TYPE_STATUS = {b"1": JobStatus.FINISHED, b"2": JobStatus.FAILED, b"3": JobStatus.CANCELED}
