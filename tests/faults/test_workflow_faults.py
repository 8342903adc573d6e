"""Workflows under faults: a 64-child group's callback runs exactly once when a worker process, or a whole
node, is SIGKILLed mid-group (its children are requeued by the supervisor, or by the other node's reaper)."""

from __future__ import annotations

import os
import signal

import pytest
import redis

from shared.client import Client
from shared.models import JobStatus
from shared.workflows import chain, group, step
from tests.faults.conftest import Ledger
from tests.support import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CHILDREN = 64
BODY_S = 0.05


def _submit(client: Client):
    children = [step("test.ledger", {"token": f"c{i}", "seconds": BODY_S}) for i in range(CHILDREN)]
    return client.submit_workflow(chain(group(children), step("test.collect", {"token": "callback"})))


def _assert_callback_once(client: Client, wf, ledger: Ledger) -> None:
    info = client.workflow(wf, wait_s=60)
    assert info.status == JobStatus.FINISHED, info.counts
    assert info.result["input"] == [f"c{i}" for i in range(CHILDREN)]
    ledger.read()
    assert len(ledger.starts["callback"]) == 1 and len(ledger.ends["callback"]) == 1, ledger.order["callback"]


def test_group_callback_runs_once_with_a_worker_sigkilled_mid_group(
    client: Client, start_node, conn: redis.Redis, ledger: Ledger
) -> None:
    node = start_node(processes=2)
    wf = _submit(client)
    wait_for(lambda: len(ledger.read().ends) >= 10, timeout=30, what="10 children done")
    assert client.workflow(wf).counts.get("finished", 0) < CHILDREN
    os.kill(node.worker_pids(conn)[0], signal.SIGKILL)
    _assert_callback_once(client, wf, ledger)


def test_group_callback_runs_once_with_a_node_sigkilled_mid_group(
    client: Client, start_node, conn: redis.Redis, ledger: Ledger
) -> None:
    doomed = start_node(processes=2)
    start_node(processes=2)
    wf = _submit(client)
    wait_for(lambda: len(ledger.read().ends) >= 10, timeout=30, what="10 children done")
    held = [m for m in conn.zrange("rq:wip:default", 0, -1) if conn.hget(f"rq:job:{m.decode().split(':')[0]}",
                                                                         "worker_name").decode().startswith(doomed.node_id)]
    doomed.kill()  # supervisor and workers at once: the survivor's reaper requeues what they held
    assert held, "the killed node held no child: the kill was not mid-group"
    _assert_callback_once(client, wf, ledger)
