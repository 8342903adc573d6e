"""A node runs jobs on long-lived processes, retries failures, enforces timeouts and stops gracefully."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from shared import keys
from shared.client import Client
from tests.support import wait_for


def test_a_submitted_job_runs_on_a_node_and_its_result_comes_back(client: Client, start_node) -> None:
    start_node(processes=1)
    job = client.submit("echo", {"value": {"hello": [1, 2, 3]}})
    result = client.result(job, wait_s=10)
    assert result.ready and result.status == "finished"
    assert result.value == {"hello": [1, 2, 3]}
    info = client.status(job)
    assert info.task == "echo" and info.started_at and info.ended_at and info.worker


def test_worker_processes_are_long_lived_and_not_forked_per_job(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=2)
    pids = set(node.worker_pids(conn))
    jobs = [client.submit("test.pid") for _ in range(20)]
    seen = {client.result(j, wait_s=10).value for j in jobs}
    assert seen <= pids


def test_queues_are_served_in_priority_order(client: Client, start_node, conn: redis.Redis) -> None:
    low = [client.submit("echo", {"value": i}, queue="low", allow_unserved=True) for i in range(3)]
    high = [client.submit("echo", {"value": i}, queue="high", allow_unserved=True) for i in range(3)]
    start_node(processes=1)
    for job in low + high:
        assert client.result(job, wait_s=10).ready
    started = {j: client.status(j).started_at for j in low + high}
    assert max(started[j] for j in high) <= min(started[j] for j in low)


def test_a_failing_job_is_retried_then_succeeds(client: Client, start_node, tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.flaky", {"marker": str(tmp_path / "m")}, retries=1)
    result = client.result(job, wait_s=10)
    assert result.status == "finished" and result.value == "ok"
    assert client.status(job).attempts == 2


def test_a_job_out_of_retries_fails_with_its_error_and_traceback(client: Client, start_node) -> None:
    start_node(processes=1)
    job = client.submit("test.fail", {"message": "no luck"}, retries=1)
    result = client.result(job, wait_s=10)
    assert result.status == "failed"
    assert result.error == "RuntimeError: no luck"
    assert "Traceback" in client.jobs.traceback(job.id)
    assert client.status(job).retries_left == 0


def test_a_job_past_its_timeout_is_interrupted_and_the_process_survives(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    pids = node.worker_pids(conn)
    job = client.submit("sleep", {"seconds": 30}, timeout_s=1, retries=0)
    result = client.result(job, wait_s=10)
    assert result.status == "failed" and "timeout of 1s" in result.error
    assert client.result(client.submit("echo", {"value": 1}), wait_s=10).value == 1
    assert node.worker_pids(conn) == pids


def test_cancelling_a_running_job_interrupts_it(client: Client, start_node) -> None:
    start_node(processes=1)
    job = client.submit("sleep", {"seconds": 30})
    wait_for(lambda: client.status(job).status == "started", what="the job to start")
    client.cancel(job)
    result = client.result(job, wait_s=10)
    assert result.status == "canceled"


def test_sigterm_lets_the_running_job_finish_before_the_node_stops(client: Client, start_node, conn: redis.Redis,
                                                                   tmp_path: Path) -> None:
    node = start_node(processes=1)
    running = tmp_path / "running"
    job = client.submit("test.pid", {"seconds": 1.5, "running": str(running)})
    wait_for(running.exists, what="the job to run")
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(20) == 0
    assert client.result(job).status == "finished"
    assert conn.hget(keys.node(node.node_id), "state") == b"stopped"
    assert not node.workers(conn)


def test_rq_info_lists_ferrys_queues_and_workers(client: Client, start_node, redis_url: str) -> None:
    import subprocess

    node = start_node(processes=2)
    client.result(client.submit("echo", {"value": 1}), wait_s=10)
    out = subprocess.run(["rq", "info", "-u", redis_url], capture_output=True, text=True, timeout=30).stdout
    assert "default" in out and "1 finished" in out
    for name in node.workers(client.conn):
        assert name in out


def test_an_idle_worker_wakes_at_once_when_a_job_arrives(client: Client, start_node, env: dict[str, str]) -> None:
    node = start_node(processes=1, env={**env, "FERRY_IDLE_POLL_S": "600"})  # only a wake-up brings the job in time
    client.result(client.submit("echo", {"value": 0}), wait_s=10)
    [worker] = node.workers(client.conn)
    wait_for(lambda: client.conn.hget(f"rq:worker:{worker}", "state") == b"idle", what="the worker to go idle")
    result = client.result(client.submit("echo", {"value": 1}), wait_s=30)
    assert (result.ready, result.value) == (True, 1)


def test_a_node_started_before_redis_waits_for_it_then_runs_jobs(env: dict[str, str], start_node, tmp_path) -> None:
    """Start-up waits for Redis with one clear line instead of crashing; then the node works normally."""
    import subprocess

    from shared.client import Client
    from shared.embedded import EmbeddedRedis, free_port
    from tests.support import wait_for

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    node = start_node(wait=False, env=dict(env, FERRY_REDIS_URL=url))
    wait_for(lambda: "waiting for it" in node.output(), what="the node to say it waits for Redis")
    assert node.proc.poll() is None
    server = subprocess.Popen([str(EmbeddedRedis().binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        with Client(url) as client:
            wait_for(lambda: _reachable(client), what="redis-server to start")
            job = client.submit("echo", {"value": 5}, allow_unserved=True)  # the node may not have published yet
            assert client.result(job, wait_s=30).value == 5
        assert node.output().count("waiting for it") == 1
        assert "Traceback" not in node.output()
    finally:
        node.close()
        server.kill()
        server.wait(10)


def _reachable(client) -> bool:
    try:
        return bool(client.jobs.conn.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False
