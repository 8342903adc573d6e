"""A faster hand-off between steps: a large result is in the node's memory when its job finishes, in Redis soon
after, and never lost: if its writer dies first, the job runs again and readers elsewhere wait for it."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.objects.lifetime import shape_field
from shared.objects.ref import REF_MARKER, ObjectRef
from shared.settings import Settings, get_settings
from shared.timeutil import unix_now
from tests.support import wait_for


def _result_ref(client: Client, job) -> ObjectRef:
    result = client.result(job, wait_s=30)
    assert result.status == "finished", result
    return ObjectRef.model_validate(result.value[REF_MARKER])


def _counters(conn: redis.Redis, node_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(keys.node_stats(node_id)).items()}


def test_a_chained_step_reads_the_previous_steps_large_result_from_the_same_nodes_memory(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=2)
    ref = _result_ref(client, client.submit("test.make", {"n": 1_000_000, "value": 2.0}))
    assert conn.hget(keys.job(_job_of(conn, ref)), "status") == b"finished"
    summed = client.result(client.submit("array.stats", {"data": ref}), wait_s=30)  # client-chained: A's ref to B
    assert summed.status == "finished" and summed.value["sum"] == 2_000_000.0
    counters = _counters(conn, node.node_id)
    assert counters["bytes_from_redis"] == 0 and counters["bytes_from_shm"] == ref.nbytes
    wait_for(lambda: not conn.exists(keys.object_pending(ref.id)), what="the result to be written behind")
    assert conn.exists(keys.object_meta(ref.id)) and conn.zcard(keys.PENDING_OBJECTS) == 0
    assert np.array_equal(client.get(ref), np.full(1_000_000, 2.0))


def _job_of(conn: redis.Redis, ref: ObjectRef) -> str:
    for key in conn.scan_iter(match=keys.job("*")):
        if conn.hget(key, "ferry_task") == b"test.make":
            return key.decode()[len(keys.job("")):]
    raise AssertionError("no test.make job")


def test_a_result_lost_before_it_reached_redis_is_recomputed_and_readers_wait_for_it(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    job = client.submit("test.make", {"n": 200_000, "value": 3.0})
    ref = _result_ref(client, job)
    wait_for(lambda: not conn.exists(keys.object_pending(ref.id)), what="the result to be written behind")
    # As if the write had not happened yet: no meta, no chunks, a marker naming the (live) writer.
    conn.delete(keys.object_meta(ref.id), *conn.keys(keys.object_chunk(ref.id, 0)[:-1] + "*"))
    [worker] = node.workers(conn)
    marker = {"job": job.id, "queue": "default", "worker": worker, "node": node.node_id, "kind": ref.kind.value,
              "dtype": ref.dtype, "shape": shape_field(ref.shape), "nbytes": ref.nbytes}
    conn.hset(keys.object_pending(ref.id), mapping=marker)
    conn.zadd(keys.PENDING_OBJECTS, {ref.id: unix_now()})
    # the next step is accepted (the reference matches the marker) and reads the result from the node's memory
    summed = client.result(client.submit("array.stats", {"data": ref}), wait_s=30)
    assert summed.status == "finished" and summed.value["sum"] == 600_000.0
    assert _counters(conn, node.node_id)["bytes_from_redis"] == 0
    assert client.status(job.id).status == "finished"  # its writer is alive: nothing to recover
    # Now the writer died before the write: the reaper runs the job again, and a reader waits for the result.
    conn.hset(keys.object_pending(ref.id), "worker", "gone.0.1")
    assert np.array_equal(client.get(ref), np.full(200_000, 3.0))
    info = client.status(job.id)
    assert info.status == "finished" and info.attempts == 2
    wait_for(lambda: not conn.exists(keys.object_pending(ref.id)), what="the marker to go")


def test_with_two_nodes_the_next_step_runs_where_the_previous_step_left_its_result(
    start_node, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = [start_node(processes=1), start_node(processes=1)]
    monkeypatch.setenv("FERRY_PLACEMENT_DELAY_S", "3")  # long: a loaded machine must not turn this into a race
    get_settings.cache_clear()
    client = Client(settings=Settings())
    pids = {pid: node.node_id for node in nodes for pid in node.worker_pids(conn)}
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):  # by chance alone, all five on the producer's node: 1 in 32
        ref = _result_ref(client, client.submit("test.make", {"n": 300_000, "value": value}))
        [producer] = {n.decode() for n in conn.smembers(keys.holders(ref.id))}
        where = client.result(client.submit("test.where", {"data": ref}), wait_s=30)
        assert where.status == "finished" and where.value["sum"] == 300_000 * value
        assert pids[where.value["pid"]] == producer
    assert sum(_counters(conn, node.node_id)["bytes_from_redis"] for node in nodes) == 0
    client.close()


def test_a_workflow_chains_next_step_runs_where_the_previous_step_left_its_large_result(
    start_node, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through a workflow: the step is queued by the finish script itself. Two things send it to the node
    holding the result: the finishing worker's own follow-up claim (same script) usually takes it, and otherwise
    it is offered there (FINISH names the result's objects, the dependent takes them as its inputs)."""
    from shared.workflows import chain, step

    nodes = [start_node(processes=1), start_node(processes=1)]
    monkeypatch.setenv("FERRY_PLACEMENT_DELAY_S", "3")
    get_settings.cache_clear()
    client = Client(settings=Settings())
    pids = {pid: node.node_id for node in nodes for pid in node.worker_pids(conn)}
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):  # by chance alone, all five on the producer's node: 1 in 32
        wf = client.submit_workflow(chain(step("test.make", {"n": 300_000, "value": value}),
                                          step("test.where", input="data")))
        info = client.workflow(wf, wait_s=30)
        assert info.status == "finished", info
        ref = ObjectRef.model_validate(info.results[wf.jobs[0]][REF_MARKER])
        [producer] = {n.decode() for n in conn.smembers(keys.holders(ref.id))}
        assert info.result["sum"] == 300_000 * value and pids[info.result["pid"]] == producer
    assert sum(_counters(conn, node.node_id)["bytes_from_redis"] for node in nodes) == 0
    client.close()
