"""Models only the HTTP API uses; everything shared with the client and workers lives in `shared.models`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.models import JobRequest, Submitted
from shared.objects.ref import ObjectRef

MAX_BATCH = 10_000


class BatchRequest(BaseModel):
    """Jobs to submit together: all are validated before any is enqueued."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchSubmitted(BaseModel):
    """One answer per submitted job, in request order."""

    jobs: list[Submitted]


class StoredObject(BaseModel):
    """An object in Redis, with when it was stored and how long it has left."""

    ref: ObjectRef
    created_at: float = Field(description="unix seconds")
    ttl_s: int = Field(description="seconds until it expires (-1: never)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    redis: Literal["ok"] = "ok"


class ErrorDetail(BaseModel):
    """`type` is the error's class (e.g. UnknownTask); `message` says what went wrong and how to fix it."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["UnknownTask"])
    message: str = Field(examples=["no task named 'ecko' is registered; known tasks: array.stats, echo, sleep"])


class ErrorBody(BaseModel):
    """Every non-2xx answer has this shape; extra fields (e.g. `errors`, `known`) depend on the type."""

    error: ErrorDetail


def errors(*codes: int, notes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, each with the error envelope as its schema."""
    text = {
        400: "Malformed request (e.g. the body is not valid JSON)",
        401: "Missing or wrong API token (only when FERRY_API_TOKEN is set)",
        404: "Not found",
        409: "The job's state forbids it",
        413: "Body over FERRY_MAX_REQUEST_BYTES (FERRY_MAX_OBJECT_UPLOAD_BYTES for uploads)",
        415: "Body sent with the wrong Content-Type",
        422: "Invalid input; `errors` lists each field path and problem",
        503: "Redis is unreachable; the message names the URL",
        507: "Redis is out of memory",
    }
    text.update(notes or {})
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


# Every authenticated route can answer these.
COMMON_ERRORS = errors(401, 503)
