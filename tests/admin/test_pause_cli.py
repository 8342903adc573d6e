"""`ferry pause` / `ferry resume`, and the limit options of `ferry submit`, as a user runs them."""

from __future__ import annotations

import json

from shared import keys
from tests.admin.helpers import one_line


def test_pause_and_resume_named_queues_and_everything(ferry, conn):
    paused = ferry("pause", "a", "b", "--json")
    assert paused.returncode == 0, paused.stderr
    assert {q["name"] for q in json.loads(paused.stdout) if q["paused"]} == {"a", "b"}
    assert ferry("resume", "a").returncode == 0
    assert conn.smembers(keys.PAUSED_QUEUES) == {b"b"}
    assert ferry("pause").returncode == 0 and conn.exists(keys.RQ_SUSPENDED)
    info = ferry("info", "--json")
    assert all(q["paused"] for q in json.loads(info.stdout)["queues"])
    assert ferry("resume").returncode == 0
    assert not conn.exists(keys.RQ_SUSPENDED) and not conn.exists(keys.PAUSED_QUEUES)


def test_a_malformed_queue_name_is_one_line_and_exit_2(ferry):
    result = ferry("pause", "no spaces!")
    assert result.returncode == 2
    assert "queue name 'no spaces!' is not valid" in one_line(result.stderr)


def test_submit_with_a_bad_rate_limit_is_one_line_and_exit_2(ferry, served):
    result = ferry("submit", "echo", "--arg", "value=1", "--limit-key", "c", "--rate-limit", "often")
    assert result.returncode == 2
    assert "STARTS/PERIOD" in one_line(result.stderr)


def test_submit_with_a_key_limit_writes_it_on_the_job(ferry, served, conn):
    result = ferry("submit", "echo", "--arg", "value=1", "--limit-key", "c", "--concurrency-limit", "2")
    assert result.returncode == 0, result.stderr
    assert b'"n":2' in conn.hget(keys.job(result.stdout.strip()), "ferry_limits")
