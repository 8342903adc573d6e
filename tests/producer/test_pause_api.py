"""Pause and resume over HTTP, and limits given with a job through the API."""

from __future__ import annotations

from shared import keys


def test_pause_and_resume_one_queue_over_http(api, conn):
    paused = api.post("/v1/queues/reports/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["name"] == "reports" and paused.json()["paused"] is True
    assert conn.sismember(keys.PAUSED_QUEUES, "reports")
    listed = {q["name"]: q for q in api.get("/v1/queues").json()}
    assert listed["reports"]["paused"] is True and listed["default"]["paused"] is False
    resumed = api.post("/v1/queues/reports/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert not conn.exists(keys.PAUSED_QUEUES)


def test_pause_everything_over_http_is_rq_suspend(api, conn):
    answer = api.post("/v1/queues/pause")
    assert answer.status_code == 200 and all(q["paused"] for q in answer.json())
    assert conn.exists(keys.RQ_SUSPENDED)
    assert api.post("/v1/queues/resume").status_code == 200
    assert not conn.exists(keys.RQ_SUSPENDED)


def test_a_malformed_queue_name_is_a_422(api):
    answer = api.post("/v1/queues/bad%20name!/pause")
    assert answer.status_code == 422


def test_bad_limits_in_a_job_are_a_422_naming_the_field(api, served):
    zero = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "limit_key": "c", "concurrency_limit": 0})
    assert zero.status_code == 422 and "concurrency_limit" in zero.text
    rate = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "limit_key": "c", "rate_limit": "fast"})
    assert rate.status_code == 422 and "STARTS/PERIOD" in rate.text
    keyless = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "concurrency_limit": 2})
    assert keyless.status_code == 422 and "limit_key" in keyless.text


def test_a_job_limit_given_over_http_is_written_with_the_job(api, served, conn):
    answer = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "limit_key": "customer-7",
                                        "concurrency_limit": 3, "rate_limit": "10/s"})
    assert answer.status_code == 202, answer.text
    written = conn.hget(keys.job(answer.json()["id"]), "ferry_limits").decode()
    assert '"k":"ferry:limit:key:customer-7"' in written and '"n":3' in written and '"per_ms":1000' in written
