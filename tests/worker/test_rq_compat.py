"""RQ's own tools against Ferry's workers: the stop-job command, the executions index, total_working_time."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis
from rq.command import send_stop_job_command
from rq.serializers import JSONSerializer
from rq.worker import Worker

from shared import keys
from shared.client import Client
from shared.models import JobStatus
from tests.support import wait_for


def _started(client: Client, job_id: str) -> str:
    """Wait for the job to start; its worker process's name."""
    info = wait_for(lambda: (lambda i: i if i.status == JobStatus.STARTED else None)(client.status(job_id)),
                    timeout=10, what="the job to start")
    assert info.worker
    return info.worker


def _rq_worker(conn: redis.Redis, name: str) -> Worker:
    worker = Worker.find_by_key(keys.worker(name), connection=conn, serializer=JSONSerializer)
    assert worker is not None
    return worker


def test_rqs_stop_job_command_stops_a_running_ferry_job(client: Client, start_node, conn: redis.Redis,
                                                        tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 1}, retries=2)  # its gate never opens
    _started(client, job.id)

    send_stop_job_command(conn, job.id, serializer=JSONSerializer)

    result = client.result(job, wait_s=10)
    assert (result.status, result.error) == (JobStatus.CANCELED, "canceled while running")
    assert client.status(job).attempts == 1  # not retried, as RQ does not retry a stopped job


def test_rq_sees_the_running_ferry_job_and_the_workers_working_time(client: Client, start_node, conn: redis.Redis,
                                                                   tmp_path: Path) -> None:
    start_node(processes=1)
    first = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 1})
    name = _started(client, first.id)
    worker = _rq_worker(conn, name)
    assert worker.get_current_job_id() == first.id
    assert worker.get_current_job().id == first.id
    assert [e.job_id for e in worker.get_current_executions()] == [first.id]
    assert worker.total_working_time == 0

    (tmp_path / "go0").touch()
    assert client.result(first, wait_s=10).status == JobStatus.FINISHED
    assert _rq_worker(conn, name).get_current_job_id() is None
    # the worker adds its run time with its next heartbeat (FERRY_HEARTBEAT_INTERVAL_S, 0.5 s in tests)
    after_first = wait_for(lambda: _rq_worker(conn, name).total_working_time, timeout=5,
                           what="total_working_time to count the first job")

    second = client.submit("test.pid", {"seconds": 0.2})
    assert client.result(second, wait_s=10).status == JobStatus.FINISHED
    wait_for(lambda: _rq_worker(conn, name).total_working_time >= after_first + 0.2, timeout=5,
             what="total_working_time to grow by the second job's 0.2 s")
    assert conn.scard(keys.worker_executions(name)) == 0
    assert not list(conn.scan_iter(f"{keys.RQ_EXECUTION_PREFIX}*"))


def test_a_failed_or_requeued_execution_leaves_the_index(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    job = client.submit("test.fail", {}, retries=1)
    assert client.result(job, wait_s=10).status == JobStatus.FAILED
    assert not list(conn.scan_iter(f"{keys.RQ_EXECUTION_PREFIX}*"))
    assert [conn.scard(keys.worker_executions(name)) for name in node.workers(conn)] == [0]


def test_a_killed_workers_execution_leaves_the_index_and_the_rerun_gets_its_own(
        client: Client, start_node, conn: redis.Redis, tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 1}, retries=2)
    first = _started(client, job.id)
    [member] = [m.decode() for m in conn.smembers(keys.worker_executions(first))]
    os.kill(int(first.rsplit(".", 1)[1]), signal.SIGKILL)  # the supervisor requeues it; a new process runs it

    second = wait_for(lambda: (lambda i: i.worker if i.status == JobStatus.STARTED and i.worker != first else None)(
        client.status(job)), timeout=15, what="the job to run again in a new worker process")
    assert not conn.exists(f"{keys.RQ_EXECUTION_PREFIX}{member}")
    assert _rq_worker(conn, second).get_current_job_id() == job.id
    (tmp_path / "go0").touch()
    assert client.result(job, wait_s=10).status == JobStatus.FINISHED
    assert not list(conn.scan_iter(f"{keys.RQ_EXECUTION_PREFIX}*"))
