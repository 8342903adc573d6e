"""`async def` tasks run: each worker process drives them on its own event loop, under the same timeout and cancel."""

from __future__ import annotations

from pathlib import Path

import redis

from shared.client import Client
from tests.support import wait_for


def test_an_async_task_runs_on_the_worker_processs_event_loop(client: Client, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)

    first = client.result(client.submit("test.async_sleep", {"seconds": 0.01}), wait_s=20)
    second = client.result(client.submit("test.async_sleep", {"seconds": 0.01}), wait_s=20)

    assert (first.status, second.status) == ("finished", "finished"), (first.error, second.error)
    assert first.value["slept"] == 0.01 and first.value["pid"] in node.worker_pids(conn)
    assert second.value["pid"] == first.value["pid"]  # the same long-lived process ran both


def test_an_async_task_past_its_timeout_is_interrupted_and_cleans_up(
    client: Client, start_node, conn: redis.Redis, tmp_path: Path
) -> None:
    node = start_node(processes=1)
    pids = node.worker_pids(conn)
    marker = tmp_path / "timed-out"

    result = client.result(
        client.submit("test.async_sleep", {"seconds": 30, "marker": str(marker)}, timeout_s=1, retries=0), wait_s=20
    )

    assert result.status == "failed" and "timeout of 1s" in (result.error or "")
    assert marker.read_text() == "cleaned up"  # the coroutine was cancelled, so its finally ran
    after = client.result(client.submit("test.async_sleep", {"seconds": 0}), wait_s=20)
    assert after.status == "finished" and node.worker_pids(conn) == pids  # and the process lived on


def test_cancelling_a_running_async_task_interrupts_it(client: Client, start_node, tmp_path: Path) -> None:
    start_node(processes=1)
    marker = tmp_path / "canceled"
    job = client.submit("test.async_sleep", {"seconds": 30, "marker": str(marker)}, retries=0)
    wait_for(lambda: marker.exists() and marker.read_text() == "running", what="the async job to run")

    client.cancel(job)

    result = client.result(job, wait_s=20)
    assert result.status == "canceled"
    assert marker.read_text() == "cleaned up"
