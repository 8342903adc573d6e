"""Idempotency keys: same job returns the first, a different job is a conflict, a failed or canceled job's key
is given back (client, HTTP and CLI say the same words)."""

from __future__ import annotations

import pytest
import redis

from shared import keys
from shared.client import Client
from shared.errors import EXIT_CONFLICT, IdempotencyConflict
from shared.models import JobStatus


def test_the_same_key_and_args_return_the_first_job(client: Client, served: str) -> None:
    first = client.submit("echo", {"value": 1}, idempotency_key="order-1")
    again = client.submit("echo", {"value": 1}, idempotency_key="order-1")
    assert (again.id, again.duplicate, first.duplicate) == (first.id, True, False)


def test_the_same_key_with_other_args_task_or_queue_is_a_conflict_naming_the_job(
        client: Client, served: str, conn: redis.Redis) -> None:
    first = client.submit("echo", {"value": 1}, idempotency_key="order-2")
    for task, args, queue in (("echo", {"value": 2}, None), ("sleep", {"seconds": 1}, None),
                              ("echo", {"value": 1}, "high")):
        with pytest.raises(IdempotencyConflict) as caught:
            client.submit(task, args, queue=queue, idempotency_key="order-2")
        message = f"idempotency key 'order-2' already belongs to job {first.id} (echo on queue default)"
        assert message in str(caught.value)
        assert caught.value.exit_code == EXIT_CONFLICT and caught.value.http_status == 409
    assert conn.llen(keys.queue("default")) == 1 and conn.llen(keys.queue("high")) == 0


def test_a_key_is_given_back_when_its_job_is_canceled(client: Client, served: str, conn: redis.Redis) -> None:
    first = client.submit("echo", {"value": 1}, idempotency_key="order-3")
    client.cancel(first)
    assert conn.get(keys.idempotency("order-3")) is None
    second = client.submit("echo", {"value": 2}, idempotency_key="order-3")
    assert second.id != first.id and not second.duplicate

    assert conn.get(keys.idempotency("order-3")) == second.id.encode()


def test_a_failed_job_can_be_resubmitted_with_its_key_and_a_finished_one_cannot(client: Client, start_node) -> None:
    start_node(processes=1)
    failed = client.submit("test.fail", {"message": "no"}, retries=0, idempotency_key="pay-1")
    assert client.result(failed, wait_s=10).status == JobStatus.FAILED
    retried = client.submit("test.fail", {"message": "no"}, retries=0, idempotency_key="pay-1")
    assert retried.id != failed.id and not retried.duplicate
    assert client.result(retried, wait_s=10).status == JobStatus.FAILED

    done = client.submit("echo", {"value": 5}, idempotency_key="pay-2")
    assert client.result(done, wait_s=10).value == 5
    again = client.submit("echo", {"value": 5}, idempotency_key="pay-2")
    assert (again.id, again.duplicate, again.status) == (done.id, True, JobStatus.FINISHED)
