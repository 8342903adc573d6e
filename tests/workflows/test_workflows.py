"""Groups, chains and nesting through the Python client: results flow step to step, one call reads them all."""

from __future__ import annotations

import numpy as np
import pytest

from shared import keys
from shared.errors import InvalidArgs, UnknownTask
from shared.models import JobStatus
from shared.workflows import chain, group, step


@pytest.fixture()
def node(start_node):
    return start_node(processes=2)


def test_chain_passes_a_large_array_as_an_object(client, conn, node) -> None:
    data = np.arange(200_000, dtype=np.float64)  # 1.6 MB: the scaled result is stored as an object
    ref = client.put(data)
    wf = client.submit_workflow(chain(step("array.scale", {"data": ref, "factor": 2.0}),
                                      step("array.stats", input="data")))
    info = client.workflow(wf, wait_s=20)
    assert info.status == JobStatus.FINISHED, info
    assert info.result["sum"] == pytest.approx(2 * data.sum())
    scaled = info.results[wf.jobs[0]]
    assert "$ferry_ref" in scaled and np.array_equal(client.get(scaled["$ferry_ref"]["id"]), data * 2)


def test_fan_in_callback_gets_results_in_order_arrays_as_views(client, node) -> None:
    ref = client.put(np.ones(100_000, dtype=np.float64))
    members = [step("array.scale", {"data": ref, "factor": float(i)}) for i in range(4)]
    wf = client.submit_workflow(chain(group(members), step("test.collect")))
    info = client.workflow(wf, wait_s=20)
    assert info.status == JobStatus.FINISHED, info
    assert info.result["input"] == [0.0, 100_000.0, 200_000.0, 300_000.0]


def test_nested_group_in_chain_and_chain_in_group(client, node) -> None:
    wf = client.submit_workflow(chain(
        step("echo", {"value": 3}),
        group(step("echo", input="value"), chain(step("echo", input="value"), step("echo", input="value"))),
        step("test.collect"),
    ))
    info = client.workflow(wf, wait_s=20)
    assert info.status == JobStatus.FINISHED, info
    assert info.result["input"] == [3, 3]
    assert len(info.jobs) == 5 and info.counts == {"finished": 5}
    assert all(job.worker and job.worker.startswith(node.node_id) for job in info.jobs)


def test_group_result_is_a_list_and_failure_policies(client, node) -> None:
    wf = client.submit_workflow(chain(
        group(step("echo", {"value": 1}), step("test.fail", {"message": "bad"}, retries=0)),
        group(step("test.collect", on_failure="run"), step("test.collect")),
    ))
    info = client.workflow(wf, wait_s=20)
    assert info.ready and info.status == JobStatus.FAILED
    ran, failed = info.jobs[2], info.jobs[3]
    assert ran.status == JobStatus.FINISHED and info.results[ran.id]["input"] == [1, None]
    assert failed.status == JobStatus.FAILED and info.jobs[1].id in (failed.error or "")


def test_invalid_workflow_enqueues_nothing(client, conn, served) -> None:
    with pytest.raises(UnknownTask) as caught:
        client.submit_workflow(chain(step("echo", {"value": 1}), group(step("echo"), step("no.such.task"))))
    assert "workflow.chain[1].group[1]" in caught.value.message and "nothing was enqueued" in caught.value.message
    with pytest.raises(InvalidArgs):
        client.submit_workflow(group(step("echo"), step("sleep", {"seconds": "x"})))
    assert conn.llen(keys.queue("default")) == 0 and not conn.keys("rq:job:*")


def test_cancel_a_workflow(client, served) -> None:
    wf = client.submit_workflow(chain(step("echo", {"value": 1}), group(step("echo"), step("echo")), step("echo")))
    info = client.cancel_workflow(wf)
    assert info.ready and info.status == JobStatus.CANCELED and info.counts == {"canceled": 4}
    assert client.workflow(wf.id).status == JobStatus.CANCELED


def test_async_client_submits_waits_and_depends(settings, node) -> None:
    import asyncio

    from shared.async_client import AsyncClient

    async def scenario() -> None:
        async with AsyncClient(settings=settings) as client:
            wf = await client.submit_workflow(chain(step("echo", {"value": 5}), step("echo", input="value")))
            info = await client.workflow(wf, wait_s=20)
            assert info.status == JobStatus.FINISHED and info.result == 5
            after = await client.submit("echo", {"value": 6}, depends_on=[wf.jobs[-1]])
            assert (await client.result(after, wait_s=10)).value == 6

    asyncio.run(scenario())
