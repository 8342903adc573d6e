"""The job surface's part of a job view (JobInfo): tags, meta and progress, read from the job hash."""

from __future__ import annotations

from typing import Any

from shared import job_settings

VIEW_FIELDS = ("meta", job_settings.TAGS_FIELD)  # read with the other JobInfo fields (shared/jobs.py)


def extra(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """JobInfo's `tags` and `meta` from a job hash (tolerant: a plain RQ job has neither)."""
    return {"tags": job_settings.read_tags(raw.get(job_settings.TAGS_FIELD.encode())),
            "meta": job_settings.read_meta(raw.get(b"meta"))}
