"""Per-job settings: TTLs that really expire, meta in RQ's own field, tags with exact filters and a bounded index."""

from __future__ import annotations

import pydantic
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared import job_listing, job_settings, keys
from shared.client import Client
from shared.models import JobStatus
from tests.support import wait_for


def _gone(conn: redis.Redis, job_id: str) -> bool:
    return not conn.exists(keys.job(job_id)) and not conn.exists(keys.results(job_id))


def test_a_finished_job_and_its_result_expire_after_its_result_ttl(client: Client, conn: redis.Redis,
                                                                   start_node) -> None:
    start_node(processes=1)
    short = client.submit("echo", {"value": 1}, result_ttl_s=1)
    default = client.submit("echo", {"value": 2})
    assert client.result(short, wait_s=10).value == 1 and client.result(default, wait_s=10).value == 2
    assert conn.ttl(keys.job(short.id)) <= 1 < conn.ttl(keys.job(default.id))
    wait_for(lambda: _gone(conn, short.id), timeout=5, what="the finished job to expire")
    assert conn.exists(keys.job(default.id))


def test_failed_and_canceled_jobs_expire_after_their_failure_ttl(client: Client, conn: redis.Redis,
                                                                 start_node) -> None:
    queued = client.submit("echo", {"value": 1}, failure_ttl_s=1, allow_unserved=True, queue="nobody")
    client.cancel(queued)
    start_node(processes=1)
    failed = client.submit("test.fail", {}, retries=0, failure_ttl_s=1)
    assert client.result(failed, wait_s=10).status == JobStatus.FAILED
    wait_for(lambda: _gone(conn, queued.id) and _gone(conn, failed.id), timeout=5, what="both jobs to expire")


def test_meta_is_stored_where_rq_reads_it(client: Client, served: str, conn: redis.Redis) -> None:
    job = client.submit("echo", {"value": 1}, meta={"customer": "acme", "n": [1, 2]})
    assert Job.fetch(job.id, connection=conn, serializer=JSONSerializer).meta == {"customer": "acme", "n": [1, 2]}
    assert client.status(job).meta == {"customer": "acme", "n": [1, 2]}
    assert client.status(client.submit("echo", {"value": 2})).meta == {}


def test_tag_task_queue_and_status_filters_are_exact(client: Client, served: str, conn: redis.Redis,
                                                     settings) -> None:
    a = client.submit("echo", {"value": 1}, tags=["nightly", "acme"])
    b = client.submit("sleep", {"seconds": 1}, tags=["nightly"], queue="high")
    c = client.submit("echo", {"value": 3}, tags=["nightlyx"])
    d = client.submit("echo", {"value": 4}, tags=["nightly"])
    client.cancel(d)

    def ids(**filters) -> list[str]:
        return [j.id for j in job_listing.list_jobs(conn, settings, **filters)]

    assert ids(tag="nightly") == [d.id, b.id, a.id]  # newest first; `nightlyx` is another tag
    assert ids(tag="nightlyx") == [c.id]
    assert ids(tag="nightly", task="echo") == [d.id, a.id]
    assert ids(tag="nightly", queue="high") == [b.id]
    assert ids(tag="nightly", status=JobStatus.CANCELED) == [d.id]
    assert ids(tag="nightly", status=JobStatus.QUEUED, task="echo") == [a.id]
    assert ids(tag="nightly", limit=1) == [d.id]
    assert ids(tag="nobody") == []
    assert client.status(a).tags == ["nightly", "acme"]


def test_the_tag_index_is_trimmed_and_expires_and_drops_expired_jobs(client: Client, served: str,
                                                                     conn: redis.Redis, settings) -> None:
    first = client.submit("echo", {"value": 1}, tags=["t"], result_ttl_s=60, failure_ttl_s=60)
    second = client.submit("echo", {"value": 2}, tags=["t"])
    assert 0 < conn.ttl(keys.tag("t")) <= settings.failure_ttl_s + 86_400
    conn.delete(keys.job(first.id))  # as if it had expired
    assert [j.id for j in job_listing.list_jobs(conn, settings, tag="t")] == [second.id]
    assert conn.zrange(keys.tag("t"), 0, -1) == [second.id.encode()]
    conn.zadd(keys.tag("t"), {f"old{i}": i for i in range(job_settings.TAG_INDEX_MAX + 5)})
    client.submit("echo", {"value": 3}, tags=["t"])
    assert conn.zcard(keys.tag("t")) == job_settings.TAG_INDEX_MAX


def test_bad_settings_are_refused_with_one_clear_message(client: Client, served: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="meta is 5,0.. bytes of JSON, above the bound of 4,096"):
        client.submit("echo", {"value": 1}, meta={"x": "y" * 5000})
    with pytest.raises(pydantic.ValidationError, match="11 tags given, at most 10"):
        client.submit("echo", {"value": 1}, tags=[f"t{i}" for i in range(11)])
    with pytest.raises(pydantic.ValidationError, match="should match pattern"):
        client.submit("echo", {"value": 1}, tags=["has,comma"])
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        client.submit("echo", {"value": 1}, result_ttl_s=0)


def test_the_task_decorator_ttls_apply_unless_the_job_sets_its_own(client: Client, conn: redis.Redis,
                                                                   start_node) -> None:
    start_node(processes=1)
    finished = client.submit("test.short_lived", {})
    failed = client.submit("test.short_lived", {"fail": True}, retries=0)
    kept = client.submit("test.short_lived", {}, result_ttl_s=60)
    assert client.result(kept, wait_s=10).value == "ok" and client.result(finished, wait_s=10).value == "ok"
    assert client.result(failed, wait_s=10).status == JobStatus.FAILED
    assert conn.ttl(keys.job(kept.id)) > 50
    wait_for(lambda: _gone(conn, finished.id) and _gone(conn, failed.id), timeout=5,
             what="the decorator's 1 s TTLs to expire both jobs")
    assert conn.exists(keys.job(kept.id))
