"""The data plane: objects cross Redis once per node and every worker process reads them zero-copy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.models import JobRequest
from shared.objects.shm import deployment_id
from shared.timeutil import unix_now
from tests.support import NodeProcess, shm_files, wait_for


def _segment(conn: redis.Redis, node_id: str, object_id: str) -> str:
    return keys.segment(deployment_id(conn), node_id, object_id)


def _writer_of(node: NodeProcess, conn: redis.Redis, name: str) -> int:
    """The worker process that maps segment `name` (the one writing it)."""
    for pid in node.worker_pids(conn):
        try:
            if name in open(f"/proc/{pid}/maps").read():
                return pid
        except OSError:
            continue
    raise AssertionError(f"no worker of {node.node_id} maps {name}")


def _stats(conn: redis.Redis, node_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(keys.node_stats(node_id)).items()}


def _stats_jobs(client: Client, ref, n: int, queue: str | None = None, size: int | None = None) -> list[str]:
    size = size or ref.shape[0]
    step = size // n
    return [s.id for s in client.submit_many(
        [JobRequest(task="array.stats", args={"data": ref.model_dump(mode="json"), "start": i * step, "stop": (i + 1) * step},
                    queue=queue) for i in range(n)])]


def test_concurrent_demand_on_one_node_causes_exactly_one_fetch(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=4)
    data = np.random.default_rng(1).random(5_000_000)  # 40 MB
    ref = client.put(data)
    jobs = _stats_jobs(client, ref, 16)
    results = [client.result(j, wait_s=30) for j in jobs]
    assert sum(r.value["sum"] for r in results) == pytest.approx(data.sum())
    stats = _stats(conn, node.node_id)
    assert stats["misses"] == 1 and stats["bytes_from_redis"] == data.nbytes
    assert stats["hits"] == 15 and stats["bytes_from_shm"] == 15 * data.nbytes
    assert stats["resident_bytes"] >= data.nbytes


def test_workers_read_the_shared_segment_zero_copy_and_read_only(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=2)
    data = np.arange(1_000_000, dtype=np.int64)
    ref = client.put(data)
    results = [client.result(j, wait_s=20).value for j in [client.submit("test.where", {"data": ref}) for _ in range(6)]]
    segment = f"/dev/shm/{_segment(conn, node.node_id, ref.id)}"
    for seen in results:
        assert seen["mapped_file"] == segment  # the view's memory is the segment's mapping: no copy
        assert seen["owndata"] is False and seen["writeable"] is False
        assert seen["sum"] == data.sum()
    assert _stats(conn, node.node_id)["misses"] == 1


def test_putting_equal_data_twice_stores_it_once(client: Client, conn: redis.Redis) -> None:
    data = np.linspace(0, 1, 3_000_000)
    first = client.put(data)
    keys_after_first = sorted(conn.keys("ferry:obj:*"))
    second = client.put(data.copy())
    assert first == second
    assert sorted(conn.keys("ferry:obj:*")) == keys_after_first
    assert [ref.id for ref, _, _ in client.objects.list()] == [first.id]
    assert client.put(data.astype(np.float32)).id != first.id  # same values, other bytes: another object


def test_objects_are_chunked_get_back_equal_and_can_be_deleted(client: Client, conn: redis.Redis, settings) -> None:
    data = np.random.default_rng(2).integers(0, 1000, size=(3000, 1000), dtype=np.int32)  # 12 MB: several chunks
    ref = client.put(data, ttl_s=120)
    assert ref.shape == (3000, 1000) and ref.dtype == "<i4" and ref.nbytes == data.nbytes
    assert len(conn.keys(f"ferry:obj:{ref.id}:chunk:*")) == -(-data.nbytes // settings.object_chunk_bytes)
    assert conn.ttl(keys.object_meta(ref.id)) == -1  # no Redis TTL: a logical expiry, swept when no job needs it
    assert 0 < conn.zscore(keys.OBJECT_EXPIRY, ref.id) - unix_now() <= 120
    assert conn.keys("ferry:upload:*") == []  # written under an upload id while hashing, then renamed
    np.testing.assert_array_equal(client.get(ref), data)
    assert client.get(client.put(b"raw bytes")) == b"raw bytes"
    assert client.delete(ref) is True
    assert conn.keys(f"ferry:obj:{ref.id}*") == []


def test_a_large_array_result_is_an_object_that_the_same_node_reads_from_memory(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    data = np.arange(200_000, dtype=np.float64)  # 1.6 MB: over the 64 KiB threshold
    ref = client.put(data)
    scaled = client.result(client.submit("array.scale", {"data": ref, "factor": 3.0}), wait_s=20)
    out_ref = scaled.object_ref()
    assert out_ref is not None and out_ref.shape == (200_000,)
    np.testing.assert_array_equal(client.get(out_ref), data * 3)
    before = _stats(conn, node.node_id)
    total = client.result(client.submit("array.stats", {"data": out_ref}), wait_s=20).value["sum"]
    assert total == pytest.approx((data * 3).sum())
    after = _stats(conn, node.node_id)
    assert after["bytes_from_redis"] == before["bytes_from_redis"]  # no trip back to Redis
    assert after["hits"] == before["hits"] + 1
    small = client.result(client.submit("array.scale", {"data": client.put(np.arange(10.0)), "factor": 2.0}), wait_s=20)
    assert small.value == [2.0 * i for i in range(10)]  # under the threshold: plain JSON


def test_two_nodes_keep_separate_caches_and_each_fetches_once(client: Client, start_node, conn: redis.Redis) -> None:
    a = start_node(processes=2, queues="qa")
    b = start_node(processes=2, queues="qb")
    data = np.random.default_rng(3).random(2_000_000)
    ref = client.put(data)
    net_before = conn.info("stats")["total_net_output_bytes"]
    jobs = _stats_jobs(client, ref, 4, queue="qa") + _stats_jobs(client, ref, 4, queue="qb")
    assert sum(client.result(j, wait_s=30).value["sum"] for j in jobs) == pytest.approx(2 * data.sum())
    for node in (a, b):
        stats = _stats(conn, node.node_id)
        assert stats["misses"] == 1 and stats["bytes_from_redis"] == data.nbytes
        assert shm_files(node.node_id) == [_segment(conn, node.node_id, ref.id)]
    sent = conn.info("stats")["total_net_output_bytes"] - net_before
    assert 2 * data.nbytes <= sent <= 2 * data.nbytes * 1.05


def test_least_recently_used_objects_are_evicted_to_stay_in_budget(client: Client, start_node, conn: redis.Redis, env) -> None:
    size = 8_000_000
    node = start_node(processes=1, env=dict(env, FERRY_SHM_BUDGET_BYTES=str(int(size * 2.5))))
    refs = [client.put(np.full(size // 8, i, dtype=np.float64)) for i in range(3)]
    for ref in refs:
        assert client.result(client.submit("array.stats", {"data": ref}), wait_s=20).status == "finished"
    stats = _stats(conn, node.node_id)
    assert stats["evictions"] == 1
    assert shm_files(node.node_id) == sorted(_segment(conn, node.node_id, r.id) for r in refs[1:])
    assert stats["resident_bytes"] <= size * 2.5


def test_an_evicted_object_stays_valid_for_the_job_still_reading_it(client: Client, start_node, conn: redis.Redis, env) -> None:
    size = 16_000_000
    node = start_node(processes=2, env=dict(env, FERRY_SHM_BUDGET_BYTES=str(int(size * 1.5))))
    first = client.put(np.full(size // 8, 1.0))
    holder = client.submit("test.hold", {"data": first, "seconds": 1.5})
    wait_for(lambda: client.status(holder).status == "started", what="the holding job to start")
    wait_for(lambda: shm_files(node.node_id), what="the first object to be resident")
    second = client.put(np.full(size // 8, 2.0))
    assert client.result(client.submit("array.stats", {"data": second}), wait_s=20).value["sum"] == size // 8 * 2.0
    assert _stats(conn, node.node_id)["evictions"] == 1
    assert client.result(holder, wait_s=20).value == [size // 8 * 1.0] * 2


def test_an_object_larger_than_the_budget_fails_the_job_with_a_clear_error(client: Client, start_node, env) -> None:
    start_node(processes=1, env=dict(env, FERRY_SHM_BUDGET_BYTES="1000000"))
    job = client.submit("array.stats", {"data": client.put(np.zeros(500_000))}, retries=0)
    result = client.result(job, wait_s=20)
    assert result.status == "failed"
    assert "needs 4000000 bytes but node" in result.error and "FERRY_SHM_BUDGET_BYTES" in result.error


def test_a_full_dev_shm_is_a_clear_error_not_a_crash(client: Client, conn: redis.Redis, env, node_id: str) -> None:
    """A node in its own mount namespace with a 16 MB /dev/shm, told it may use more than it has."""
    command = ["unshare", "--mount", "sh", "-c",
               f"mount -t tmpfs -o size=16m tmpfs /dev/shm && exec {sys.executable} -m services.admin.cli worker --processes 1"]
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"this test needs root and mount namespaces (unshare): {probe.stderr.decode().strip()}")
    node = NodeProcess(dict(env, FERRY_SHM_BUDGET_BYTES=str(64 * 1024 * 1024)), node_id, 1, command=command)
    try:
        node.wait_ready(conn)
        pid = node.worker_pids(conn)[0]
        job = client.submit("array.stats", {"data": client.put(np.zeros(4_000_000))}, retries=0)  # 32 MB
        result = client.result(job, wait_s=20)
        assert result.status == "failed"
        assert "/dev/shm has only" in result.error and "shm_size" in result.error
        assert node.worker_pids(conn) == [pid]  # no SIGBUS: the same process goes on
        assert client.result(client.submit("array.stats", {"data": client.put(np.ones(1000))}), wait_s=20).value["sum"] == 1000
    finally:
        node.close()


def test_a_worker_killed_mid_fetch_leaves_no_half_written_object(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=2)
    data = np.random.default_rng(4).random(50_000_000)  # 400 MB: the fetch takes long enough to interrupt
    ref = client.put(data)
    job = client.submit("array.stats", {"data": ref}, retries=2)
    part = wait_for(lambda: [n for n in shm_files(node.node_id) if ".part" in n], interval=0.002, what="a partial segment")
    os.kill(wait_for(lambda: _writer_of(node, conn, part[0]), what="the writer"), 9)
    assert not any(n == _segment(conn, node.node_id, ref.id) for n in shm_files(node.node_id))  # never published
    result = client.result(job, wait_s=60)
    assert result.status == "finished" and result.value["sum"] == pytest.approx(data.sum())
    assert shm_files(node.node_id) == [_segment(conn, node.node_id, ref.id)]  # the dead writer's part was swept
    node.terminate()
    assert shm_files(node.node_id, locks=True) == []


def test_a_node_killed_outright_has_its_segments_swept_at_its_next_start(client: Client, start_node, conn: redis.Redis, node_id: str) -> None:
    node = start_node(node_id=node_id, processes=1)
    ref = client.put(np.ones(1_000_000))
    assert client.result(client.submit("array.stats", {"data": ref}), wait_s=20).ready
    node.kill()
    assert shm_files(node_id)  # SIGKILL of the whole group: nobody cleaned up
    start_node(node_id=node_id, processes=1)
    assert shm_files(node_id) == []  # only the running node's one lock file is left
