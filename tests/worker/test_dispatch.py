"""A job enqueued while a worker process is idle is claimed for it by the enqueue and sent on its control
channel (lua `dispatch`): the worker runs it without a claim of its own, and nothing is lost when the
worker cannot take it."""

from __future__ import annotations

import os
import signal
import uuid

import redis

from shared import keys
from shared.client import Client
from shared.lifecycle import Lifecycle
from shared.lifecycle.lua import DISPATCH_PREFIX
from shared.settings import Settings
from tests.support import wait_for


def _idle(conn: redis.Redis, worker: str) -> bool:
    return conn.sismember(keys.idle_on("default"), worker)


def _execution(conn: redis.Redis, job_id: str) -> str:
    (_, entry), = conn.xrevrange(keys.results(job_id), "+", "-", count=1)
    return entry[b"execution_id"].decode()


def test_an_idle_worker_runs_a_job_dispatched_to_it(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    (worker,) = wait_for(lambda: node.workers(conn), what="the worker to register")
    for _ in range(3):
        wait_for(lambda: _idle(conn, worker), what="the worker to be idle")
        job = client.submit("echo", {"value": 7})
        assert client.result(job, wait_s=10).value == 7
        assert _execution(conn, job.id).startswith(DISPATCH_PREFIX)  # claimed by the enqueue, not by the worker
        assert conn.xlen(keys.results(job.id)) == 1


def test_a_job_dispatched_to_a_worker_that_stops_before_reading_it_is_given_back(
        client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    (worker,) = wait_for(lambda: node.workers(conn), what="the worker to register")
    wait_for(lambda: _idle(conn, worker), what="the worker to be idle")
    pid = int(worker.rsplit(".", 1)[1])
    os.kill(pid, signal.SIGSTOP)  # still subscribed (PUBLISH counts it), but reads nothing
    try:
        job = client.submit("echo", {"value": 1}, retries=0)
        assert conn.hget(keys.job(job.id), "worker_name") == worker.encode()  # dispatched to the stopped worker
        os.kill(pid, signal.SIGTERM)  # a graceful stop, delivered when it runs again
    finally:
        os.kill(pid, signal.SIGCONT)
    # given back unstarted (no retry used: retries=0 would fail it otherwise), then run by its replacement
    result = client.result(job, wait_s=20)
    assert result.status == "finished" and result.value == 1
    assert conn.xlen(keys.results(job.id)) == 1
    assert int(conn.hget(keys.job(job.id), "number_of_retries") or 0) == 0
    assert node.workers(conn) != [worker]


def test_a_job_dispatched_without_its_message_runs_at_the_workers_next_poll(
        client: Client, start_node, conn: redis.Redis, settings: Settings) -> None:
    """A dispatch whose message never arrives (a subscription broken at that moment) is not left to the
    reaper: the worker's next idle claim returns it, within one idle poll (1 s)."""
    node = start_node(processes=1)
    (worker,) = wait_for(lambda: node.workers(conn), what="the worker to register")
    wait_for(lambda: _idle(conn, worker), what="the worker to be idle")
    conn.srem(keys.idle_on("default"), worker)  # so the submit queues the job instead of dispatching it
    job = client.submit("echo", {"value": 5}, retries=0)
    execution = f"{DISPATCH_PREFIX}lost{uuid.uuid4().hex[:8]}"
    claimed = Lifecycle(conn, settings).claim(worker, ["default"], execution)  # claimed in its name, never sent
    assert [j.id for j in claimed] == [job.id]
    result = client.result(job, wait_s=10)
    assert result.status == "finished" and result.value == 5
    assert _execution(conn, job.id) == execution  # run under the dispatch's execution id: not reaped, not retried
    assert conn.xlen(keys.results(job.id)) == 1
