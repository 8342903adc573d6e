"""Timestamps in RQ's wire format, so RQ's tools read Ferry's jobs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

RQ_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(UTC)


def rq_format(moment: datetime) -> str:
    return moment.strftime(RQ_DATE_FORMAT)


def rq_now() -> str:
    return rq_format(utcnow())


def rq_parse(text: str | bytes | None) -> datetime | None:
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    for fmt in (RQ_DATE_FORMAT, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def unix_now() -> float:
    return time.time()
