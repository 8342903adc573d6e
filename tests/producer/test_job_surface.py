"""The job surface over HTTP: idempotency conflicts, per-job settings, tag filters, progress and its SSE stream."""

from __future__ import annotations

import httpx


def test_a_key_conflict_is_409_naming_the_job(api: httpx.Client, served: str) -> None:
    first = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "idempotency_key": "k-1"}).json()
    same = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "idempotency_key": "k-1"}).json()
    other = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 2}, "idempotency_key": "k-1"})
    assert (same["id"], same["duplicate"]) == (first["id"], True)
    assert other.status_code == 409, other.text
    assert f"idempotency key 'k-1' already belongs to job {first['id']}" in other.json()["error"]["message"]
    assert other.json()["error"]["type"] == "IdempotencyConflict" and other.json()["error"]["job_id"] == first["id"]
