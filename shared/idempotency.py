"""Idempotency keys: the same key and the same job return the first job; the same key and a different job is a
conflict; a job that fails for good or is canceled gives its key back.

`ferry:idem:<key>` names the job that holds the key (`ENQUEUE` takes it, see lua_jobsurface.py); the job
hash keeps the key (`ferry_idem_key`) and a fingerprint of what was asked (`ferry_idem_fp`: task, queue and
validated args), so a second submission is compared in the same atomic step that would enqueue it.

Why release on failure and cancel: a key exists so that a retried *request* never runs a job twice. A job
that finished keeps its key (for its result TTL): submitting again returns it. A job that failed for good
or was canceled produced nothing, and its caller's natural move is to submit again: the key is freed in
the same script that fails or cancels the job (only if it still names that job), so the next submission
with that key enqueues a new job. `ferry requeue` of a failed job does not take the key back.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared import keys
from shared.errors import IdempotencyConflict

KEY_FIELD = "ferry_idem_key"  # the job hash field holding the Redis key of its idempotency key
FINGERPRINT_FIELD = "ferry_idem_fp"

# ENQUEUE's first reply element: 1 created, 0 the key's job (same request), 2 the key's job (different request)
CREATED, DUPLICATE, CONFLICT = 1, 0, 2


def fingerprint(task: str, queue: str, args: dict[str, Any]) -> str:
    """What makes two submissions 'the same job': task, queue and the validated args, canonical JSON."""
    text = json.dumps([task, queue, args], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fields(key: str | None, task: str, queue: str, args: dict[str, Any]) -> dict[str, str]:
    """The job hash fields a job with an idempotency key carries (none without one)."""
    if not key:
        return {}
    return {KEY_FIELD: keys.idempotency(key), FINGERPRINT_FIELD: fingerprint(task, queue, args)}


def conflict(key: str, job_id: str, task: str | None = None, queue: str | None = None) -> IdempotencyConflict:
    """The one error for a reused key, the same words in the client, the API (409) and the CLI (exit 5)."""
    what = f" ({task} on queue {queue})" if task and queue else ""
    return IdempotencyConflict(
        f"idempotency key {key!r} already belongs to job {job_id}{what}, submitted with a different task, queue or "
        "args; use a new key for a different job (a key is given back when its job fails for good or is canceled)",
        key=key, job_id=job_id)
