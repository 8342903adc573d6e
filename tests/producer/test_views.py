"""The JSON views the dashboard reads: job listing with filters, a job in full, requeue, workers, throughput."""

from __future__ import annotations

import json

import httpx
import redis

from shared import keys
from shared.client import Client


def test_jobs_are_listed_by_status_queue_and_task_most_recent_first(api: httpx.Client, client: Client,
                                                                    start_node) -> None:
    start_node(processes=1, queues="high,default")
    done = [client.submit("echo", {"value": i}).id for i in range(3)]
    failed = client.submit("test.fail", {}, retries=0, queue="high").id
    for job in [*done, failed]:
        assert client.result(job, wait_s=30).ready
    waiting = client.submit("echo", {"value": "w"}, queue="low", allow_unserved=True).id  # no node serves low

    everything = api.get("/v1/jobs").json()
    assert {j["id"] for j in everything} == {*done, failed, waiting}
    assert everything[0]["id"] == waiting  # most recently active first
    assert [j["id"] for j in api.get("/v1/jobs", params={"status": "failed"}).json()] == [failed]
    assert [j["id"] for j in api.get("/v1/jobs", params={"queue": "low"}).json()] == [waiting]
    assert {j["id"] for j in api.get("/v1/jobs", params={"task": "echo", "status": "finished"}).json()} == set(done)
    assert len(api.get("/v1/jobs", params={"limit": 2}).json()) == 2
    assert api.get("/v1/jobs", params={"task": "nothing.like.it"}).json() == []
    for bad in ({"status": "running"}, {"queue": "no spaces"}, {"limit": 0}):
        assert api.get("/v1/jobs", params=bad).status_code == 422


def test_a_jobs_details_carry_args_traceback_and_progress(api: httpx.Client, client: Client, conn: redis.Redis,
                                                          start_node) -> None:
    start_node(processes=1)
    failed = client.submit("test.fail", {"message": "on purpose"}, retries=0).id
    finished = client.submit("echo", {"value": [1, 2]}).id
    for job in (failed, finished):
        assert client.result(job, wait_s=30).ready
    queued = client.submit("echo", {"value": 3}, queue="parked", allow_unserved=True).id  # no node serves it
    conn.hset(keys.job(queued), "meta", json.dumps({"ferry": 1, "progress": 0.25}))

    f = api.get(f"/v1/jobs/{failed}/details").json()
    ok = api.get(f"/v1/jobs/{finished}/details").json()
    waiting = api.get(f"/v1/jobs/{queued}/details").json()

    assert f["job"]["status"] == "failed" and f["args"] == {"message": "on purpose"}
    assert "RuntimeError: on purpose" in f["traceback"]
    assert ok["result"]["value"] == [1, 2] and ok["traceback"] is None
    assert waiting["progress"] == 0.25 and waiting["result"] is None
    assert api.get("/v1/jobs/nope/details").status_code == 404


def test_only_a_failed_job_is_requeued_and_then_runs_again(api: httpx.Client, client: Client, start_node,
                                                           tmp_path) -> None:
    start_node(processes=1)
    marker = str(tmp_path / "flaky")
    job = client.submit("test.flaky", {"marker": marker}, retries=0).id  # fails the first time only
    assert client.result(job, wait_s=30).status == "failed"
    done = client.submit("echo", {"value": 1}).id
    assert client.result(done, wait_s=30).status == "finished"

    again = api.post(f"/v1/jobs/{job}/requeue")
    refused = api.post(f"/v1/jobs/{done}/requeue")

    assert again.status_code == 200 and again.json()["status"] in ("queued", "started", "finished")
    assert client.result(job, wait_s=30).status == "finished"
    assert refused.status_code == 409 and "only failed jobs" in refused.json()["error"]["message"]
    assert api.post("/v1/jobs/nope/requeue").status_code == 404


def test_workers_and_throughput(api: httpx.Client, client: Client, start_node) -> None:
    node = start_node(processes=2)
    jobs = [client.submit("echo", {"value": i}).id for i in range(5)]
    assert all(client.result(j, wait_s=30).status == "finished" for j in jobs)

    workers = api.get("/v1/workers").json()
    rate = api.get("/v1/views/throughput", params={"window_s": 60, "step_s": 10}).json()

    assert sorted(w["node"] for w in workers) == [node.node_id, node.node_id]
    assert sum(w["successful"] for w in workers) == 5
    assert len(rate["finished"]) == 6 and sum(rate["finished"]) == 5 and sum(rate["failed"]) == 0
