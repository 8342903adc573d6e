"""`ferry purge` drops a queue's queued, scheduled and limit-waiting jobs in one step, giving back their
idempotency keys and their limits' waiting places; started jobs run on (gaps item 4)."""

from __future__ import annotations

import redis

from shared import keys
from shared.client import Client
from shared.models import JobStatus
from tests.conftest import TEST_TASK_MODULES
from tests.support import wait_for

KEY = {"limit_key": "purge-42", "concurrency_limit": 1, "retries": 0}


def test_purge_drops_queued_scheduled_and_limit_waiting_jobs(cli, client: Client, conn: redis.Redis, start_node,
                                                             env: dict[str, str]) -> None:
    limit_env = {**env, "FERRY_TASK_MODULES": f"{TEST_TASK_MODULES},tests.limit_tasks", "FERRY_IDLE_POLL_S": "0.2"}
    start_node(env=limit_env, processes=2, queues="low")
    holder = client.submit("test.keyed", {"label": "p", "seconds": 60}, queue="low", **KEY)
    wait_for(lambda: client.status(holder).status == JobStatus.STARTED, 10, what="the limit's holder to start")
    waiters = [client.submit("test.keyed", {"label": "p", "seconds": 0}, queue="low", idempotency_key=f"pw-{i}",
                             **KEY) for i in range(2)]
    wait_for(lambda: all(client.status(w).waiting_for for w in waiters), 10, what="both to be set aside")
    blocker = client.submit("sleep", {"seconds": 60}, queue="low")  # the other process: nobody claims after it
    wait_for(lambda: client.status(blocker).status == JobStatus.STARTED, 10, what="the blocker to start")
    queued = [client.submit("echo", {"value": i}, queue="low", idempotency_key=f"pq-{i}") for i in range(2)]
    later = client.submit("echo", {"value": "later"}, queue="low", delay_s=3600, idempotency_key="ps")
    dependent = client.submit("echo", {"value": "after"}, queue="low", depends_on=[queued[0]])
    assert conn.hget(keys.LIMITS_WAITING_BY_QUEUE, "low") == b"2"

    purged = cli("purge", "low", "--yes")
    assert purged.exit_code == 0, purged.stdout
    assert purged.stdout.splitlines()[0] == "purged 2 queued, 1 scheduled and 2 limit-waiting jobs from queue low"

    for job in [*waiters, *queued, later]:
        assert not conn.exists(keys.job(job.id))
    for key in ("pw-0", "pw-1", "pq-0", "pq-1", "ps"):
        assert conn.get(keys.idempotency(key)) is None  # given back: the key can be used again
    assert conn.llen(keys.queue("low")) == 0 and conn.zcard(keys.scheduled("low")) == 0
    assert conn.hget(keys.LIMITS_WAITING_BY_QUEUE, "low") in (None, b"0")
    assert not any("purge-42" in m.decode() for m in conn.smembers(keys.LIMITS_WAITING))
    assert conn.llen(keys.limit("key:purge-42") + ":waiting") == 0
    failed = client.status(dependent)  # its dependency was purged: it fails naming it, it does not run
    assert failed.status == JobStatus.FAILED and queued[0].id in (failed.error or "") and "purged" in failed.error
    assert client.status(holder).status == JobStatus.STARTED and client.status(blocker).status == JobStatus.STARTED
    again = client.submit("echo", {"value": 0}, queue="low", idempotency_key="pq-0")
    assert not again.duplicate and again.id != queued[0].id

    for job in (holder, blocker):
        client.cancel(job)  # stop them now, not at the node's stop


def test_purge_says_what_it_removes(cli) -> None:
    shown = cli("purge", "--help")
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    for words in ("queued jobs", "scheduled jobs", "concurrency or rate limit", "idempotency keys", "Started jobs"):
        assert words in text, text

