"""The job surface's part of a job view (JobInfo): tags, meta and progress, read from the job hash."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared import job_context, job_settings
from shared.models import Progress

# read with the other JobInfo fields (shared/jobs.py)
VIEW_FIELDS = ("meta", job_settings.TAGS_FIELD, job_context.FIELD)


def extra(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """JobInfo's `tags`, `meta` and `progress` from a job hash (tolerant: a plain RQ job has none of them)."""
    return {"tags": job_settings.read_tags(raw.get(job_settings.TAGS_FIELD.encode())),
            "meta": job_settings.read_meta(raw.get(b"meta")),
            "progress": _progress(raw.get(job_context.FIELD.encode()))}


def _progress(raw: bytes | None) -> Progress | None:
    stored = job_context.read(raw)
    try:
        return Progress.model_validate(stored) if stored is not None else None
    except ValidationError:  # written by something else: the view still works
        return None
