"""The job surface over HTTP: idempotency conflicts, per-job settings, tag filters, progress and its SSE stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support import wait_for


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


def _go(gate: Path, step: int) -> None:
    (gate / f"go{step}").touch()


def test_progress_is_seen_rising_over_http_get(api: httpx.Client, start_node, tmp_path: Path) -> None:
    start_node(processes=1)
    job_id = api.post("/v1/jobs", json={"task": "test.steps",
                                        "args": {"gate_dir": str(tmp_path), "steps": 2}}).json()["id"]

    def fraction() -> float | None:
        progress = api.get(f"/v1/jobs/{job_id}").json()["progress"]
        return progress["fraction"] if progress else None

    assert fraction() is None
    _go(tmp_path, 0)
    wait_for(lambda: fraction() == 0.5, timeout=10, what="progress 0.5")
    assert api.get(f"/v1/jobs/{job_id}").json()["progress"]["message"] == "step 1 of 2"
    _go(tmp_path, 1)
    wait_for(lambda: fraction() == 1.0, timeout=10, what="progress 1.0")


def _events(response: httpx.Response) -> Iterator[dict]:
    data = None
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = json.loads(line[len("data: "):])
        elif line == "" and data is not None:
            yield data
            data = None


def test_the_sse_stream_sends_each_change_and_ends_when_the_job_is_final(api: httpx.Client, start_node,
                                                                         tmp_path: Path) -> None:
    start_node(processes=1)
    job_id = api.post("/v1/jobs", json={"task": "test.steps",
                                        "args": {"gate_dir": str(tmp_path), "steps": 2}}).json()["id"]
    seen = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=20) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for event in _events(response):  # the stream ends by itself after the final state
            progress = event["progress"]["fraction"] if event["progress"] else None
            seen.append((event["status"], progress))
            if event["status"] == "started" and progress is None:
                _go(tmp_path, 0)
            elif progress == 0.5:
                _go(tmp_path, 1)
    assert seen[-1] == ("finished", 1.0)
    assert ("started", 0.5) in seen and seen.index(("started", 0.5)) < len(seen) - 1
    fractions = [p for _, p in seen if p is not None]
    assert fractions == sorted(fractions)
    assert api.get(f"/v1/jobs/{'0' * 32}/events").status_code == 404


def test_event_streams_are_bounded_per_producer(start_producer, served: str, redis_url: str) -> None:
    producer = start_producer(FERRY_MAX_EVENT_STREAMS="1")
    job_id = producer.http.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}}).json()["id"]
    with producer.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=20) as first:
        assert first.status_code == 200
        next(_events(first))
        second = producer.http.get(f"/v1/jobs/{job_id}/events")
        assert second.status_code == 503 and "FERRY_MAX_EVENT_STREAMS (1)" in second.json()["error"]["message"]
