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


def test_jobs_are_listed_by_tag_with_exact_filters(api: httpx.Client, served: str) -> None:
    def post(**job: object) -> str:
        answer = api.post("/v1/jobs", json={"args": {"value": 1}, "task": "echo", **job})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    a = post(tags=["batch-7"], meta={"owner": "ops"}, result_ttl_s=60)
    b = post(tags=["batch-7"], queue="high")
    post(tags=["batch-70"])

    listed = api.get("/v1/jobs", params={"tag": "batch-7"}).json()
    assert [j["id"] for j in listed] == [b, a]
    assert listed[1]["tags"] == ["batch-7"] and listed[1]["meta"] == {"owner": "ops"}
    assert [j["id"] for j in api.get("/v1/jobs", params={"tag": "batch-7", "queue": "high"}).json()] == [b]
    assert api.get("/v1/jobs", params={"tag": "batch-7", "status": "finished"}).json() == []
    assert api.get("/v1/jobs", params={"tag": "bad,tag"}).status_code == 422


def test_oversized_meta_and_too_many_tags_are_422_naming_the_bound(api: httpx.Client, served: str) -> None:
    big = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "meta": {"x": "y" * 5000}})
    many = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "tags": [f"t{i}" for i in range(11)]})
    assert (big.status_code, many.status_code) == (422, 422)
    assert "above the bound of 4,096 bytes" in big.text and "at most 10" in many.text
