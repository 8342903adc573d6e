"""The promoter's scripts on a real Redis: lease, gated promotion in batches, the next due time."""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from shared import keys
from shared.client import Client
from shared.lifecycle.scheduled import DueJobs
from shared.timeutil import unix_now


def _schedule(conn: redis.Redis, ids: list[str], due: float, queue: str = "default", **fields: str) -> None:
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hset(keys.job(job_id), mapping={"status": "scheduled", "origin": queue, **fields})
        pipe.zadd(keys.scheduled(queue), {job_id: due})
    pipe.execute()


def test_only_the_lease_holder_promotes_and_a_lapsed_lease_is_taken_over(conn: redis.Redis) -> None:
    due_jobs = DueJobs(conn)
    _schedule(conn, ["a"], unix_now() - 1)
    assert due_jobs.hold_lease("n1", 5) and not due_jobs.hold_lease("n2", 5)
    assert due_jobs.promote("n2", ["default"], 100) == (-1, False)
    assert conn.llen(keys.queue("default")) == 0
    assert due_jobs.promote("n1", ["default"], 100) == (1, False)
    conn.delete(keys.PROMOTER_LEASE)  # as if n1's lease lapsed
    assert due_jobs.hold_lease("n2", 5) and due_jobs.promote("n1", ["default"], 100) == (-1, False)
    due_jobs.release_lease("n1")  # not the holder: changes nothing
    assert conn.get(keys.PROMOTER_LEASE) == b"n2"


def test_promotion_moves_each_due_job_once_in_batches(conn: redis.Redis) -> None:
    due_jobs = DueJobs(conn)
    due_jobs.hold_lease("n1", 5)
    ids = [f"j{i}" for i in range(2500)]
    _schedule(conn, ids, unix_now() - 0.5)
    _schedule(conn, ["later"], unix_now() + 60)
    calls = []
    while True:
        moved, more = due_jobs.promote("n1", ["default"], 1000)
        calls.append(moved)
        if not more:
            break
    assert calls == [1000, 1000, 500]
    assert due_jobs.promote("n1", ["default"], 1000) == (0, False)  # a repeat moves nothing
    queued = [m.decode() for m in conn.lrange(keys.queue("default"), 0, -1)]
    assert sorted(queued) == sorted(ids) and len(set(queued)) == len(ids)
    assert {conn.hget(keys.job(i), "ferry_promotions") for i in ids} == {b"1"}
    assert conn.zrange(keys.scheduled("default"), 0, -1) == [b"later"]


def test_deleted_and_canceled_jobs_leave_the_registry_without_running(conn: redis.Redis) -> None:
    due_jobs = DueJobs(conn)
    due_jobs.hold_lease("n1", 5)
    _schedule(conn, ["gone"], unix_now() - 1)
    conn.delete(keys.job("gone"))
    _schedule(conn, ["canceled"], unix_now() - 1)
    conn.hset(keys.job("canceled"), "status", "canceled")
    _schedule(conn, ["front"], unix_now() - 1, enqueue_at_front="1")
    conn.rpush(keys.queue("default"), "already-there")
    assert due_jobs.promote("n1", ["default"], 100) == (1, False)
    assert conn.lrange(keys.queue("default"), 0, -1) == [b"front", b"already-there"]  # RQ's enqueue_at_front
    assert conn.zcard(keys.scheduled("default")) == 0


def test_next_due_is_the_earliest_over_the_queues_and_records_the_wake_up(conn: redis.Redis) -> None:
    due_jobs = DueJobs(conn)
    now = unix_now()
    _schedule(conn, ["x"], now + 30, queue="low")
    _schedule(conn, ["y"], now + 2.123456, queue="high")
    assert due_jobs.next_due(["high", "low"], 0.5) == now + 2.123456
    assert float(conn.get(keys.DELAYS_WAKE_AT)) <= now + 0.6  # capped by the poll
    assert due_jobs.next_due(["low"], 60) == now + 30
    assert abs(float(conn.get(keys.DELAYS_WAKE_AT)) - (now + 30)) < 1e-3
    assert due_jobs.next_due(["default"], 1) is None


def test_a_scheduled_job_publishes_a_wake_up_only_when_due_before_the_promoter_looks(
        conn: redis.Redis, client: Client, served: str) -> None:
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.DELAYS_WAKE_CHANNEL)
    conn.set(keys.DELAYS_WAKE_AT, unix_now() + 10)
    client.submit("echo", {}, delay_s=60)  # after the promoter's next look: no wake-up
    client.submit("echo", {}, delay_s=2)  # before it: wake-up
    messages = []
    deadline = time.monotonic() + 1.0  # a None is also what the (ignored) subscribe confirmation reads as
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            messages.append(message)
    pubsub.close()
    assert len(messages) == 1


def test_rq_reads_a_ferry_delayed_job_as_scheduled(conn: redis.Redis, client: Client, served: str) -> None:
    submitted = client.submit("echo", {"value": 1}, delay_s=30)
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    job = Job.fetch(submitted.id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() == "scheduled" and job.func_name == "echo" and job.kwargs == {"value": 1}
    registry = ScheduledJobRegistry(queue=queue)
    assert registry.get_job_ids() == [submitted.id]
    assert abs((registry.get_scheduled_time(submitted.id) - client.status(submitted).due_at).total_seconds()) < 1e-3
