"""A job with depends_on and an idempotency key: the same semantics as any job's key (issue 8, gaps item 2)."""

from __future__ import annotations

import pytest

from shared import keys
from shared.errors import IdempotencyConflict
from shared.models import JobStatus
from shared.workflows import chain, step


def test_same_key_same_dependent_request_returns_the_first_job(client, served) -> None:
    first = client.submit("echo", {"value": 1})
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-same")
    again = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-same")
    assert (again.id, again.duplicate, again.status) == (one.id, True, JobStatus.DEFERRED)


def test_same_key_different_dependent_request_is_a_conflict(client, served) -> None:
    first = client.submit("echo", {"value": 1})
    other = client.submit("echo", {"value": 1})
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-diff")
    with pytest.raises(IdempotencyConflict, match=f"idempotency key 'dk-diff' already belongs to job {one.id}"):
        client.submit("echo", {"value": 3}, depends_on=[first], idempotency_key="dk-diff")  # other args
    with pytest.raises(IdempotencyConflict):
        client.submit("echo", {"value": 2}, depends_on=[other], idempotency_key="dk-diff")  # other dependency
    with pytest.raises(IdempotencyConflict):
        client.submit("echo", {"value": 2}, idempotency_key="dk-diff")  # no dependency at all
    plain = client.submit("echo", {"value": 5}, idempotency_key="dk-plain")
    with pytest.raises(IdempotencyConflict):  # and a plain job's key, reused by a dependent job
        client.submit("echo", {"value": 5}, depends_on=[first], idempotency_key="dk-plain")
    assert client.status(plain).status == JobStatus.QUEUED


def test_dependent_failed_by_a_canceled_dependency_gives_its_key_back(client, conn, served) -> None:
    first = client.submit("echo", {"value": 1})
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-fail")
    client.cancel(first)
    assert client.status(one).status == JobStatus.FAILED
    assert conn.get(keys.idempotency("dk-fail")) is None
    second = client.submit("echo", {"value": 2}, depends_on=[client.submit("echo", {"value": 1})],
                           idempotency_key="dk-fail")
    assert second.id != one.id and not second.duplicate and second.status == JobStatus.DEFERRED


def test_dependent_failed_by_its_dependencys_failure_gives_its_key_back(client, conn, start_node) -> None:
    start_node(processes=1)
    bad = client.submit("test.fail", {"message": "kaput"}, retries=0)
    one = client.submit("echo", {"value": 2}, depends_on=[bad], idempotency_key="dk-run")
    assert client.result(one, wait_s=15).status == JobStatus.FAILED
    again = client.submit("echo", {"value": 2}, depends_on=[bad], idempotency_key="dk-run")
    assert again.id != one.id and not again.duplicate and again.status == JobStatus.FAILED  # failed at submit
    assert conn.get(keys.idempotency("dk-run")) is None  # ... and gave its key back in the same step


def test_canceled_dependent_gives_its_key_back(client, conn, served) -> None:
    first = client.submit("echo", {"value": 1})
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-cancel")
    assert client.cancel(one).status == JobStatus.CANCELED
    assert conn.get(keys.idempotency("dk-cancel")) is None
    again = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-cancel")
    assert again.id != one.id and not again.duplicate


def test_dependent_canceled_with_its_workflow_gives_its_key_back(client, conn, served) -> None:
    wf = client.submit_workflow(chain(step("sleep", {"seconds": 5}), step("echo", {"value": 1})))
    first = wf.jobs[-1]  # deferred behind the first step
    one = client.submit("echo", {"value": 2}, depends_on=[first], idempotency_key="dk-wf")
    client.cancel_workflow(wf)  # the dependency is canceled with its workflow: the dependent fails
    assert client.status(one).status == JobStatus.FAILED
    assert conn.get(keys.idempotency("dk-wf")) is None
