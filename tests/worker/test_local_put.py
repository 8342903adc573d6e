"""A same-host put goes straight into the local node's shared memory (and, written behind, reaches Redis anyway)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.errors import ObjectNotFound, RedisFull
from shared.objects import segments, shm
from shared.objects.cache import HEADER_BYTES
from shared.objects.dead_nodes import sweep_dead_nodes
from shared.objects.segments import SHM_DIR
from shared.objects.shm import Ledger, deployment_id
from shared.settings import Settings
from tests.support import shm_files, wait_for

MB = 1024 * 1024


@pytest.fixture()
def client(settings: Settings) -> Iterator[Client]:
    """A client with the same-host copy on (the suite's environment turns it off for the fetch-path tests)."""
    c = Client(settings=settings.model_copy(update={"put_local_copy": True}))
    yield c
    c.close()


def _stats(conn: redis.Redis, node_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(keys.node_stats(node_id)).items()}


def _charged(conn: redis.Redis, node_id: str) -> int:
    entry = Ledger(SHM_DIR).read().get(f"{node_id}_{deployment_id(conn)}", {})
    return int(entry.get("bytes", 0))


def _sum_on_node(client: Client, ref) -> float:
    result = client.result(client.submit("array.stats", {"data": ref}, retries=0), wait_s=30)
    assert result.status == "finished", result
    return result.value["sum"]


def test_a_durable_put_fills_the_local_nodes_memory_so_its_first_job_fetches_nothing(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    data = np.random.default_rng(7).random(2 * MB)  # 16 MB: several chunks and write pieces
    ref = client.put(data, durable=True)
    assert conn.exists(keys.object_meta(ref.id)) and not conn.exists(keys.object_pending(ref.id))  # in Redis on return
    segment = keys.segment(deployment_id(conn), node.node_id, ref.id)
    assert shm_files(node.node_id) == [segment]  # published under the object's name: no .part left
    assert _charged(conn, node.node_id) == HEADER_BYTES + data.nbytes  # the budget charged once
    assert conn.sismember(keys.holders(ref.id), node.node_id)  # placement knows

    assert _sum_on_node(client, ref) == pytest.approx(data.sum())
    stats = _stats(conn, node.node_id)
    assert stats.get("bytes_from_redis", 0) == 0 and stats.get("misses", 0) == 0
    assert stats["bytes_from_shm"] == data.nbytes
    assert np.array_equal(client.get(ref), data)


def test_a_put_with_no_local_node_or_a_small_object_is_stored_as_before(
    client: Client, start_node, conn: redis.Redis
) -> None:
    ref = client.put(np.ones(MB))  # no node on this host: Redis only, at once
    assert conn.exists(keys.object_meta(ref.id)) and not conn.exists(keys.object_pending(ref.id))
    node = start_node(processes=1)
    small = client.put(np.arange(1000.0))  # under LOCAL_MIN_BYTES: the node fetches it as ever
    assert conn.exists(keys.object_meta(small.id)) and shm_files(node.node_id) == []
    assert _sum_on_node(client, small) == pytest.approx(np.arange(1000.0).sum())
    assert _stats(conn, node.node_id)["bytes_from_redis"] == small.nbytes


def test_a_put_that_redis_refuses_leaves_no_segment_and_no_charge(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", used + 4 * MB)
    try:
        with pytest.raises(RedisFull):
            client.put(np.random.default_rng(8).random(4 * MB), durable=True)  # 32 MB
    finally:
        conn.config_set("maxmemory", 0)
    assert shm_files(node.node_id) == []
    assert _charged(conn, node.node_id) == 0
    assert not conn.keys("ferry:upload:*")


def test_a_put_written_behind_returns_before_redis_has_it_and_every_reader_gets_the_bytes(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    other = start_node(processes=1)
    local = client.objects.local
    local._nodes, local._nodes_at = [node.node_id], time.monotonic()  # the copy goes to `node` (first live one found)
    data = np.random.default_rng(9).random(3 * MB)  # 24 MB
    ref = client.put(data)  # FERRY_PUT_WRITE_BEHIND is on by default
    marker_node = conn.hget(keys.object_pending(ref.id), "node")
    assert conn.exists(keys.object_meta(ref.id)) or marker_node == node.node_id.encode()
    assert _sum_on_node(client, ref) == pytest.approx(data.sum())  # on either node: `other` waits for the write
    wait_for(lambda: conn.exists(keys.object_meta(ref.id)) and not conn.exists(keys.object_pending(ref.id)),
             what="the node to write the put to Redis")
    assert conn.zcard(keys.PUTS_PENDING) == 0
    assert np.array_equal(client.get(ref), data)
    assert _stats(conn, node.node_id).get("bytes_from_redis", 0) == 0
    del other


def _put_in_a_node_killed_before_writing(client: Client, start_node, seed: int, node_id: str | None = None):
    """A put written behind into a node that is SIGKILLed before its writer could run (the node is stopped for
    the put): the object is in that node's memory only. Returns (node, data, ref)."""
    node = start_node(node_id, processes=1) if node_id else start_node(processes=1)
    os.killpg(node.proc.pid, signal.SIGSTOP)  # its writer cannot run
    try:
        data = np.random.default_rng(seed).random(2 * MB)
        ref = client.put(data)
    finally:
        node.kill()  # SIGKILL the whole node (stopped or not)
    return node, data, ref


def test_a_put_written_behind_survives_its_node_dying_before_the_write(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node, data, ref = _put_in_a_node_killed_before_writing(client, start_node, seed=10)
    assert not conn.exists(keys.object_meta(ref.id))
    assert conn.hget(keys.object_pending(ref.id), "node") == node.node_id.encode()
    assert shm_files(node.node_id) == [keys.segment(deployment_id(conn), node.node_id, ref.id)]  # on the host still

    other = start_node(processes=1)  # another node of this deployment on the same host takes the write over
    wait_for(lambda: conn.exists(keys.object_meta(ref.id)), timeout=20, what="another node to write the put")
    assert not conn.exists(keys.object_pending(ref.id))
    assert _sum_on_node(client, ref) == pytest.approx(data.sum())  # run by `other`, read from Redis
    assert _stats(conn, other.node_id)["bytes_from_redis"] == data.nbytes
    assert np.array_equal(client.get(ref), data)


def test_a_restarted_node_writes_the_put_its_previous_run_left_unwritten(
    client: Client, start_node, conn: redis.Redis, node_id: str
) -> None:
    _node, data, ref = _put_in_a_node_killed_before_writing(client, start_node, seed=11, node_id=node_id)
    assert not conn.exists(keys.object_meta(ref.id))
    restarted = start_node(node_id, processes=1)  # before sweeping its old files, it writes the pending put from them
    assert conn.exists(keys.object_meta(ref.id)) and not conn.exists(keys.object_pending(ref.id))
    assert np.array_equal(client.get(ref), data)
    again = client.put(data + 1)  # the same client, into the restarted node's memory
    assert _sum_on_node(client, again) == pytest.approx((data + 1).sum())
    assert _stats(conn, restarted.node_id).get("bytes_from_redis", 0) == 0


def test_sweeps_that_cannot_ask_redis_leave_an_unwritten_put_to_its_nodes_restart(
    client: Client, start_node, conn: redis.Redis, node_id: str
) -> None:
    """Another node's start and `ferry objects gc` sweep dead nodes' files; a put's only copy is not theirs to take."""
    _node, data, ref = _put_in_a_node_killed_before_writing(client, start_node, seed=13, node_id=node_id)
    segment = SHM_DIR / keys.segment(deployment_id(conn), node_id, ref.id)
    lock = SHM_DIR / keys.node_lock(deployment_id(conn), node_id)
    old = time.time() - 60
    os.utime(lock, (old, old))  # dead for long enough to be swept by anyone
    removed = [r.name for r in shm.gc(conn, SHM_DIR)] + [r.name for r in sweep_dead_nodes(SHM_DIR)]
    assert segment.name not in removed and segment.exists() and segments.spared_unwritten(segment, time.time())
    start_node(node_id, processes=1)  # its restart writes it from the segment the sweeps left
    assert conn.exists(keys.object_meta(ref.id)) and np.array_equal(client.get(ref), data)


def test_a_put_lost_with_its_host_fails_its_readers_with_an_error_naming_it(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node, _data, ref = _put_in_a_node_killed_before_writing(client, start_node, seed=12)
    for name in shm_files(node.node_id):
        os.unlink(SHM_DIR / name)  # the host (its /dev/shm) is gone with the node
    conn.zadd(keys.NODES, {node.node_id: 1})  # and its last heartbeat is long past
    conn.hset(keys.object_pending(ref.id), "since", 1)
    start_node(processes=1)  # any live node's writer gives up on it
    wait_for(lambda: not conn.exists(keys.object_pending(ref.id)), timeout=20, what="the lost put to be given up")
    with pytest.raises(ObjectNotFound, match=ref.id):
        client.get(ref)


def test_a_write_behind_yields_to_busy_workers_only_for_a_bounded_time(
    client: Client, start_node, conn: redis.Redis
) -> None:
    start_node(processes=1)
    busy = client.submit("test.hold", {"data": client.put(np.ones(10)), "seconds": 8.0}, retries=0)
    wait_for(lambda: conn.hget(keys.job(busy.id), "status") == b"started", what="the node's only worker to be busy")
    ref = client.put(np.random.default_rng(13).random(2 * MB))
    wait_for(lambda: conn.exists(keys.object_meta(ref.id)), timeout=6, what="the write behind, despite the busy node")
    assert conn.hget(keys.job(busy.id), "status") == b"started"  # written while the worker was still busy
    client.cancel(busy.id)


@pytest.mark.slow
def test_a_node_killed_while_writing_a_put_leaves_it_to_its_restart_and_readers_wait_for_it(
    client: Client, start_node, conn: redis.Redis, node_id: str, settings: Settings
) -> None:
    node = start_node(node_id, processes=1)
    data = np.random.default_rng(14).random(25 * MB)  # 200 MB: its write takes long enough to be cut
    ref = client.put(data)
    reader = Client(settings=settings)  # Redis only: it waits while the marker says the write is coming
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(reader.get, ref)
        wait_for(lambda: conn.keys("ferry:upload:*") or conn.exists(keys.object_meta(ref.id)), interval=0.001,
                 what="the node to start writing the put")
        node.kill()  # SIGKILL, most likely in the middle of the chunks
        print(f"killed mid-write: {not conn.exists(keys.object_meta(ref.id))}")
        start_node(node_id, processes=1)  # its restart writes it from the segment before sweeping
        assert np.array_equal(waiting.result(timeout=60), data)
    reader.close()
    assert conn.exists(keys.object_meta(ref.id)) and not conn.exists(keys.object_pending(ref.id))
    start_node(processes=1, queues="elsewhere")  # ANOTHER node: it reads the object from Redis
    result = client.result(client.submit("array.stats", {"data": ref}, queue="elsewhere", retries=0), wait_s=60)
    assert result.status == "finished" and result.value["sum"] == pytest.approx(data.sum())


def test_a_put_written_behind_that_redis_refuses_leaves_nothing_in_the_nodes_memory(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    deployment_id(conn)  # (created before Redis refuses writes)
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", used // 2)  # over it already: the marker is refused
    try:
        with pytest.raises(RedisFull):
            client.put(np.random.default_rng(15).random(MB))  # 8 MB, written behind
    finally:
        conn.config_set("maxmemory", 0)
    assert shm_files(node.node_id) == []
    assert _charged(conn, node.node_id) == 0


def test_puts_on_a_host_with_several_nodes_go_to_the_one_holding_the_fewest_bytes(
    client: Client, start_node, conn: redis.Redis
) -> None:
    nodes = [start_node(processes=1), start_node(processes=1)]
    refs = [client.put(np.full(MB, float(i)), durable=True) for i in range(2)]  # 8 MB each
    held = sorted(len(shm_files(node.node_id)) for node in nodes)
    assert held == [1, 1], {node.node_id: shm_files(node.node_id) for node in nodes}
    assert {conn.smembers(keys.holders(ref.id)).pop() for ref in refs} == {n.node_id.encode() for n in nodes}


def test_a_put_not_yet_written_to_redis_is_never_evicted(start_node, conn: redis.Redis, env, settings: Settings) -> None:
    """The segment of a put written behind is the object's only copy until the write: eviction passes it by."""
    size = 16 * MB
    budget = int(size * 1.5)  # room for one of the two objects
    node = start_node(processes=1, env=dict(env, FERRY_SHM_BUDGET_BYTES=str(budget)))
    putter = Client(settings=settings.model_copy(update={"put_local_copy": True, "shm_budget_bytes": budget}))
    elsewhere = Client(settings=settings)  # Redis only
    data = np.random.default_rng(15).random(size // 8)
    os.kill(node.proc.pid, signal.SIGSTOP)  # the supervisor and its put writer stop; its worker process runs on
    try:
        pending = putter.put(data)
        assert conn.exists(keys.object_pending(pending.id)) and not conn.exists(keys.object_meta(pending.id))
        other = elsewhere.put(np.ones(size // 8))
        result = elsewhere.result(elsewhere.submit("array.stats", {"data": other}, retries=0), wait_s=30)
        assert result.status == "failed" and "not yet written to Redis" in result.error  # no room: nothing evictable
        assert keys.segment(deployment_id(conn), node.node_id, pending.id) in shm_files(node.node_id)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    wait_for(lambda: conn.exists(keys.object_meta(pending.id)), timeout=20, what="the writer to write the put")
    assert np.array_equal(elsewhere.get(pending), data)
    putter.close()
    elsewhere.close()
