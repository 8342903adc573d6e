"""The service around the routes: auth, body limits, Redis down, health, OpenAPI, metadata routes, start-up errors."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import httpx
import redis
import uvicorn

from services.producer.app import create_app
from shared import keys
from shared.embedded import free_port
from tests.support import REPO, wait_for


def test_healthz_reports_redis_ok(api: httpx.Client) -> None:
    answer = api.get("/healthz")

    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "redis": "ok"})


def test_a_token_is_required_when_one_is_set_except_for_healthz(start_producer, conn: redis.Redis) -> None:
    producer = start_producer(FERRY_API_TOKEN="s3cret")
    url = producer.url

    missing = httpx.get(f"{url}/v1/queues")
    wrong = httpx.get(f"{url}/v1/queues", headers={"Authorization": "Bearer s3cre"})
    submit = httpx.post(f"{url}/v1/jobs", json={"task": "echo"})
    right = httpx.get(f"{url}/v1/queues", headers={"Authorization": "Bearer s3cret"})

    assert (missing.status_code, wrong.status_code, submit.status_code) == (401, 401, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "Unauthorized" and "Authorization: Bearer" in missing.json()["error"]["message"]
    assert conn.llen(keys.queue("default")) == 0
    assert right.status_code == 200
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_bodies_over_their_route_limit_are_413_even_when_streamed(start_producer, conn: redis.Redis) -> None:
    producer = start_producer(FERRY_MAX_REQUEST_BYTES="2000", FERRY_MAX_OBJECT_UPLOAD_BYTES="10000")
    api = producer.http
    big_job = {"task": "echo", "args": {"value": "x" * 3000}}

    declared = api.post("/v1/jobs", json=big_job)
    streamed = api.post("/v1/jobs", content=iter([b'{"task": "echo", "args": {"value": "', b"x" * 3000, b'"}}']),
                        headers={"Content-Type": "application/json"})  # chunked: no Content-Length to trust

    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        error = answer.json()["error"]
        assert error["setting"] == "FERRY_MAX_REQUEST_BYTES" and "2000" in error["message"]
        assert "FERRY_MAX_REQUEST_BYTES" in error["message"]
    assert conn.llen(keys.queue("default")) == 0

    raw = {"Content-Type": "application/octet-stream"}
    assert api.post("/v1/objects", content=b"\x00" * 5000, headers=raw).status_code == 201  # over the JSON limit: fine here
    for answer in (api.post("/v1/objects", content=b"\x00" * 20_000, headers=raw),
                   api.post("/v1/objects", content=iter([b"\x00" * 4000] * 5), headers=raw)):
        assert answer.status_code == 413
        assert answer.json()["error"]["setting"] == "FERRY_MAX_OBJECT_UPLOAD_BYTES"


def test_redis_down_is_503_with_a_message_naming_the_url(start_producer) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    api = start_producer(FERRY_REDIS_URL=dead_url).http

    started = time.monotonic()
    queues = api.get("/v1/queues")
    submit = api.post("/v1/jobs", json={"task": "echo"})
    health = api.get("/healthz")

    assert time.monotonic() - started < 10
    for answer in (queues, submit, health):
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["type"] == "RedisUnavailable"
        assert dead_url in error["message"] and "FERRY_REDIS_URL" in error["message"]


def test_openapi_documents_every_route(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()

    assert spec["info"]["title"] == "Ferry"
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == {
        ("POST", "/v1/jobs"), ("POST", "/v1/jobs/batch"), ("GET", "/v1/jobs/{job_id}"),
        ("GET", "/v1/jobs/{job_id}/result"), ("DELETE", "/v1/jobs/{job_id}"),
        ("POST", "/v1/objects"), ("GET", "/v1/objects"), ("GET", "/v1/objects/{object_id}"),
        ("DELETE", "/v1/objects/{object_id}"),
        ("GET", "/v1/tasks"), ("GET", "/v1/queues"), ("GET", "/v1/nodes"), ("GET", "/healthz"),
        # the dashboard's views and the metrics (issue 10)
        ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}/details"), ("POST", "/v1/jobs/{job_id}/requeue"),
        ("GET", "/v1/workers"), ("GET", "/v1/views/throughput"), ("GET", "/v1/views/objects"), ("GET", "/metrics"),
        # periodic jobs (issue 9, cron)
        ("POST", "/v1/schedules"), ("GET", "/v1/schedules"), ("GET", "/v1/schedules/{name}"),
        ("POST", "/v1/schedules/{name}/pause"), ("POST", "/v1/schedules/{name}/resume"),
        ("DELETE", "/v1/schedules/{name}"),
        # workflows (issue 8)
        ("POST", "/v1/workflows"), ("GET", "/v1/workflows/{workflow_id}"), ("DELETE", "/v1/workflows/{workflow_id}"),
        # pause and resume (issue 9)
        ("POST", "/v1/queues/pause"), ("POST", "/v1/queues/resume"), ("POST", "/v1/queues/{name}/pause"),
        ("POST", "/v1/queues/{name}/resume"),
        ("GET", "/v1/jobs/{job_id}/events"),  # a job's status and progress, live (issue 9)
    }
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method} {path} has no summary"
    assert "202" in spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert "application/x-npy" in spec["paths"]["/v1/objects"]["post"]["requestBody"]["content"]
    assert api.get("/docs").status_code == 200


def test_tasks_list_what_the_live_nodes_serve_with_schemas_queues_and_nodes(api: httpx.Client, start_node) -> None:
    node = start_node(processes=1, queues="high,low")

    tasks = {t["name"]: t for t in api.get("/v1/tasks").json()}

    assert {"echo", "sleep", "array.stats", "test.pid"} <= set(tasks)
    assert tasks["sleep"]["description"] == "Sleep for the given seconds and return them."
    assert tasks["sleep"]["input_schema"]["required"] == ["seconds"]
    assert (tasks["sleep"]["queues"], tasks["sleep"]["nodes"]) == (["high", "low"], [node.node_id])
    assert len(tasks["sleep"]["versions"][node.node_id]) == 12


def test_queues_and_nodes_are_listed(api: httpx.Client, start_node) -> None:
    api.post("/v1/jobs", json={"task": "echo", "queue": "low", "allow_unserved": True})
    node = start_node(processes=1, queues="high")

    queues = {q["name"]: q for q in api.get("/v1/queues").json()}
    nodes = api.get("/v1/nodes").json()

    assert list(queues)[:3] == ["high", "default", "low"] and queues["low"]["queued"] == 1
    assert [(n["id"], n["alive"], n["processes"]) for n in nodes] == [(node.node_id, True, 1)]


def test_unknown_routes_and_methods_answer_in_the_error_envelope(api: httpx.Client) -> None:
    missing = api.get("/v1/nothing")
    wrong_method = api.put("/v1/jobs")

    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFound"
    assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]["message"]


def test_the_producer_exits_2_with_one_line_when_no_redis_is_configured(env: dict[str, str], tmp_path) -> None:
    bare = {k: v for k, v in env.items() if k != "FERRY_REDIS_URL"} | {"FERRY_STATE_DIR": str(tmp_path / "none")}

    done = subprocess.run([sys.executable, "-m", "services.producer", "--port", str(free_port())],
                          env=bare, cwd=REPO, capture_output=True, text=True, timeout=30)

    assert done.returncode == 2, done.stderr
    assert "FERRY_REDIS_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unexpected_error_is_500_with_a_short_message_and_one_logged_traceback(settings, caplog) -> None:
    app = create_app(settings)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        with caplog.at_level(logging.ERROR):
            answer = httpx.get(f"http://127.0.0.1:{server.config.port}/v1/boom")
    finally:
        server.should_exit = True
        thread.join(10)

    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "InternalError" and "RuntimeError" in error["message"]
    assert "secret internals" not in answer.text
    tracebacks = [r for r in caplog.records if r.exc_info and "secret internals" in str(r.exc_info[1])]
    assert len(tracebacks) == 1
