"""Dependencies on RQ 3's data model: Ferry's `depends_on`, both failure policies, and plain RQ's `depends_on`."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import Dependency as RQDependency
from rq.registry import DeferredJobRegistry
from rq.serializers import JSONSerializer

from shared import keys
from shared.models import Dependency, JobStatus
from tests.support import wait_for


@pytest.fixture()
def node(start_node):
    return start_node(processes=2)


def test_dependent_waits_then_runs(client, conn, node) -> None:
    first = client.submit("sleep", {"seconds": 0.5})
    second = client.submit("echo", {"value": "after"}, depends_on=[first])
    assert second.status == JobStatus.DEFERRED
    assert conn.zscore(keys.deferred("default"), second.id) is not None  # RQ's DeferredJobRegistry
    assert conn.sismember(keys.dependents(first.id), second.id)
    assert client.result(second, wait_s=15).value == "after"
    first_ended = client.status(first).ended_at
    assert client.status(second).started_at >= first_ended
    assert conn.zscore(keys.deferred("default"), second.id) is None


def test_dependency_already_finished_runs_at_once(client, node) -> None:
    first = client.submit("echo", {"value": 1})
    client.result(first, wait_s=10)
    second = client.submit("echo", {"value": 2}, depends_on=[first.id])
    assert second.status == JobStatus.QUEUED
    assert client.result(second, wait_s=10).value == 2


def test_failed_dependency_fails_dependent_naming_it(client, node) -> None:
    bad = client.submit("test.fail", {"message": "kaput"}, retries=0)
    after = client.submit("echo", {"value": 1}, depends_on=[bad])
    later = client.submit("echo", {"value": 2}, depends_on=[after])  # fails in turn, down the chain
    result = client.result(later, wait_s=15)
    assert result.status == JobStatus.FAILED
    first = client.result(after, wait_s=1)
    assert first.status == JobStatus.FAILED and bad.id in (first.error or "") and "kaput" in (first.error or "")
    assert after.id in (result.error or "")


def test_run_anyway_policy(client, node) -> None:
    bad = client.submit("test.fail", {"message": "kaput"}, retries=0)
    ok = client.submit("echo", {"value": 0})
    after = client.submit("echo", {"value": "ran"}, depends_on=[Dependency(id=bad.id, on_failure="run"), ok])
    assert client.result(after, wait_s=15).value == "ran"
    assert client.status(bad).status == JobStatus.FAILED


def test_cancel_deferred_job(client, served) -> None:
    first = client.submit("echo", {"value": 1})
    second = client.submit("echo", {"value": 2}, depends_on=[first])
    assert client.cancel(second).status == JobStatus.CANCELED
    assert client.cancel(first).status == JobStatus.CANCELED


def test_plain_rq_depends_on_runs_under_ferry(conn, node) -> None:
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    first = queue.enqueue("sleep", seconds=0.3)
    second = queue.enqueue("echo", value="rq-dep", depends_on=first)
    bad = queue.enqueue("test.fail", message="no")
    allowed = queue.enqueue("echo", value="anyway", depends_on=RQDependency([bad], allow_failure=True))
    assert second.id in DeferredJobRegistry("default", connection=conn).get_job_ids()
    for job, value in ((second, "rq-dep"), (allowed, "anyway")):
        wait_for(lambda job=job: job.get_status(refresh=True) == "finished", timeout=30, what=f"{job.id} finished")
        assert job.latest_result().return_value == value
    assert DeferredJobRegistry("default", connection=conn).get_job_ids() == []


def test_depends_on_with_an_idempotency_key(client, served) -> None:
    first = client.submit("echo", {"value": 1})
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dep-1")
    again = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dep-1")
    assert again.duplicate and again.id == one.id and again.status == JobStatus.DEFERRED


def test_dependency_already_failed_at_submit(client, node) -> None:
    bad = client.submit("test.fail", {"message": "early"}, retries=0)
    assert client.result(bad, wait_s=10).status == JobStatus.FAILED
    failed = client.submit("echo", {"value": 1}, depends_on=[bad])
    assert failed.status == JobStatus.FAILED and bad.id in (client.status(failed).error or "")
    anyway = client.submit("echo", {"value": 2}, depends_on=[Dependency(id=bad.id, on_failure="run")])
    assert anyway.status == JobStatus.QUEUED and client.result(anyway, wait_s=10).value == 2
