"""The lifecycle scripts on their own, against a real Redis: each is safe to run twice.

A command can reach Redis twice (redis-py re-sends after a ConnectionError, Ferry re-sends after an
outage): the second run must change nothing: no second job popped, no second result entry, no second count.
"""

from __future__ import annotations

import re
import time
import zlib

import pytest
import redis

from shared import job_metrics, keys, wire
from shared.client import Client
from shared.errors import InvalidRequest, JobNotFound
from shared.lifecycle import (
    NODE_DIED,
    WORKER_DIED,
    Claimed,
    Failure,
    Lifecycle,
    Timing,
    functions,
    lua,
    new_execution_id,
)
from shared.settings import Settings

WORKER = "tnode.0.1"


@pytest.fixture()
def lifecycle(conn: redis.Redis, settings: Settings) -> Lifecycle:
    return Lifecycle(conn, settings)


def submit(client: Client, n: int = 1, retries: int = 0, queue: str = "default") -> list[str]:
    return [client.submit("echo", {"value": i}, queue=queue, retries=retries, allow_unserved=True).id for i in range(n)]


def metric(conn: redis.Redis, field: str) -> int:
    return int(float(conn.hget(job_metrics.METRICS_KEY, field) or 0))


def test_claim_replay_returns_the_same_jobs_and_pops_nothing_more(client: Client, conn: redis.Redis,
                                                                   lifecycle: Lifecycle):
    ids = submit(client, 3)
    execution = new_execution_id()
    first = lifecycle.claim(WORKER, ["default"], execution, count=2)
    again = lifecycle.claim(WORKER, ["default"], execution, count=2)
    assert [j.id for j in first] == ids[:2]
    assert [j.id for j in again] == ids[:2]
    assert again[0].data == first[0].data and again[0].task == "echo"
    assert conn.lrange(keys.queue("default"), 0, -1) == [ids[2].encode()]
    assert conn.zcard(keys.started("default")) == 2
    assert not conn.hexists(keys.IDLE_WORKERS, WORKER)
    # a new execution id claims the next job; an empty claim registers the worker idle
    assert [j.id for j in lifecycle.claim(WORKER, ["default"], new_execution_id(), count=5)] == ids[2:]
    assert lifecycle.claim(WORKER, ["default"], new_execution_id()) == []
    assert conn.hget(keys.IDLE_WORKERS, WORKER) == b"default"
    assert conn.smembers(keys.idle_on("default")) == {WORKER.encode()}


def test_finish_twice_writes_one_result_and_counts_once(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    ids = submit(client, 2)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    timing = Timing("echo", 0.002, 0.01)
    next_execution = new_execution_id()
    results = [lifecycle.finish(job, WORKER, b"1", 1.0, 2.0, timing, claim_from=["default"], claim_count=1,
                                next_execution_id=next_execution) for _ in range(2)]
    assert [r[0].outcome for r in results] == ["finished", "already"]
    assert [[j.id for j in r[1]] for r in results] == [[ids[1]], [ids[1]]]  # the claim part replayed too
    assert conn.xlen(keys.results(job.id)) == 1
    assert conn.hget(keys.job(job.id), "status") == b"finished"
    assert metric(conn, job_metrics.jobs_field("default", "echo", "finished")) == 1
    assert metric(conn, job_metrics.bucket_field("run", "echo", 0.002)) == 1
    assert metric(conn, job_metrics.bucket_field("wait", "echo", 0.01)) == 1
    assert conn.zscore(keys.finished("default"), job.id) is not None
    assert client.result(job.id).value == 1


def test_finish_publishes_done(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    pubsub = conn.pubsub()
    pubsub.subscribe(keys.DONE_CHANNEL)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    (job_id,) = submit(client)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    lifecycle.finish(job, WORKER, b"null", 1.0, 2.0, Timing("echo", 0, 0))
    message = pubsub.get_message(timeout=2)
    assert message and message["data"] == job_id.encode()
    pubsub.close()


def test_settle_twice_retries_once_and_counts_once(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    (job_id,) = submit(client, retries=1)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    failure = Failure("boom", "Traceback: boom", retryable=True)
    outcomes = [lifecycle.settle(job, WORKER, failure).outcome for _ in range(2)]
    assert outcomes == ["retried", "gone"]
    assert conn.lrange(keys.queue("default"), 0, -1) == [job_id.encode()]
    assert conn.hget(keys.job(job_id), "retries_left") == b"0"
    assert metric(conn, job_metrics.jobs_field("default", "echo", "retried")) == 1
    # second execution fails for good, once
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    assert [lifecycle.settle(job, WORKER, failure).outcome for _ in range(2)] == ["failed", "gone"]
    assert conn.xlen(keys.results(job_id)) == 1
    assert metric(conn, job_metrics.jobs_field("default", "echo", "failed")) == 1
    assert client.result(job_id).error == "boom"


def test_late_finish_after_requeue_keeps_the_result_and_the_job_does_not_run_again(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    """A worker cut off past its deadline finishes after the reaper requeued its job: the result is kept."""
    (job_id,) = submit(client, retries=2)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    conn.zadd(keys.started("default"), {job.member: 1})  # its deadline passed
    reaped = lifecycle.reap(Failure("abandoned", "abandoned", True, reason=NODE_DIED, front=True))
    assert [(o.job_id, o.outcome) for o in reaped] == [(job_id, "retried")]
    assert conn.llen(keys.queue("default")) == 1
    outcome, _ = lifecycle.finish(job, WORKER, b"0", 1.0, 2.0, Timing("echo", 0, 0))
    assert outcome.outcome == "finished"
    assert conn.llen(keys.queue("default")) == 0
    assert conn.xlen(keys.results(job_id)) == 1
    assert metric(conn, job_metrics.requeued_field("default", "echo", "node_died")) == 1


def test_dead_worker_requeue_puts_its_jobs_at_the_front_and_uses_one_retry(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    ids = submit(client, 5, retries=1)
    held = lifecycle.claim(WORKER, ["default"], new_execution_id(), count=3)
    failure = Failure("died", "died", True, reason=WORKER_DIED, front=True)
    first = lifecycle.requeue_held(WORKER, failure)
    assert sorted((o.job_id, o.outcome) for o in first) == sorted(
        [(ids[0], "retried"), (ids[1], "released"), (ids[2], "released")])
    assert lifecycle.requeue_held(WORKER, failure) == []  # a repeat changes nothing
    assert [i.decode() for i in conn.lrange(keys.queue("default"), 0, -1)] == ids  # same order, at the front
    assert conn.hget(keys.job(held[0].id), "retries_left") == b"0"  # the running one used its retry
    assert conn.hget(keys.job(held[1].id), "retries_left") == b"1"  # the prefetched ones did not
    assert conn.zcard(keys.started("default")) == 0
    assert metric(conn, job_metrics.requeued_field("default", "echo", "worker_died")) == 1


def test_release_gives_prefetched_jobs_back_in_order(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    ids = submit(client, 4)
    execution = new_execution_id()
    held = lifecycle.claim(WORKER, ["default"], execution, count=3)
    assert [o.outcome for o in lifecycle.release(WORKER, execution, held[1:])] == ["released", "released"]
    assert [o.outcome for o in lifecycle.release(WORKER, execution, held[1:])] == ["gone", "gone"]
    assert [i.decode() for i in conn.lrange(keys.queue("default"), 0, -1)] == ids[1:]
    assert conn.hget(keys.job(ids[1]), "status") == b"queued"


def test_cancel_and_requeue_failed_are_idempotent(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    a, b = submit(client, 2)
    assert lifecycle.cancel(a) == ("canceled", "")
    assert lifecycle.cancel(a) == ("already", "canceled")
    assert metric(conn, job_metrics.jobs_field("default", "echo", "canceled")) == 1
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    assert job.id == b
    lifecycle.settle(job, WORKER, Failure("bad", "bad", retryable=False))
    assert [lifecycle.requeue_failed(b, "default") for _ in range(2)] == [True, False]
    assert conn.lrange(keys.queue("default"), 0, -1) == [b.encode()]
    assert conn.hget(keys.job(b), "status") == b"queued"


def dispatched_to(channels: dict[str, redis.client.PubSub]) -> dict[str, Claimed]:
    """What each subscriber received as a dispatch (lua `dispatch`), after one enqueue."""
    out = {}
    for name, pubsub in channels.items():
        message = pubsub.get_message(timeout=0.3)
        if message is not None:
            job = Claimed.from_dispatch(message["data"])
            assert job is not None, message
            out[name] = job
    return out


def test_enqueue_dispatches_each_job_to_one_idle_worker_of_its_queue(client: Client, conn: redis.Redis,
                                                                   lifecycle: Lifecycle):
    channels = {name: conn.pubsub() for name in ("w.0.1", "w.0.2", "w.0.3")}
    for name, pubsub in channels.items():
        pubsub.subscribe(keys.control_channel(name))
        assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    submit(client)
    assert all(p.get_message(timeout=0.1) is None for p in channels.values())  # nobody idle: nothing sent
    lifecycle.claim("w.0.1", ["default"], new_execution_id())
    for name in channels:  # every queue empty: all three register idle (w.0.3 on another queue only)
        lifecycle.claim(name, ["default"] if name != "w.0.3" else ["other"], new_execution_id())
    conn.hset(keys.IDLE_WORKERS, "dead.0.9", "default")
    conn.sadd(keys.idle_on("default"), "dead.0.9")  # registered idle, but its node died (no worker record)
    got: dict[str, Claimed] = {}
    ids = []
    for _ in range(3):
        ids += submit(client)
        got.update(dispatched_to(channels))
    assert sorted(got) == ["w.0.1", "w.0.2"]  # one job each, each idle worker once, never the other queue's
    assert sorted(job.id for job in got.values()) == sorted(ids[:2])
    for name, job in got.items():  # claimed for that worker, as its own claim would have
        assert job.dispatched and job.task == "echo" and job.queue == "default"
        assert conn.hget(keys.job(job.id), "status") == b"started"
        assert conn.hget(keys.job(job.id), "worker_name") == name.encode()
        assert conn.zscore(keys.started("default"), job.member) is not None
    assert conn.lrange(keys.queue("default"), 0, -1) == [ids[2].encode()]  # nobody idle any more: it waits
    assert not conn.hexists(keys.IDLE_WORKERS, "dead.0.9") and conn.scard(keys.idle_on("default")) == 0
    assert conn.hget(keys.IDLE_WORKERS, "w.0.3") == b"other"
    for pubsub in channels.values():
        pubsub.close()


def test_a_dispatch_nobody_receives_is_given_back(client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    assert lifecycle.claim(WORKER, ["default"], new_execution_id()) == []  # idle, but nobody listens for it
    (job_id,) = submit(client)
    assert conn.lrange(keys.queue("default"), 0, -1) == [job_id.encode()]
    assert conn.hget(keys.job(job_id), "status") == b"queued"
    assert conn.zcard(keys.started("default")) == 0 and not conn.hexists(keys.IDLE_WORKERS, WORKER)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]  # nothing was used up: it runs normally
    assert job.id == job_id and not job.dispatched


def test_an_idle_claim_returns_what_was_dispatched_to_it_and_retire_gives_it_back(client: Client, conn: redis.Redis,
                                                                                 lifecycle: Lifecycle):
    pubsub = conn.pubsub()
    pubsub.subscribe(keys.control_channel(WORKER))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    assert lifecycle.claim(WORKER, ["default"], new_execution_id()) == []
    first, second = submit(client, 2)
    (sent,) = dispatched_to({WORKER: pubsub}).values()
    assert sent.id == first
    # the worker's own claim (a poll that crossed the message) returns it first, with its execution id
    execution = new_execution_id()
    claimed = lifecycle.claim(WORKER, ["default"], execution, count=2)
    assert [(j.id, j.execution_id) for j in claimed] == [(first, sent.execution_id), (second, execution)]
    again = lifecycle.claim(WORKER, ["default"], execution, count=2)  # a re-sent claim: the same, nothing popped
    assert [(j.id, j.execution_id) for j in again] == [(first, sent.execution_id), (second, execution)]
    # stopping: everything it holds and never started goes back, in order, no retry used
    assert sorted((o.job_id, o.outcome) for o in lifecycle.retire(WORKER)) == sorted([(first, "released"),
                                                                                        (second, "released")])
    assert conn.lrange(keys.queue("default"), 0, -1) == [first.encode(), second.encode()]
    assert conn.zcard(keys.started("default")) == 0 and lifecycle.retire(WORKER) == []
    pubsub.close()


def test_bounded_inflate_stops_a_zlib_bomb():
    bomb = zlib.compress(b"\0" * (50 * 1024 * 1024), 9)
    assert len(bomb) < 100_000
    with pytest.raises(InvalidRequest, match="FERRY_MAX_JOB_DATA_BYTES"):
        wire.inflate(bomb, 1024 * 1024)
    assert wire.inflate(zlib.compress(b"x" * 1000), 1000) == b"x" * 1000
    assert wire.inflate(b"not zlib", 100) == b"not zlib"
    with pytest.raises(InvalidRequest):
        wire.decode_data(bomb, 1024 * 1024)


def test_claim_does_not_send_data_over_the_bound(client: Client, conn: redis.Redis, settings: Settings):
    (job_id,) = submit(client)
    conn.hset(keys.job(job_id), "data", b"x" * 2048)
    small = Lifecycle(conn, settings.model_copy(update={"max_job_data_bytes": 1024}))
    job = small.claim(WORKER, ["default"], new_execution_id())[0]
    assert job.data == b"" and job.data_bytes == 2048


@pytest.mark.parametrize("seconds", [0.0, 0.0005, 0.001, 0.0011, 0.3, 600.0, 601.0, 1e9])
def test_cached_histogram_fields_match_job_metrics(seconds: float):
    run, _, _, wait, _, _ = Timing("t", seconds, seconds).args()
    assert run == job_metrics.bucket_field("run", "t", seconds)
    assert wait == job_metrics.bucket_field("wait", "t", seconds)


def test_pipelined_finish_with_a_refill_claim_is_read_back_and_replays_the_same(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    ids = submit(client, 3)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    lifecycle.load()
    pipe = conn.connection_pool.get_connection()
    refill = new_execution_id()
    args = lifecycle.finish_args(job, WORKER, b"7", 1.0, 2.0, Timing("echo", 0, 0), claim_from=["default"],
                                 claim_count=4, next_execution_id=refill)
    lifecycle.send_finish(pipe, args)
    outcome, claimed = lifecycle.read_finish(pipe, job.id, refill)
    conn.connection_pool.release(pipe)
    assert outcome.outcome == "finished" and [j.id for j in claimed] == ids[1:]
    again, replayed = lifecycle.finish_again(job.id, refill, args)  # what a worker sends after a lost reply
    assert again.outcome == "already" and [j.id for j in replayed] == ids[1:]
    assert conn.xlen(keys.results(job.id)) == 1 and client.result(job.id).value == 7


def test_reap_forgets_idle_workers_whose_record_expired(conn: redis.Redis, lifecycle: Lifecycle):
    conn.hset(keys.IDLE_WORKERS, mapping={"gone.0.1": "default", "alive.0.2": "default"})
    conn.sadd(keys.idle_on("default"), "gone.0.1", "alive.0.2")
    conn.hset(keys.worker("alive.0.2"), "state", "idle")
    lifecycle.reap(Failure("x", "x", True, reason=NODE_DIED))
    assert conn.hkeys(keys.IDLE_WORKERS) == [b"alive.0.2"]
    assert conn.smembers(keys.idle_on("default")) == {b"alive.0.2"}


def test_a_refill_claimed_while_the_last_job_runs_keeps_that_job_first_in_the_claim_record(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    """Worker killed while running its last prefetched job, a refill already claimed: the running job is the one
    requeued with a retry (by the supervisor, not left to the reaper), the refill's jobs go back unused."""
    ids = submit(client, 4, retries=1)
    first, running = lifecycle.claim(WORKER, ["default"], new_execution_id(), count=2)
    refill = new_execution_id()
    _, claimed = lifecycle.finish(first, WORKER, b"1", 1.0, 2.0, Timing("echo", 0, 0), next_job=running.id,
                                  claim_from=["default"], claim_count=2, next_execution_id=refill)
    assert [j.id for j in claimed] == ids[2:]
    assert conn.hget(keys.worker(WORKER), "current_job") == running.id.encode()
    outcomes = lifecycle.requeue_held(WORKER, Failure("died", "died", True, reason=WORKER_DIED, front=True))
    assert sorted((o.job_id, o.outcome) for o in outcomes) == sorted(
        [(running.id, "retried"), (ids[2], "released"), (ids[3], "released")])
    assert conn.hget(keys.job(running.id), "retries_left") == b"0"
    assert conn.hget(keys.job(ids[2]), "retries_left") == b"1"
    assert [i.decode() for i in conn.lrange(keys.queue("default"), 0, -1)] == ids[1:]
    assert conn.zcard(keys.started("default")) == 0


def test_prelude_state_that_changes_in_a_call_is_reset_for_the_next_function_call():
    """Redis functions keep the prelude's variables between calls: any that a call assigns must be reset."""
    assigned = set()
    top = [name.strip() for line in lua.PRELUDE.splitlines()
           if (m := re.match(r"^local (?!function)([\w, ]+?)(=|$)", line)) for name in m.group(1).split(",")]
    for name in top:
        if any(re.match(rf"^\s+{name}\s*=[^=]", line) for line in lua.PRELUDE.splitlines()):
            assigned.add(name)
    assert assigned == set(lua.PER_CALL_STATE)
    assert all(f"{name} = {value}" in functions.LIBRARY_CODE for name, value in lua.PER_CALL_STATE.items())


def test_hot_scripts_run_as_functions_and_are_loaded_again_after_the_server_forgets_them(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    ids = submit(client, 2)
    assert conn.function_list(library=functions.LIBRARY_NAME)
    conn.function_flush()  # a restart without persistence loses the library
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    assert job.id == ids[0] and conn.function_list(library=functions.LIBRARY_NAME)
    conn.function_flush()
    batch = [{"task": "echo", "args": {"value": i}, "allow_unserved": True} for i in range(3)]
    assert len(client.submit_many(batch)) == 3
    assert conn.llen(keys.queue("default")) == 4  # the batch was sent again once, each job enqueued once


def test_waiting_for_a_result_that_cannot_come_returns_at_once(client: Client, conn: redis.Redis,
                                                                lifecycle: Lifecycle):
    """The status read and the blocking read go out together; nothing to wait for must not wait out wait_s."""
    start = time.monotonic()
    with pytest.raises(JobNotFound):
        client.result("no-such-job", wait_s=20)
    [job_id] = submit(client)
    job = lifecycle.claim(WORKER, ["default"], new_execution_id())[0]
    lifecycle.finish(job, WORKER, wire.dumps_value(7), time.time(), time.time(), Timing("echo", 0.001, 0.001))
    assert client.result(job_id, wait_s=20).value == 7  # already there: read at once
    conn.delete(keys.results(job_id))  # its result expired, the job hash not yet
    expired = client.result(job_id, wait_s=20)
    assert not expired.ready and expired.error == "its result expired"
    assert time.monotonic() - start < 10  # none of the three waited out its 20 s
    assert conn.ping()  # the abandoned blocking reads left the pool usable


def test_a_cancel_requested_while_another_worker_held_the_job_reaches_its_next_claim(
        client: Client, conn: redis.Redis, lifecycle: Lifecycle):
    """A cancel goes to the worker holding the job; if that worker gives it back unstarted (stopping, a long
    job ahead of it), the next claim says so, and the job is canceled instead of run."""
    (job_id,) = submit(client, retries=2)
    execution = new_execution_id()
    held = lifecycle.claim("a.0.1", ["default"], execution)
    assert [j.cancel_requested for j in held] == [False]
    assert lifecycle.cancel(job_id) == ("canceling", "")  # published to a.0.1, which never ran it
    assert [o.outcome for o in lifecycle.release("a.0.1", execution, held)] == ["released"]
    (job,) = lifecycle.claim("b.0.1", ["default"], new_execution_id())
    assert job.id == job_id and job.cancel_requested
    outcome = lifecycle.settle(job, "b.0.1", Failure("job was canceled before it started", "", retryable=False))
    assert outcome.outcome == "canceled" and conn.hget(keys.job(job_id), "status") == b"canceled"
