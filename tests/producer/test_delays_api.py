"""POST /v1/jobs with a due time: scheduled jobs over HTTP, and clear 422s for bad due times."""

from __future__ import annotations

import httpx
import pytest


def test_a_job_with_delay_s_is_scheduled_and_shows_its_due_time(api: httpx.Client, served: str) -> None:
    reply = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "delay_s": 30})
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "scheduled"
    job = api.get(f"/v1/jobs/{reply.json()['id']}").json()
    assert job["status"] == "scheduled" and job["due_at"]
    queues = {q["name"]: q for q in api.get("/v1/queues").json()}
    assert queues["default"]["scheduled"] == 1


@pytest.mark.parametrize(("body", "words"), [
    ({"delay_s": -1}, "greater than or equal to 0"),
    ({"run_at": "tomorrow"}, "datetime"),
    ({"run_at": "2030-01-01T00:00:00"}, "time zone"),
    ({"delay_s": 5, "run_at": "2030-01-01T00:00:00Z"}, "not both"),
])
def test_bad_due_times_are_refused_with_a_clear_422(api: httpx.Client, served: str, body: dict, words: str) -> None:
    reply = api.post("/v1/jobs", json={"task": "echo", "args": {}, **body})
    assert reply.status_code == 422, reply.text
    assert words in reply.text
