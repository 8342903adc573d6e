"""Pause/resume, concurrency and rate limits against real nodes: what runs is sampled from inside the tasks."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from rq import Queue, RateLimit
from rq.serializers import JSONSerializer
from rq.suspension import resume as rq_resume
from rq.suspension import suspend as rq_suspend

from shared import keys
from shared.client import Client
from shared.models import JobRequest, JobStatus
from tests.conftest import TEST_TASK_MODULES
from tests.support import wait_for

MODULES = f"{TEST_TASK_MODULES},tests.limit_tasks"


@pytest.fixture()
def limit_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FERRY_TASK_MODULES": MODULES, "FERRY_IDLE_POLL_S": "0.2"}


def samples(conn: redis.Redis, label: str) -> list[tuple[int, int, str, int, int]]:
    """(running cluster-wide, running on its node, node, start ms, pid) for each start of `label`'s tasks."""
    out = []
    for raw in conn.lrange(f"test:samples:{label}", 0, -1):
        running, on_node, node, start_ms, pid = raw.decode().split()
        out.append((int(running), int(on_node), node, int(start_ms), int(pid)))
    return out


def all_finished(client: Client, jobs: list) -> bool:
    return all(client.status(j).status == JobStatus.FINISHED for j in jobs)


def claims_made_since(conn: redis.Redis, workers: list[str]) -> None:
    """Wait until every worker claimed again (and found nothing it may take): it re-registers as idle."""
    conn.delete(keys.IDLE_WORKERS)
    wait_for(lambda: all(conn.hexists(keys.IDLE_WORKERS, w) for w in workers), 10,
             what="every worker to claim again and find nothing claimable")


# --- pause and resume ---
def test_paused_queue_keeps_its_jobs_while_another_drains_and_resume_releases_them(limit_env, start_node, client, conn):
    node = start_node(env=limit_env, queues="a,b")
    paused = client.pause("a")
    assert {q.name: q.paused for q in paused}.get("a") is True
    held = [client.submit("echo", {"value": i}, queue="a") for i in range(3)]
    other = [client.submit("echo", {"value": i}, queue="b") for i in range(3)]
    wait_for(lambda: all_finished(client, other), 15, what="queue b's jobs to finish")
    claims_made_since(conn, node.workers(conn))
    assert [client.status(j).status for j in held] == [JobStatus.QUEUED] * 3
    assert conn.llen(keys.queue("a")) == 3
    infos = {q.name: q for q in client.resume("a")}
    assert not infos["a"].paused
    wait_for(lambda: all_finished(client, held), 10, what="queue a's jobs to run once resumed")


def test_rq_suspend_pauses_every_queue_and_rq_resume_ends_it(limit_env, start_node, client, conn):
    node = start_node(env=limit_env)
    rq_suspend(conn)
    assert all(q.paused for q in client.admin.queues())
    job = client.submit("echo", {"value": 1})
    claims_made_since(conn, node.workers(conn))
    assert client.status(job).status == JobStatus.QUEUED
    rq_resume(conn)  # RQ's own resume: deletes the key, publishes nothing; the idle poll picks the job up
    wait_for(lambda: client.status(job).status == JobStatus.FINISHED, 10, what="the job to run after rq resume")


def test_ferry_pause_of_everything_is_rq_suspended(limit_env, client, conn):
    client.pause()
    assert conn.exists(keys.RQ_SUSPENDED)
    client.resume()
    assert not conn.exists(keys.RQ_SUSPENDED) and not conn.exists(keys.PAUSED_QUEUES)


# --- concurrency limits ---
def test_task_concurrency_limit_is_never_exceeded_with_more_processes_than_slots(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=3)
    jobs = [client.submit("test.limited", {"seconds": 0.3}) for _ in range(8)]
    wait_for(lambda: any(client.status(j).waiting_for for j in jobs), 10,
             what="a job set aside, waiting for the limit")
    assert sum(q.waiting for q in client.admin.queues()) >= 1
    wait_for(lambda: all_finished(client, jobs), 30, what="every limited job to finish")
    running = [s[0] for s in samples(conn, "limited")]
    assert len(running) == 8
    assert max(running) <= 2, running
    assert all(client.status(j).waiting_for is None for j in jobs)
    assert sum(q.waiting for q in client.admin.queues()) == 0
    assert conn.hlen(keys.limit("task:test.limited") + ":running") == 0  # every slot given back


def test_per_node_limit_holds_on_each_of_two_nodes(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=2)
    start_node(env=limit_env, processes=2)
    jobs = [client.submit("test.per_node", {"seconds": 0.3}) for _ in range(6)]
    wait_for(lambda: all_finished(client, jobs), 30, what="every per-node-limited job to finish")
    got = samples(conn, "per_node")
    assert len(got) == 6
    assert max(s[1] for s in got) == 1, got  # never two at once on one node


def test_key_limit_and_a_killed_holder_gives_its_slot_back(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=2)
    key = {"limit_key": "customer-42", "concurrency_limit": 1, "retries": 0}
    holder = client.submit("test.keyed", {"label": "k", "seconds": 60}, **key)
    wait_for(lambda: samples(conn, "k"), 10, what="the holder to start")
    waiter = client.submit("test.keyed", {"label": "k", "seconds": 0}, **key)
    info = wait_for(lambda: (i := client.status(waiter)).waiting_for and i, 10, what="the second job to wait")
    assert "customer-42" in info.waiting_for and info.status == JobStatus.QUEUED
    assert info.worker is None  # set aside in Redis: no worker process holds it
    os.kill(samples(conn, "k")[0][4], signal.SIGKILL)
    wait_for(lambda: client.status(waiter).status == JobStatus.FINISHED, 15,
             what="the waiting job to run once the killed holder's slot came back")
    assert client.status(holder).status == JobStatus.FAILED
    assert len(samples(conn, "k")) == 2


# --- rate limits ---
def test_rate_limit_allows_no_more_starts_than_the_rate_in_any_window(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=2)
    jobs = [client.submit("test.rated") for _ in range(8)]
    wait_for(lambda: all_finished(client, jobs), 30, what="every rate-limited job to finish")
    starts = sorted(s[3] for s in samples(conn, "rated"))
    assert len(starts) == 8
    # 3 per second: any 4 consecutive starts span a second (less a little: a start is recorded by the task,
    # a few ms after the claim script admitted it on Redis's clock)
    gaps = [starts[i + 3] - starts[i] for i in range(len(starts) - 3)]
    assert min(gaps) >= 900, gaps


def test_rq_rate_limit_jobs_are_released_by_ferry_workers(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=2)
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    jobs = [queue.enqueue("test.keyed", label="rq", seconds=0.2, rate_limit=RateLimit("rq-key", 1)) for _ in range(3)]
    assert conn.zcard("rq:rl:rq-key:rate_limited") == 2  # RQ holds two back until the first ends
    wait_for(lambda: all_finished(client, [j.id for j in jobs]), 20,
             what="every RQ rate-limited job to run (each release lets the next one in)")
    assert max(s[0] for s in samples(conn, "rq")) == 1
    assert conn.zcard("rq:rl:rq-key:allowed") == 0


# --- bad input ---
@pytest.mark.parametrize(("options", "words"), [
    ({"limit_key": "c", "concurrency_limit": 0}, "greater than or equal to 1"),
    ({"limit_key": "c", "rate_limit": "lots"}, "STARTS/PERIOD"),
    ({"limit_key": "c", "rate_limit": "5/0s"}, "period"),
    ({"concurrency_limit": 2}, "limit_key"),
    ({"limit_key": "c"}, "without concurrency_limit"),
])
def test_bad_limits_are_refused_with_a_message_naming_the_fix(options, words):
    with pytest.raises(ValueError, match=words):
        JobRequest(task="echo", **options)


def test_a_canceled_waiting_job_stops_counting_and_never_runs(limit_env, start_node, client, conn):
    start_node(env=limit_env, processes=2)
    key = {"limit_key": "solo", "concurrency_limit": 1}
    first = client.submit("test.keyed", {"label": "c", "seconds": 1.0}, **key)
    wait_for(lambda: samples(conn, "c"), 10, what="the first job to start")
    second = client.submit("test.keyed", {"label": "c", "seconds": 0}, **key)
    wait_for(lambda: client.status(second).waiting_for, 10, what="the second job to wait")
    assert client.cancel(second).status == JobStatus.CANCELED
    assert sum(q.waiting for q in client.admin.queues()) == 0
    wait_for(lambda: client.status(first).status == JobStatus.FINISHED, 10, what="the first job to finish")
    wait_for(lambda: not conn.exists(keys.limit("key:solo") + ":waiting"), 10, what="the waiting list to empty")
    assert len(samples(conn, "c")) == 1 and client.status(second).status == JobStatus.CANCELED


def test_the_async_client_pauses_and_resumes_too(settings, conn):
    import asyncio

    from shared.async_client import AsyncClient

    async def scenario() -> None:
        async with AsyncClient(settings=settings) as client:
            assert {q.name for q in await client.pause("x") if q.paused} == {"x"}
            assert conn.sismember(keys.PAUSED_QUEUES, "x")
            assert not any(q.paused for q in await client.resume())

    asyncio.run(scenario())
