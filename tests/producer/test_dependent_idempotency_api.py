"""POST /v1/jobs with depends_on and an idempotency key: a reused key with other content is a 409 (gaps item 2)."""

from __future__ import annotations

import httpx


def test_a_dependent_jobs_key_conflict_is_409_naming_the_job(api: httpx.Client, served: str) -> None:
    first = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}}).json()
    job = {"task": "echo", "args": {"value": 2}, "depends_on": [first["id"]], "idempotency_key": "dk-http"}
    one = api.post("/v1/jobs", json=job)
    same = api.post("/v1/jobs", json=job)
    other = api.post("/v1/jobs", json={**job, "args": {"value": 3}})
    assert one.status_code == 202 and one.json()["status"] == "deferred", one.text
    assert (same.json()["id"], same.json()["duplicate"]) == (one.json()["id"], True)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["type"] == "IdempotencyConflict"
    assert f"idempotency key 'dk-http' already belongs to job {one.json()['id']}" in other.json()["error"]["message"]
