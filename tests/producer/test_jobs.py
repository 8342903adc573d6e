"""Jobs over HTTP: submit, batch, validation errors, idempotency, long-poll results, cancel."""

from __future__ import annotations

import time

import httpx
import redis

from shared import keys
from shared.client import Client


def submit(api: httpx.Client, task: str, args: dict | None = None, **options: object) -> httpx.Response:
    return api.post("/v1/jobs", json={"task": task, "args": args or {}, **options})


def test_a_job_submitted_over_http_runs_on_a_node_and_its_result_comes_back(api: httpx.Client, start_node) -> None:
    node = start_node(processes=1)
    answer = submit(api, "echo", {"value": {"numbers": [1, 2, 3], "text": "héllo"}})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] == "queued" and job["queue"] == "default" and job["duplicate"] is False

    result = api.get(f"/v1/jobs/{job['id']}/result", params={"wait_s": 10})

    assert result.status_code == 200, result.text
    assert result.json() == {
        "id": job["id"], "status": "finished", "ready": True, "value": {"numbers": [1, 2, 3], "text": "héllo"}, "error": None
    }
    info = api.get(f"/v1/jobs/{job['id']}").json()
    assert (info["task"], info["status"], info["queue"]) == ("echo", "finished", "default")
    assert info["worker"].startswith(f"{node.node_id}.")


def test_a_failed_job_answers_200_with_its_error(api: httpx.Client, start_node) -> None:
    start_node(processes=1)
    job = submit(api, "test.fail", {"message": "disk on fire"}, retries=0).json()

    result = api.get(f"/v1/jobs/{job['id']}/result", params={"wait_s": 10})

    assert result.status_code == 200
    body = result.json()
    assert (body["ready"], body["status"]) == (True, "failed")
    assert "disk on fire" in body["error"]


def test_a_batch_is_enqueued_in_request_order(api: httpx.Client, served: str, conn: redis.Redis) -> None:
    jobs = [{"task": "echo", "args": {"value": n}} for n in range(3)] + [{"task": "sleep", "args": {"seconds": 1}, "queue": "low"}]

    answer = api.post("/v1/jobs/batch", json={"jobs": jobs})

    assert answer.status_code == 202, answer.text
    submitted = answer.json()["jobs"]
    assert [s["queue"] for s in submitted] == ["default"] * 3 + ["low"]
    assert len({s["id"] for s in submitted}) == 4
    assert [i.decode() for i in conn.lrange(keys.queue("default"), 0, -1)] == [s["id"] for s in submitted[:3]]
    assert conn.lrange(keys.queue("low"), 0, -1) == [submitted[3]["id"].encode()]


def test_a_batch_with_one_bad_job_enqueues_none_and_names_it(api: httpx.Client, served: str, conn: redis.Redis) -> None:
    jobs = [{"task": "echo"}, {"task": "sleep", "args": {"seconds": "soon"}}, {"task": "echo"}]

    answer = api.post("/v1/jobs/batch", json={"jobs": jobs})

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "InvalidArgs" and error["index"] == 1
    assert [e["field"] for e in error["errors"]] == ["body.jobs.1.args.seconds"]
    assert conn.llen(keys.queue("default")) == 0


def test_an_empty_batch_is_422(api: httpx.Client) -> None:
    answer = api.post("/v1/jobs/batch", json={"jobs": []})
    assert answer.status_code == 422
    assert answer.json()["error"]["errors"][0]["field"] == "body.jobs"


def test_an_unknown_task_is_404_and_the_message_lists_the_known_tasks(api: httpx.Client, served: str, client: Client) -> None:
    answer = submit(api, "ecko", {"value": 1})

    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["type"] == "UnknownTask"
    assert "'ecko'" in error["message"] and "echo" in error["message"] and "array.stats" in error["message"]
    assert error["known"] == client.tasks.names()


def test_invalid_args_are_422_with_the_path_of_each_bad_field(api: httpx.Client, served: str, conn: redis.Redis) -> None:
    answer = submit(api, "sleep", {"seconds": -1, "extra": True})

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "InvalidArgs"
    assert {e["field"] for e in error["errors"]} == {"body.args.seconds", "body.args.extra"}
    assert conn.llen(keys.queue("default")) == 0


def test_invalid_job_options_are_422_with_field_paths(api: httpx.Client) -> None:
    answer = api.post("/v1/jobs", json={"task": "echo", "timeout_s": 0, "queue": "no spaces"})

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "ValidationError"
    assert {e["field"] for e in error["errors"]} == {"body.timeout_s", "body.queue"}


def test_a_body_that_is_not_json_is_400(api: httpx.Client) -> None:
    answer = api.post("/v1/jobs", content=b'{"task": "echo", ', headers={"Content-Type": "application/json"})

    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("request body is not valid JSON")


def test_json_sent_without_a_json_content_type_is_415_and_says_which_header_to_send(api: httpx.Client) -> None:
    # What `curl -d '{...}'` sends when the user forgets -H 'Content-Type: application/json'.
    answer = api.post("/v1/jobs", content=b'{"task": "echo"}', headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert answer.status_code == 415
    assert "Content-Type: application/json" in answer.json()["error"]["message"]


def test_the_same_idempotency_key_and_args_returns_the_first_job(api: httpx.Client, served: str, conn: redis.Redis) -> None:
    first = submit(api, "echo", {"value": 1}, idempotency_key="order-17")
    second = submit(api, "echo", {"value": 1}, idempotency_key="order-17")

    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["id"] == first.json()["id"]
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert conn.llen(keys.queue("default")) == 1


def test_a_queued_job_is_cancelled_once_and_then_conflicts(api: httpx.Client, served: str) -> None:
    job_id = submit(api, "echo", {"value": 1}).json()["id"]  # no node runs it: it stays queued

    cancelled = api.delete(f"/v1/jobs/{job_id}")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "canceled"
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"
    again = api.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "Conflict"


def test_an_unknown_job_is_404_everywhere(api: httpx.Client) -> None:
    for answer in (api.get("/v1/jobs/nope"), api.get("/v1/jobs/nope/result"), api.delete("/v1/jobs/nope")):
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "JobNotFound"
        assert "nope" in answer.json()["error"]["message"]


def test_a_pending_result_is_200_not_ready_after_waiting_wait_s(api: httpx.Client, served: str) -> None:
    job_id = submit(api, "echo").json()["id"]  # no node: it never finishes

    started = time.monotonic()
    answer = api.get(f"/v1/jobs/{job_id}/result", params={"wait_s": 0.6})
    waited = time.monotonic() - started

    assert answer.status_code == 200
    assert (answer.json()["ready"], answer.json()["status"]) == (False, "queued")
    assert 0.6 <= waited < 5


def test_wait_s_is_capped_at_300(api: httpx.Client, served: str) -> None:
    job_id = submit(api, "echo").json()["id"]

    answer = api.get(f"/v1/jobs/{job_id}/result", params={"wait_s": 301})

    assert answer.status_code == 422
    assert answer.json()["error"]["errors"][0]["field"] == "query.wait_s"
