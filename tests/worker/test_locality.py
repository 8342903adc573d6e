"""Locality-aware placement: holdings published by real nodes, jobs offered to the node holding their inputs."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.lifecycle import Lifecycle, new_execution_id
from shared.settings import Settings, get_settings
from tests.support import wait_for


def _holders(conn: redis.Redis, object_id: str) -> set[str]:
    return {n.decode() for n in conn.smembers(keys.holders(object_id))}


def _client(monkeypatch: pytest.MonkeyPatch, delay_s: float) -> Client:
    monkeypatch.setenv("FERRY_PLACEMENT_DELAY_S", str(delay_s))
    get_settings.cache_clear()
    return Client(settings=Settings())


def _ran_on(client: Client, job: str, pids: dict[int, str]) -> str:
    result = client.result(job, wait_s=30)
    assert result.status == "finished", result
    return pids[result.value["pid"]]


def _pids(conn: redis.Redis, *nodes) -> dict[int, str]:
    return {pid: node.node_id for node in nodes for pid in node.worker_pids(conn)}


def test_offered_jobs_stay_counted_in_their_queue_and_are_claimed_once(
    client: Client, conn: redis.Redis, served: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scripts alone: the holder's claim takes its offered job first; another node's claim passes over it
    (taking the job behind it, without reordering) until the offer ends; RQ's queue length counts it all along."""
    ref = client.put(np.arange(1000, dtype=np.float64))
    conn.sadd(keys.holders(ref.id), served)  # the stand-in node holds the object
    placing = _client(monkeypatch, 0.5)
    offered = placing.submit("array.stats", {"data": ref}).id
    plain = placing.submit("echo", {"value": "x"}).id
    assert conn.lrange(keys.queue("default"), 0, -1) == [offered.encode(), plain.encode()]
    assert conn.hget(keys.job(offered), "ferry_offer") == served.encode()
    lifecycle = Lifecycle(conn, settings)
    other = lifecycle.claim("other-node.0.1", ["default"], new_execution_id(), 4)
    assert [job.id for job in other] == [plain]  # passed over the offered job
    assert conn.llen(keys.queue("default")) == 1
    again = placing.submit("array.stats", {"data": ref}).id
    mine = lifecycle.claim(f"{served}.0.1", ["default"], new_execution_id(), 1)
    assert [job.id for job in mine] == [offered]
    wait_for(lambda: lifecycle.claim("other-node.0.1", ["default"], new_execution_id(), 4), timeout=5,
             what="the offer to end and the other node to take the job")
    assert conn.llen(keys.queue("default")) == 0 and conn.hget(keys.job(again), "status") == b"started"
    placing.close()


def test_nodes_publish_what_they_hold_and_drop_it_when_they_stop(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    ref = client.put(np.arange(100_000, dtype=np.float64))
    assert client.result(client.submit("array.stats", {"data": ref}), wait_s=30).status == "finished"
    assert _holders(conn, ref.id) == {node.node_id}
    result = client.result(client.submit("array.scale", {"data": ref, "factor": 2.0}), wait_s=30)
    produced = result.value["$ferry_ref"]["id"]
    assert _holders(conn, produced) == {node.node_id}  # an adopted result is published too
    node.terminate()
    assert _holders(conn, ref.id) == set() and _holders(conn, produced) == set()
    assert not conn.exists(keys.node_holds(node.node_id))


def test_jobs_run_on_the_node_holding_their_inputs_so_each_object_leaves_redis_once(
    start_node, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes, 8 objects x 4 rounds of one job each: bytes out of Redis stay within 1.1x the ideal (each once)."""
    nodes = [start_node(processes=2), start_node(processes=2)]
    client = _client(monkeypatch, 3.0)  # a long offer: a loaded test machine must not turn this into a race
    refs = [client.put(np.full(50_000, i, dtype=np.float64)) for i in range(8)]
    for _round in range(4):
        jobs = [client.submit("array.stats", {"data": ref}) for ref in refs]
        for job in jobs:
            assert client.result(job, wait_s=60).status == "finished"
    from_redis = sum(int(conn.hget(keys.node_stats(n.node_id), "bytes_from_redis") or 0) for n in nodes)
    ideal = sum(ref.nbytes for ref in refs)
    assert ideal <= from_redis <= 1.1 * ideal, (from_redis, ideal)
    client.close()


@pytest.mark.slow
def test_a_busy_holder_does_not_keep_the_other_node_idle(
    start_node, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = start_node(processes=1)
    client = _client(monkeypatch, 0.3)
    refs = [client.put(np.full(20_000, i, dtype=np.float64)) for i in range(3)]
    for ref in refs:
        assert client.result(client.submit("test.where", {"data": ref}), wait_s=30).status == "finished"
    busy = client.submit("test.pid", {"seconds": 30})
    wait_for(lambda: conn.hget(keys.job(busy.id), "status") == b"started", what="the long job to start")
    other = start_node(processes=1)
    pids = _pids(conn, holder, other)
    jobs = [client.submit("test.where", {"data": ref}) for ref in refs]
    assert all(conn.hget(keys.job(job.id), "ferry_offer") == holder.node_id.encode() for job in jobs)
    assert {_ran_on(client, job.id, pids) for job in jobs} == {other.node_id}
    assert all(conn.xlen(keys.results(job.id)) == 1 for job in jobs)  # each ran once
    assert conn.hget(keys.job(busy.id), "status") == b"started"  # the holder was busy all along
    client.cancel(busy)
    client.close()


@pytest.mark.slow
@pytest.mark.faults
def test_a_killed_nodes_offered_jobs_run_elsewhere_and_its_holdings_are_dropped(
    start_node, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = start_node(processes=1)
    client = _client(monkeypatch, 0.3)
    ref = client.put(np.arange(50_000, dtype=np.float64))
    assert client.result(client.submit("test.where", {"data": ref}), wait_s=30).status == "finished"
    survivor = start_node(processes=1)
    pids = _pids(conn, doomed, survivor)
    doomed.kill()
    jobs = [client.submit("test.where", {"data": ref}) for _ in range(3)]
    assert conn.hget(keys.job(jobs[0].id), "ferry_offer") == doomed.node_id.encode()  # its heartbeat is recent
    assert {_ran_on(client, job.id, pids) for job in jobs} == {survivor.node_id}
    assert all(conn.xlen(keys.results(job.id)) == 1 for job in jobs)  # each ran once
    wait_for(lambda: _holders(conn, ref.id) == {survivor.node_id}, timeout=20,
             what="the killed node's holdings to be dropped by a reaper")
    assert not conn.exists(keys.preferred(doomed.node_id))
    client.close()
