"""The object path under mistakes and many objects: each test is one problem of issue 7, as a user meets it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import redis

from shared import keys, wire
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.errors import Conflict, InvalidArgs
from shared.lifecycle import Lifecycle
from shared.settings import Settings
from tests.support import REPO, shm_files, wait_for


def _enqueue_unchecked(conn: redis.Redis, task: str, args: dict, queue: str = "default") -> str:
    """Enqueue the way plain RQ or a stale client would: no submit-time check of the references."""
    job_id = wire.new_job_id()
    fields = wire.job_fields(task, args, queue, 60, 0, 600, 600)
    flat: list = [job_id, queue, 600]
    for name, value in fields.items():
        flat += [name, value]
    Lifecycle(conn, Settings()).enqueue_script()(keys=[keys.job(job_id), keys.queue(queue), ""], args=flat)
    return job_id


def test_a_failed_fetch_fails_the_job_with_its_reason_and_the_same_worker_fetches_the_object_later(
    client: Client, start_node, conn: redis.Redis
) -> None:
    """Problem 1: a missing object used to poison the worker process (BufferError, a leaked .part, FileExistsError)."""
    node = start_node(processes=1)
    [pid] = node.worker_pids(conn)
    data = np.arange(2_000_000, dtype=np.float64)
    ref = client.put(data)
    conn.delete(keys.object_meta(ref.id))  # lost from Redis behind Ferry's back (e.g. a flush)
    job = _enqueue_unchecked(conn, "array.stats", {"data": ref.model_dump(mode="json")})
    failed = client.result(job, wait_s=30)
    assert failed.status == "failed"
    assert f"object {ref.id} does not exist" in failed.error and "put the data again" in failed.error
    assert shm_files(node.node_id) == []  # no .part left behind
    assert client.put(data) == ref
    again = client.result(client.submit("array.stats", {"data": ref}), wait_s=30)
    assert again.status == "finished" and again.value["sum"] == data.sum()
    assert node.worker_pids(conn) == [pid]  # the same process


def test_a_reference_that_differs_from_the_stored_object_never_produces_a_result(
    client: Client, start_node, conn
) -> None:
    """Problem 2: a float64 array read through a `<f4` reference used to sum to nonsense."""
    start_node(processes=1)
    ref = client.put(np.arange(1_000_000, dtype=np.float64))
    lying = dict(ref.model_dump(mode="json"), dtype="<f4", nbytes=4_000_000)
    with pytest.raises(InvalidArgs, match=f"object {ref.id} holds 8000000 bytes but the reference says 4000000 bytes"):
        client.submit("array.stats", {"data": lying})
    smaller = dict(ref.model_dump(mode="json"), shape=[10], nbytes=80)
    job = _enqueue_unchecked(conn, "array.stats", {"data": smaller})  # past the submit check: the worker checks too
    result = client.result(job, wait_s=30)
    assert result.status == "failed" and result.value is None
    assert f"object {ref.id} holds 8000000 bytes but the reference says 80 bytes" in result.error


def test_an_expired_object_stays_while_a_queued_job_needs_it_and_goes_once_the_job_is_done(
    client: Client, start_node, conn: redis.Redis, served: str
) -> None:
    """Problem 3: an object whose TTL passed under a waiting job used to be gone when the job ran."""
    ref = client.put(np.ones(1000), ttl_s=1)
    job = client.submit("array.stats", {"data": ref})
    expired_at = time.time() + 1.5
    wait_for(lambda: time.time() > expired_at, what="the object's expiry to pass")
    assert client.objects.gc() == []  # still needed
    start_node(processes=1)
    assert client.result(job, wait_s=30).value["sum"] == 1000
    wait_for(lambda: not conn.exists(keys.object_meta(ref.id)), what="a node's reaper to delete the object")
    assert conn.keys(f"ferry:obj:{ref.id}*") == []


def test_jobs_for_missing_objects_are_refused_and_a_canceled_job_releases_its_object(
    client: Client, conn, served: str
) -> None:
    with pytest.raises(InvalidArgs, match=f"object {'0' * 32} does not exist"):
        client.submit(
            "array.stats", {"data": {"id": "0" * 32, "kind": "array", "dtype": "<f8", "shape": [1], "nbytes": 8}}
        )
    ref = client.put(np.ones(10), ttl_s=1)
    job = client.submit("array.stats", {"data": ref}, queue="nobody-listens", allow_unserved=True)
    with pytest.raises(Conflict, match=f"needed by 1 job\\(s\\) not yet done \\({job}\\)"):
        client.delete(ref)
    client.cancel(job)
    wait_for(lambda: client.objects.gc() == [ref.id], what="the sweep to delete the object once its job is canceled")


def test_a_forced_delete_fails_the_jobs_that_needed_the_object_with_the_reason(
    client: Client, start_node, conn, served: str
) -> None:
    ref = client.put(np.ones(10))
    job = client.submit("array.stats", {"data": ref}, retries=2)
    assert client.objects.delete(ref.id, force=True) is True
    start_node(processes=1)
    result = client.result(job, wait_s=30)
    assert result.status == "failed" and f"object {ref.id} was deleted with --force" in result.error
    assert client.status(job).attempts == 1  # not retried: it cannot come back by itself


def test_nodes_on_one_host_share_one_budget_and_shm_full_names_who_holds_what(
    client: Client, start_node, env, conn
) -> None:
    """Problem 4: two nodes each used to budget for the whole of /dev/shm."""
    size = 8_000_000
    budget = str(int(size * 2.5))
    first = start_node(processes=1, queues="qa", env=dict(env, FERRY_SHM_BUDGET_BYTES=budget))
    start_node(processes=1, queues="qb", env=dict(env, FERRY_SHM_BUDGET_BYTES=budget))
    refs = [client.put(np.full(size // 8, float(i))) for i in range(3)]
    for ref in refs[:2]:
        assert client.result(client.submit("array.stats", {"data": ref}, queue="qa"), wait_s=30).status == "finished"
    full = client.result(client.submit("array.stats", {"data": refs[2]}, queue="qb", retries=0), wait_s=30)
    assert full.status == "failed"
    assert f"this host's budget of {budget} bytes" in full.error and f"node {first.node_id}" in full.error
    assert f"{2 * (size + 4096)} bytes" in full.error


def test_a_second_deployment_with_the_same_node_id_never_touches_the_first_ones_files(
    client: Client, start_node, env, conn, node_id: str
) -> None:
    """Problem 5: gc and the start-up sweep of one Redis's node used to remove another Redis's node's files."""
    first = start_node(node_id=node_id, processes=1)
    ref = client.put(np.ones(100_000))
    assert client.result(client.submit("array.stats", {"data": ref}), wait_s=30).status == "finished"
    [segment] = [name for name in shm_files(node_id) if name.endswith(ref.id)]
    other = EmbeddedRedis().start()
    try:
        other_env = dict(env, FERRY_REDIS_URL=other.url)
        other_conn = redis.Redis.from_url(other.url)
        second = start_node(node_id=node_id, processes=1, env=other_env, wait=False)
        second.wait_ready(other_conn)
        gc = subprocess.run(
            [sys.executable, "-m", "services.admin.cli", "objects", "gc"],
            env=other_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gc.returncode == 0, gc.stderr
        assert segment in shm_files(node_id)  # untouched by the other deployment's start and gc
        assert client.result(client.submit("array.stats", {"data": ref}), wait_s=30).status == "finished"
        second.terminate()
        assert segment in shm_files(node_id)  # nor by its stop
        other_conn.close()
    finally:
        other.cleanup()
    first.terminate()
    assert shm_files(node_id, locks=True) == []


def test_many_objects_leave_one_lock_file_per_node_not_one_per_object(client: Client, start_node, conn) -> None:
    """Problem 6: every object used to leave a lock file behind, and every job scanned /dev/shm."""
    node = start_node(processes=1)
    refs = [client.put(np.full(1000, float(i))) for i in range(5)]
    for ref in refs:
        assert client.result(client.submit("array.stats", {"data": ref}), wait_s=30).status == "finished"
    files = shm_files(node.node_id, locks=True)
    assert len([f for f in files if f.endswith(".lock")]) == 1
    assert len(files) == 6
    stats = {k.decode(): int(v) for k, v in conn.hgetall(keys.node_stats(node.node_id)).items()}
    assert stats["resident_bytes"] == sum(os.stat(f"/dev/shm/{f}").st_size for f in files)
