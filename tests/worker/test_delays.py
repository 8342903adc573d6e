"""Delayed jobs on real nodes: due times kept, RQ's enqueue_in/enqueue_at honoured, one promoter at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared import keys
from shared.client import Client
from shared.models import JobStatus
from tests.support import wait_for


def _finished(client: Client, job_id: str) -> bool:
    return client.status(job_id).status == JobStatus.FINISHED


def test_delayed_job_starts_no_earlier_than_due_and_within_a_second_after(start_node, client: Client,
                                                                          conn: redis.Redis) -> None:
    start_node(processes=1)
    submitted = client.submit("echo", {"value": "later"}, delay_s=1.5)
    assert submitted.status == JobStatus.SCHEDULED
    info = client.status(submitted)
    assert info.status == JobStatus.SCHEDULED and info.due_at is not None and info.started_at is None
    assert conn.zscore(keys.scheduled("default"), submitted.id) is not None  # RQ's own scheduled registry
    assert [q.scheduled for q in client.admin.queues() if q.name == "default"] == [1]
    assert client.result(submitted, wait_s=10).value == "later"
    info = client.status(submitted)
    assert info.started_at is not None and info.due_at is not None
    assert info.started_at >= info.due_at, (info.started_at, info.due_at)
    assert (info.started_at - info.due_at).total_seconds() < 1.0, (info.started_at, info.due_at)
    assert conn.zcard(keys.scheduled("default")) == 0


def test_a_job_due_sooner_wakes_the_sleeping_promoter(start_node, client: Client, env: dict[str, str]) -> None:
    # A 30 s poll and a 60 s lease (renewed every 20 s): only the enqueue's wake-up can start it in time.
    start_node(processes=1, env={**env, "FERRY_SCHEDULED_POLL_S": "30", "FERRY_PROMOTER_LEASE_S": "60"})
    far = client.submit("echo", {"value": "far"}, delay_s=25)
    wait_for(lambda: client.conn.get(keys.DELAYS_WAKE_AT), what="the promoter to go to sleep")
    soon = client.submit("echo", {"value": "soon"}, delay_s=1)
    assert client.result(soon, wait_s=10).value == "soon"
    info = client.status(soon)
    assert info.started_at is not None and info.due_at is not None
    assert 0 <= (info.started_at - info.due_at).total_seconds() < 1.0
    assert client.status(far).status == JobStatus.SCHEDULED


def test_run_at_in_the_client_takes_an_aware_datetime(start_node, client: Client) -> None:
    start_node(processes=1)
    due = datetime.now(UTC) + timedelta(seconds=1)
    submitted = client.submit("echo", {"value": 1}, run_at=due)
    assert client.result(submitted, wait_s=10).value == 1
    info = client.status(submitted)
    assert info.due_at is not None and abs((info.due_at - due).total_seconds()) < 1e-3
    assert info.started_at is not None and info.started_at >= due


def test_rq_enqueue_in_and_enqueue_at_jobs_on_a_ferry_queue_run(start_node, client: Client,
                                                                  conn: redis.Redis) -> None:
    start_node(processes=1)
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    later = queue.enqueue_in(timedelta(seconds=1), "echo", value="in")
    at = queue.enqueue_at(datetime.now(UTC) + timedelta(seconds=1), "echo", value="at")
    assert later.get_status() == "scheduled"
    assert client.result(later.id, wait_s=10).value == "in"
    assert client.result(at.id, wait_s=10).value == "at"
    assert conn.zcard(keys.scheduled("default")) == 0


def test_cancel_of_a_scheduled_job_takes_it_out_of_the_registry(served: str, client: Client,
                                                                 conn: redis.Redis) -> None:
    submitted = client.submit("echo", {"value": 1}, delay_s=60)
    info = client.cancel(submitted)
    assert info.status == JobStatus.CANCELED
    assert conn.zscore(keys.scheduled("default"), submitted.id) is None
    assert client.result(submitted).status == JobStatus.CANCELED


def test_promoter_failover_when_the_lease_holder_is_killed_moves_each_job_once(
        start_node, client: Client, conn: redis.Redis, env: dict[str, str]) -> None:
    fast = {**env, "FERRY_PROMOTER_LEASE_S": "1"}
    first = start_node(processes=1, env=fast)
    second = start_node(processes=1, env=fast)
    holder_id = wait_for(lambda: conn.get(keys.PROMOTER_LEASE), what="a promoter lease holder").decode()
    holder, other = (first, second) if holder_id == first.node_id else (second, first)
    jobs = [client.submit("echo", {"value": i}, delay_s=1.0 + i * 0.05) for i in range(20)]
    holder.kill()
    wait_for(lambda: conn.get(keys.PROMOTER_LEASE) == other.node_id.encode(), timeout=10,
             what="the surviving node to take the promoter lease")
    wait_for(lambda: all(_finished(client, j.id) for j in jobs), timeout=20, what="every delayed job to finish")
    assert [client.result(j).value for j in jobs] == list(range(20))
    promotions = [conn.hget(keys.job(j.id), "ferry_promotions") for j in jobs]
    assert promotions == [b"1"] * 20  # each moved exactly once
