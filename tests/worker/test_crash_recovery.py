"""Nothing lost: a job whose worker process or whole node dies is retried, well within a minute."""

from __future__ import annotations

import os
import signal
import time

import redis

from shared import keys
from shared.client import Client
from tests.support import wait_for


def _running_worker_pid(client: Client, job: str) -> int:
    info = wait_for(lambda: (i := client.status(job)).status == "started" and i, what="the job to start")
    return int(info.worker.rsplit(".", 1)[1])


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_on_a_retry(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=2)
    job = client.submit("test.pid", {"seconds": 1.0}, retries=1)
    victim = _running_worker_pid(client, job)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    result = client.result(job, wait_s=60)
    assert result.status == "finished", result
    assert result.value != victim  # it ran again, in another process
    assert time.monotonic() - killed_at < 60
    assert client.status(job).attempts == 2
    wait_for(lambda: len(node.worker_pids(conn)) == 2 and victim not in node.worker_pids(conn),
             what="the supervisor to replace the dead process")
    assert "died (killed by SIGKILL)" in node.output()


def test_a_job_whose_worker_died_without_retries_left_fails_with_the_reason(client: Client, start_node) -> None:
    start_node(processes=1)
    job = client.submit("test.pid", {"seconds": 5.0}, retries=0)
    os.kill(_running_worker_pid(client, job), signal.SIGKILL)
    result = client.result(job, wait_s=30)
    assert result.status == "failed"
    assert "died (killed by SIGKILL) while running the job" in result.error


def test_a_whole_node_killed_mid_job_has_its_job_finished_by_another_node(client: Client, start_node, conn: redis.Redis) -> None:
    doomed = start_node(processes=1, queues="solo")
    job = client.submit("test.pid", {"seconds": 1.0}, queue="solo", retries=1)
    _running_worker_pid(client, job)
    doomed.kill()  # supervisor and workers at once: nobody settles the job
    assert client.status(job).status == "started"

    start_node(processes=1, queues="solo")  # its reaper finds the expired heartbeat (3 s in tests, 20 s default)
    result = client.result(job, wait_s=60)
    assert result.status == "finished"
    assert client.status(job).attempts == 2
    assert conn.zcard(keys.started("solo")) == 0


def test_jobs_queued_while_no_node_runs_wait_and_are_not_lost(client: Client, start_node) -> None:
    jobs = [client.submit("echo", {"value": i}, allow_unserved=True) for i in range(50)]
    start_node(processes=2)
    assert [client.result(j, wait_s=20).value for j in jobs] == list(range(50))


def test_a_job_whose_worker_was_killed_runs_next_not_after_the_backlog(client: Client, start_node) -> None:
    """The requeued job goes to the front of its queue (LPUSH): it ends before the jobs queued behind it."""
    start_node(processes=1)
    victim_job = client.submit("test.pid", {"seconds": 1.0}, retries=1)
    victim = _running_worker_pid(client, victim_job)
    backlog = [client.submit("test.pid", {"seconds": 0.05}) for _ in range(5)]
    os.kill(victim, signal.SIGKILL)
    results = [client.result(j, wait_s=60) for j in [victim_job, *backlog]]
    assert all(r.status == "finished" for r in results), results
    ended = {j: client.status(j).ended_at for j in [victim_job, *backlog]}
    assert all(ended[victim_job] < ended[j] for j in backlog), ended


def test_external_kills_of_a_running_worker_restart_it_at_once(client: Client, start_node, conn: redis.Redis) -> None:
    """SIGKILLs from outside are not a crash loop: no back-off, however many in a row."""
    node = start_node(processes=1)
    for _ in range(3):
        (victim,) = wait_for(lambda: [p for p in node.worker_pids(conn) if _alive(p)], what="a running worker")
        wait_for(lambda: client.result(client.submit("echo", {"value": 1}), wait_s=10).ready, what="the worker to run")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda v=victim: v not in node.worker_pids(conn), what="the dead worker to be unregistered")
    wait_for(lambda: node.output().count("killed by SIGKILL") == 3, what="three deaths logged")
    delays = [line.rsplit("restarting in ", 1)[1] for line in node.output().splitlines() if "killed by SIGKILL" in line]
    assert delays == ["0.0s"] * 3, delays


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
