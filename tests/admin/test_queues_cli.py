"""`ferry info`, `jobs`, `requeue`, `purge`, `tasks`: operator views and actions."""

from __future__ import annotations

import json

import redis

from shared import keys
from shared.client import Client
from shared.errors import EXIT_NOT_FOUND, EXIT_USAGE
from tests.admin.helpers import one_line


def test_info_json_shows_queues_nodes_with_cache_counters_and_workers(cli, client: Client, start_node) -> None:
    node = start_node(processes=2)
    client.submit("echo", {"value": 1}, queue="low")
    client.result(client.submit("echo", {"value": 2}), wait_s=30)
    client.submit("echo", {"value": 3}, queue="solo", allow_unserved=True)  # no node serves queue solo

    shown = cli("info", "--json")
    assert shown.exit_code == 0
    info = json.loads(shown.stdout)
    assert set(info) == {"redis", "queues", "nodes", "worker_processes", "unservable"}
    assert info["unservable"] == [{"queue": "solo", "task": "echo", "jobs": 1, "scanned_all": True}]
    assert info["redis"]["url"] == client.url and info["redis"]["version"]
    queues = {q["name"]: q for q in info["queues"]}
    assert list(queues)[:3] == ["high", "default", "low"]
    assert queues["default"]["finished"] == 1
    assert set(queues["low"]) == {"name", "queued", "started", "finished", "failed", "canceled", "scheduled", "paused",
                                  "waiting"}
    [n] = info["nodes"]
    assert (n["id"], n["alive"], n["processes"]) == (node.node_id, True, 2)
    assert {"bytes_from_redis", "bytes_from_shm", "hits", "misses", "evictions", "resident_bytes"} <= set(n["stats"])
    assert n["shm_budget_bytes"] > 0
    assert sorted(w["name"] for w in info["worker_processes"]) == node.workers(client.conn)
    assert {w["state"] for w in info["worker_processes"]} <= {"idle", "busy"}

    human = cli("info").stdout
    for expected in ("Queues", "Nodes", "Node caches", "Worker processes", node.node_id, "from redis", "from shm",
                     "evictions", "1 queued job of task 'echo' on queue 'solo': no live node serves it there"):
        assert expected in human


def test_info_says_when_no_node_has_registered(cli) -> None:
    shown = cli("info")
    assert shown.exit_code == 0
    assert "no worker node has registered" in shown.stdout


def test_a_failed_job_is_listed_by_status_then_requeued_and_succeeds(cli, client: Client, start_node, tmp_path) -> None:
    start_node(processes=1)
    marker = tmp_path / "attempted"
    flaky = client.submit("test.flaky", {"marker": str(marker)}, retries=0).id
    assert client.result(flaky, wait_s=30).status == "failed"
    fine = client.submit("echo", {"value": 1}).id
    client.result(fine, wait_s=30)

    failed = json.loads(cli("jobs", "--status", "failed", "--json").stdout)
    assert [(j["id"], j["task"], j["status"]) for j in failed] == [(flaky, "test.flaky", "failed")]
    listed = cli("jobs", "--status", "failed").stdout
    assert flaky in listed and "first attempt fails" in listed and fine not in listed
    assert {j["id"] for j in json.loads(cli("jobs", "--json").stdout)} == {flaky, fine}
    assert cli("jobs", "--status", "queued").stdout.strip() == "no queued jobs"

    requeued = cli("requeue", "--all")
    assert requeued.exit_code == 0
    assert requeued.stdout.strip() == "requeued 1 failed job"
    result = client.result(flaky, wait_s=30)
    assert (result.status, result.value) == ("finished", "ok")
    nothing = cli("requeue", "--all")
    assert (nothing.exit_code, nothing.stdout.strip()) == (0, "no failed jobs")


def test_requeue_needs_all_or_ids_and_names_jobs_it_could_not_requeue(cli, client: Client) -> None:
    neither = cli("requeue")
    assert (neither.exit_code, one_line(neither.stderr)) == (EXIT_USAGE, "error: pass either --all or one or more job ids (not both)")
    assert cli("requeue", "--failed", "--all").exit_code == 0, "the old spelling still works"
    queued = client.submit("echo", allow_unserved=True).id
    unknown = cli("requeue", queued, "feedfeedfeedfeedfeedfeedfeedfeed")
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert one_line(unknown.stderr) == (
        f"error: not requeued, not a failed job: {queued} (queued), feedfeedfeedfeedfeedfeedfeedfeed (not found)"
    )


def test_purge_drops_queued_jobs_after_confirmation(cli, client: Client, conn: redis.Redis) -> None:
    ids = [client.submit("sleep", {"seconds": 1}, queue="low", allow_unserved=True).id for _ in range(3)]
    kept = client.submit("echo", queue="high", allow_unserved=True).id

    unconfirmed = cli("purge", "low")  # stdin is not a terminal: no prompt, no purge
    assert unconfirmed.exit_code == EXIT_USAGE
    assert one_line(unconfirmed.stderr) == "error: queue low holds 3 queued jobs; pass --yes to purge without a prompt"
    assert conn.llen(keys.queue("low")) == 3

    purged = cli("purge", "low", "--yes")
    assert (purged.exit_code, purged.stdout.strip()) == (0, "purged 3 queued jobs from queue low")
    assert conn.llen(keys.queue("low")) == 0
    assert not any(conn.exists(keys.job(i)) for i in ids)
    assert conn.lrange(keys.queue("high"), 0, -1) == [kept.encode()]

    again = cli("purge", "low", "--yes")
    assert (again.exit_code, again.stdout.strip()) == (0, "no queued, scheduled or limit-waiting jobs in queue low")
    unknown = cli("purge", "nosuchqueue", "--yes")
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert "no queue named 'nosuchqueue'" in unknown.stderr


def test_tasks_lists_names_descriptions_and_arguments(cli, served: str) -> None:
    shown = cli("tasks")
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    echo = next(line for line in lines if line.startswith("echo "))
    assert "value: any" in echo and "Return the value unchanged." in echo
    sleep = next(line for line in lines if line.startswith("sleep "))
    assert "seconds: number (required)" in sleep
    assert "values: list[number] (required)" in shown.stdout
    assert "top: integer = 10" in shown.stdout
    assert "data: object (required)" in shown.stdout

    tasks = {t["name"]: t for t in json.loads(cli("tasks", "--json").stdout)}
    assert {"echo", "sleep", "stats.describe", "text.word_count", "array.stats", "test.fail"} <= set(tasks)
    assert tasks["sleep"]["input_schema"]["required"] == ["seconds"]
    assert tasks["echo"]["description"] == "Return the value unchanged."
