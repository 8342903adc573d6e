"""The job surface in the CLI: idempotency conflicts, per-job settings, tags and filters, progress."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from shared import keys
from shared.client import Client
from shared.errors import EXIT_CONFLICT, EXIT_USAGE
from tests.support import wait_for


def test_a_key_conflict_exits_5_naming_the_job(client: Client, served: str, cli) -> None:
    first = client.submit("echo", {"value": 1}, idempotency_key="order-4")
    result = cli("submit", "echo", "--arg", "value=2", "--idempotency-key", "order-4")
    assert result.exit_code == EXIT_CONFLICT
    assert f"already belongs to job {first.id}" in result.stderr


def test_submit_takes_ttls_meta_and_tags_and_jobs_filters_by_them(client: Client, served: str, cli) -> None:
    tagged = cli("submit", "echo", "--arg", "value=1", "--tag", "nightly", "--tag", "acme", "--meta",
                 '{"owner": "ops"}', "--result-ttl-s", "60", "--failure-ttl-s", "120")
    assert tagged.exit_code == 0, tagged.stderr
    job_id = tagged.stdout.strip()
    other = client.submit("sleep", {"seconds": 1}, tags=["nightly"])
    info = client.status(job_id)
    assert (info.tags, info.meta) == (["nightly", "acme"], {"owner": "ops"})
    assert client.conn.hmget(f"rq:job:{job_id}", "result_ttl", "failure_ttl") == [b"60", b"120"]

    listed = cli("jobs", "--tag", "nightly", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [other.id, job_id]
    by_task = cli("jobs", "--tag", "nightly", "--task", "echo", "--json")
    assert [j["id"] for j in json.loads(by_task.stdout)] == [job_id]
    assert [j["id"] for j in json.loads(cli("jobs", "--task", "sleep", "--json").stdout)] == [other.id]
    assert "no jobs tagged nobody" in cli("jobs", "--tag", "nobody").stdout
    shown = cli("status", job_id)
    assert "nightly, acme" in shown.stdout and '"owner": "ops"' in shown.stdout


def test_bad_meta_or_too_many_tags_is_one_line_exit_2(served: str, cli) -> None:
    not_object = cli("submit", "echo", "--meta", "[1]")
    too_many = cli("submit", "echo", *[arg for i in range(11) for arg in ("--tag", f"t{i}")])
    assert (not_object.exit_code, too_many.exit_code) == (EXIT_USAGE, EXIT_USAGE)
    assert "--meta must be a JSON object" in not_object.stderr and "at most 10" in too_many.stderr
    assert "Traceback" not in not_object.stderr + too_many.stderr


def test_status_shows_progress_and_result_wait_shows_a_progress_bar(client: Client, start_node, cli,
                                                                    tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 2})
    (tmp_path / "go0").touch()
    wait_for(lambda: (p := client.status(job).progress) is not None and p.fraction == 0.5, timeout=10,
             what="progress 0.5")
    assert '50% step 1 of 2 {"done": 1}' in cli("status", job.id).stdout

    def watchers() -> int:
        return client.conn.pubsub_numsub(keys.EVENTS_CHANNEL)[0][1]

    before = watchers()  # a producer left by another test may be subscribed already

    def finish_later() -> None:  # the last step, once the CLI below is waiting
        wait_for(lambda: watchers() > before, timeout=10, what="the CLI to watch the job")
        (tmp_path / "go1").touch()

    releaser = threading.Thread(target=finish_later)
    releaser.start()
    waited = cli("result", job.id, "--wait-s", "20")
    releaser.join()
    assert waited.exit_code == 0, waited.stderr
    assert waited.stdout.strip() == "2"
    assert "100%" in waited.stderr and "step 2 of 2" in waited.stderr
