"""/v1/workflows over real HTTP: one request submits a workflow (all or nothing), one reads it, one cancels it."""

from __future__ import annotations

WORKFLOW = {"workflow": {"chain": [
    {"group": [{"task": "echo", "args": {"value": 1}}, {"task": "echo", "args": {"value": 2}}]},
    {"task": "echo", "input": "value"},
]}}


def test_submit_read_and_cancel_over_http(api, served, conn) -> None:
    reply = api.post("/v1/workflows", json=WORKFLOW)
    assert reply.status_code == 202, reply.text
    submitted = reply.json()
    assert len(submitted["jobs"]) == 3
    info = api.get(f"/v1/workflows/{submitted['id']}").json()
    assert info["status"] == "queued" and info["counts"] == {"queued": 2, "deferred": 1}
    canceled = api.delete(f"/v1/workflows/{submitted['id']}").json()
    assert canceled["status"] == "canceled" and canceled["ready"] is True
    assert api.delete(f"/v1/workflows/{submitted['id']}").status_code == 409
    assert api.get("/v1/workflows/nope").status_code == 404


def test_invalid_child_enqueues_nothing(api, served, conn) -> None:
    body = {"workflow": {"group": [{"task": "echo"}, {"task": "no.such.task"}]}}
    reply = api.post("/v1/workflows", json=body)
    assert reply.status_code == 404, reply.text
    assert "workflow.group[1]" in reply.text and "nothing was enqueued" in reply.text
    assert not conn.keys("rq:job:*")
    bad_args = api.post("/v1/workflows", json={"workflow": {"chain": [{"task": "sleep", "args": {"seconds": "x"}}]}})
    assert bad_args.status_code == 422 and not conn.keys("rq:job:*")


def test_job_with_depends_on_over_http(api, served) -> None:
    first = api.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}}).json()
    second = api.post("/v1/jobs", json={"task": "echo", "depends_on": [first["id"]]})
    assert second.status_code == 202 and second.json()["status"] == "deferred"


def test_wait_for_a_workflow_over_http(api, start_node) -> None:
    start_node(processes=1)
    submitted = api.post("/v1/workflows", json=WORKFLOW).json()
    info = api.get(f"/v1/workflows/{submitted['id']}", params={"wait_s": 20}).json()
    assert info["status"] == "finished" and info["result"] == [1, 2]
