"""`ferry submit --delay-s/--run-at`: a scheduled job, and one red line for a bad due time."""

from __future__ import annotations

import json

from shared.client import Client
from shared.models import JobStatus
from tests.admin.conftest import Ferry
from tests.admin.helpers import one_line


def test_submit_with_delay_s_prints_an_id_of_a_scheduled_job(ferry: Ferry, served: str, client: Client) -> None:
    done = ferry("submit", "echo", "--arg", "value=1", "--delay-s", "30")
    assert done.returncode == 0, done.stderr
    info = client.status(one_line(done.stdout))
    assert info.status == JobStatus.SCHEDULED and info.due_at is not None
    shown = ferry("status", info.id)
    assert "due" in shown.stdout and "scheduled" in shown.stdout


def test_bad_run_at_is_one_line_and_exit_2(ferry: Ferry, served: str) -> None:
    done = ferry("submit", "echo", "--run-at", "tomorrow")
    assert done.returncode == 2
    assert "run_at" in one_line(done.stderr) and "Traceback" not in done.stderr
    both = ferry("submit", "echo", "--run-at", "2030-01-01T00:00:00Z", "--delay-s", "3")
    assert both.returncode == 2 and "not both" in one_line(both.stderr)
    negative = ferry("submit", "echo", "--delay-s", "-1")
    assert negative.returncode == 2 and "--delay-s" in negative.stderr and "Traceback" not in negative.stderr


def test_submit_stores_the_jobs_own_back_off(ferry: Ferry, served: str, conn) -> None:
    done = ferry("submit", "echo", "--retry-delay-s", "0.5", "--retry-backoff", "exponential",
                 "--retry-max-delay-s", "4", "--retry-jitter", "0.2")
    assert done.returncode == 0, done.stderr
    stored = json.loads(conn.hget(f"rq:job:{one_line(done.stdout)}", "ferry_retry"))
    assert stored == {"retry_delay_s": 0.5, "retry_backoff": "exponential", "retry_max_delay_s": 4.0,
                      "retry_jitter": 0.2}
    bad = ferry("submit", "echo", "--retry-backoff", "linear")
    assert bad.returncode == 2 and "retry_backoff" in one_line(bad.stderr)


def test_jobs_lists_scheduled_jobs(ferry: Ferry, served: str, client: Client) -> None:
    delayed = client.submit("echo", {"value": 1}, delay_s=30)
    client.submit("echo", {"value": 2})
    listed = ferry("jobs", "--status", "scheduled", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [delayed.id]
