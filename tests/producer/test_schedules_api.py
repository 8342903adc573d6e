"""/v1/schedules over real HTTP: a schedule added over HTTP (and one added with the CLI) runs on a real node;
mistakes are clear 4xx answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
import redis

from tests.support import REPO, NodeProcess, wait_for

CRON_MODULES = "tests.tasks_for_tests,tests.cron_tasks_for_tests"


def test_schedules_added_over_http_and_with_the_cli_run_on_a_node(
    api: httpx.Client, env: dict[str, str], conn: redis.Redis, start_node: Callable[..., NodeProcess]
) -> None:
    start_node(processes=1, env={**env, "FERRY_TASK_MODULES": CRON_MODULES})
    added = api.post("/v1/schedules", json={"name": "http-sched", "task": "test.cron_mark", "args": {"label": "http"},
                                            "cron": "* * * * * *", "tz": "Europe/Paris"})
    assert added.status_code == 201, added.text
    assert added.json()["source"] == "api" and added.json()["next_run"]
    cli = subprocess.run([sys.executable, "-m", "services.admin.cli", "schedules", "add", "cli-sched", "test.cron_mark",
                          "--every-s", "1", "--arg", "label=cli"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert (cli.returncode, cli.stdout.strip()) == (0, "cli-sched"), cli.stderr

    wait_for(lambda: conn.llen("test:cron:http") >= 2 and conn.llen("test:cron:cli") >= 2, 20,
             what="both schedules to run twice")
    listed = {item["schedule"]["name"]: item for item in api.get("/v1/schedules").json()}
    assert {"http-sched", "cli-sched", "code-every-second"} <= set(listed)
    assert listed["http-sched"]["fired"] >= 2 and listed["http-sched"]["last_job_id"].startswith("cron-http-sched-")
    assert listed["code-every-second"]["source"] == "code"
    assert api.get("/v1/schedules/cli-sched").json()["schedule"]["every_s"] == 1

    paused = api.post("/v1/schedules/http-sched/pause")
    assert paused.status_code == 200 and paused.json()["paused"] and paused.json()["next_run"] is None
    assert api.delete("/v1/schedules/http-sched").status_code == 204
    assert api.get("/v1/schedules/http-sched").status_code == 404
    code = api.delete("/v1/schedules/code-every-second")
    assert code.status_code == 409 and "declared in code" in code.json()["error"]["message"]


def test_schedule_mistakes_are_clear_4xx(api: httpx.Client, served: str) -> None:
    def add(**fields: object) -> httpx.Response:
        return api.post("/v1/schedules", json={"name": "s", "task": "echo", "cron": "0 3 * * *", **fields})

    cases = [
        (add(cron="61 * * * *"), 422, "bad cron expression '61 * * * *'"),
        (add(cron="* * *"), 422, "give 5 (minute hour day month weekday) or 6"),
        (add(tz="Mars/Base"), 422, "unknown time zone 'Mars/Base'"),
        (add(task="nope"), 404, "no task named 'nope'"),
        (add(cron=None, every_s=None), 422, "give exactly one of cron"),
        (add(task="sleep", args={"seconds": "long"}), 422, "seconds"),
    ]
    for answer, status, message in cases:
        assert answer.status_code == status, answer.text
        assert message in answer.json()["error"]["message"], answer.text
    assert add().status_code == 201
    duplicate = add(every_s=5, cron=None)
    assert duplicate.status_code == 409 and "exists" in duplicate.json()["error"]["message"]
    assert add(every_s=5, cron=None, replace=True).status_code == 201
    assert api.delete("/v1/schedules/none").status_code == 404
    assert "/v1/schedules" in api.get("/openapi.json").json()["paths"]
