"""`ferry submit`, `status`, `result`, `cancel`: job ids on stdout, results as JSON, documented exit codes."""

from __future__ import annotations

import json

from services.admin.jobs import parse_args
from shared.client import Client
from shared.errors import EXIT_CONFLICT, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_NOT_READY, EXIT_USAGE
from tests.admin.helpers import one_line


def test_arg_values_are_json_when_they_parse_and_strings_otherwise() -> None:
    pairs = ["n=3", "x=[1,2]", "flag=true", "text=hello world", "quoted=\"3\"", "empty=", "eq=a=b", "none=null"]
    assert parse_args(pairs, '{"n": 1, "kept": {"a": 1}}') == {
        "n": 3, "x": [1, 2], "flag": True, "text": "hello world", "quoted": "3", "empty": "", "eq": "a=b", "none": None,
        "kept": {"a": 1},
    }


def test_submit_with_wait_prints_the_result_computed_by_a_node(ferry, start_node) -> None:
    start_node(processes=1)
    done = ferry("submit", "stats.describe", "--arg", "values=[1, 2, 3, 6]", "--wait-s", "30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"count": 4, "mean": 3.0, "stdev": 2.160246899469287, "min": 1.0, "median": 2.5, "max": 6.0}
    assert "waiting up to 30s" in done.stderr

    text = ferry("submit", "text.word_count", "--args", '{"top": 1}', "--arg", "text=to be or not to be", "--wait-s", "30")
    assert text.returncode == 0, text.stderr
    assert json.loads(text.stdout) == {"words": 6, "unique": 4, "top": [["to", 2]]}  # the unparsable value stayed a string


def test_submit_with_invalid_args_exits_2_with_one_line_and_no_traceback(ferry, served: str) -> None:
    bad = ferry("submit", "stats.describe", "--arg", "values=abc")
    assert bad.returncode == EXIT_USAGE
    assert one_line(bad.stderr) == "error: invalid args for task 'stats.describe': values: Input should be a valid list"
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr

    malformed = ferry("submit", "echo", "--arg", "value")
    assert malformed.returncode == EXIT_USAGE
    assert one_line(malformed.stderr).startswith("error: --arg 'value': write it as NAME=VALUE")


def test_submit_of_an_unknown_task_exits_4_listing_the_known_tasks(ferry, served: str) -> None:
    unknown = ferry("submit", "no.such.task")
    assert unknown.returncode == EXIT_NOT_FOUND
    line = one_line(unknown.stderr)
    assert line.startswith("error: no task named 'no.such.task' is served by the live nodes; known tasks: ")
    assert {"echo", "sleep", "array.stats", "test.flaky"} <= set(line.split("known tasks: ")[1].split(", "))


def test_bad_json_and_bad_options_are_usage_errors(cli, served: str) -> None:
    assert cli("submit", "echo", "--args", "{nope").exit_code == EXIT_USAGE
    listed = cli("submit", "echo", "--args", "[1]")
    assert listed.exit_code == EXIT_USAGE and "--args must be a JSON object" in listed.stderr
    # --json is the output flag everywhere: args after it are an error, not silently taken as the task's args.
    assert cli("submit", "echo", "--json", '{"value": 1}').exit_code == EXIT_USAGE
    queue = cli("submit", "echo", "--queue", "no spaces")
    assert queue.exit_code == EXIT_USAGE and queue.stderr.startswith("error: invalid job: queue:")
    extra = cli("submit", "echo", "--arg", "value=1", "--arg", "n=3")
    assert extra.exit_code == EXIT_USAGE and "n: Extra inputs are not permitted" in extra.stderr


def test_a_submitted_job_is_queued_and_result_wait_exits_7_while_no_node_runs_it(ferry, cli, client: Client,
                                                                                  served: str) -> None:
    submitted = cli("submit", "echo", "--arg", "value=hello", "--queue", "low", "--retries", "0", "--timeout-s", "9")
    assert submitted.exit_code == 0
    job_id = submitted.stdout.strip()
    info = client.status(job_id)
    assert (info.task, info.queue, info.status, info.retries_left, info.timeout_s) == ("echo", "low", "queued", 0, 9)

    status = json.loads(cli("status", job_id, "--json").stdout)
    assert (status["id"], status["status"], status["queue"]) == (job_id, "queued", "low")
    human = cli("status", job_id).stdout
    assert job_id in human and "queued" in human and "echo" in human

    pending = ferry("result", job_id, "--wait-s", "0.3")
    assert pending.returncode == EXIT_NOT_READY
    assert one_line(pending.stderr) == f"not ready: job {job_id} is still queued after waiting 0.3s; try `ferry result {job_id} --wait-s 30`"
    waited = ferry("submit", "echo", "--wait-s", "0.2", "--json")
    assert waited.returncode == EXIT_NOT_READY
    assert json.loads(waited.stdout)["ready"] is False


def test_cancel_a_queued_job_then_its_result_exits_1_and_cancel_json_prints_the_job(cli, client: Client,
                                                                                     served: str) -> None:
    job_id = client.submit("echo", {"value": 1}).id
    canceled = cli("cancel", job_id)
    assert canceled.exit_code == 0
    assert canceled.stdout.strip() == f"job {job_id} canceled"
    assert client.status(job_id).status == "canceled"
    result = cli("result", job_id)
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.startswith(f"error: job {job_id} canceled:")
    other = client.submit("echo", {"value": 2}).id
    shown = cli("cancel", other, "--json")  # --json prints the job, as `ferry status --json` does
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == json.loads(cli("status", other, "--json").stdout)
    assert json.loads(shown.stdout)["status"] == "canceled"
    assert cli("cancel", other).exit_code == EXIT_CONFLICT, "it has already ended"


def test_unknown_ids_exit_4(cli) -> None:
    for command in ("status", "result", "cancel"):
        missing = cli(command, "0123456789abcdef0123456789abcdef")
        assert missing.exit_code == EXIT_NOT_FOUND, command
        assert "no job '0123456789abcdef0123456789abcdef'" in missing.stderr


def test_failed_job_exits_1_and_cancelling_a_finished_job_exits_5(cli, client: Client, start_node) -> None:
    start_node(processes=1)
    failed = cli("submit", "test.fail", "--arg", "message=it broke", "--retries", "0", "--wait-s", "30")
    assert failed.exit_code == EXIT_FAILED
    assert failed.stderr.splitlines()[-1].endswith("failed: RuntimeError: it broke")
    job_id = failed.stderr.split()[1]
    shown = cli("status", job_id)
    assert "RuntimeError: it broke" in shown.stdout and "traceback" in shown.stdout  # the status shows the traceback

    done = cli("submit", "echo", "--arg", "value=ok", "--wait-s", "30", "--json")
    assert done.exit_code == 0
    result = json.loads(done.stdout)
    assert (result["status"], result["value"]) == ("finished", "ok")
    again = cli("result", result["id"], "--json")
    assert json.loads(again.stdout) == result
    conflict = cli("cancel", result["id"])
    assert conflict.exit_code == EXIT_CONFLICT
    assert f"job {result['id']} is already finished" in conflict.stderr


def test_an_idempotency_key_returns_the_first_job(cli, served: str) -> None:
    first = cli("submit", "echo", "--idempotency-key", "order-17").stdout.strip()
    second = cli("submit", "echo", "--idempotency-key", "order-17")
    assert second.stdout.strip() == first
    assert "matched this earlier job" in second.stderr
