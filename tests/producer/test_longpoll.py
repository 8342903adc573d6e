"""Long-polls under load: they hold neither a thread nor a pooled connection, and each is woken by its result."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil
import pytest

from shared.client import Client

WAITERS = 1000


def established(pid: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.slow
def test_a_thousand_long_polls_are_each_woken_by_their_result_while_other_requests_succeed(
    start_producer, start_node, client: Client
) -> None:
    # Re-checks and wait_s far beyond the test (pytest-timeout 120 s): only the done messages wake them in time.
    producer = start_producer(FERRY_RESULT_RECHECK_S="600")
    jobs = client.submit_many([{"task": "echo", "args": {"value": i}, "allow_unserved": True} for i in range(WAITERS)])

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=WAITERS + 10)
        async with (
            httpx.AsyncClient(base_url=producer.url, limits=limits, timeout=120) as waiters,
            httpx.AsyncClient(base_url=producer.url, timeout=30) as others,
        ):
            polls = [
                asyncio.ensure_future(waiters.get(f"/v1/jobs/{j.id}/result", params={"wait_s": 250})) for j in jobs
            ]
            deadline = time.monotonic() + 60
            while established(producer.proc.pid) < WAITERS and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # While they all wait: other clients' submits and status reads still succeed.
            side = []
            for n in range(40):
                side.append(
                    await others.post("/v1/jobs", json={"task": "echo", "args": {"value": n}, "allow_unserved": True})
                )
                side.append(await others.get(f"/v1/jobs/{jobs[n].id}"))
            assert not any(p.done() for p in polls), "a long-poll answered before its job ran"
            await asyncio.to_thread(start_node, processes=2)
            return await asyncio.gather(*polls), side

    answers, side = asyncio.run(scenario())

    assert [r.status_code for r in side] == [202, 200] * 40
    assert [r.status_code for r in answers] == [200] * WAITERS
    assert [(r.json()["ready"], r.json()["value"]) for r in answers] == [(True, i) for i in range(WAITERS)]


@pytest.mark.slow
def test_several_producer_processes_share_the_port_and_each_wakes_its_own_waiters(
    start_producer, start_node, client: Client
) -> None:
    producer = start_producer(FERRY_API_WORKERS="2", FERRY_RESULT_RECHECK_S="600")
    servers = [c for c in psutil.Process(producer.proc.pid).children() if "python" in c.name().lower()]
    assert len(servers) >= 2, [c.cmdline() for c in servers]
    jobs = client.submit_many([{"task": "echo", "args": {"value": i}, "allow_unserved": True} for i in range(20)])

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=producer.url, timeout=60) as http:
            polls = [asyncio.ensure_future(http.get(f"/v1/jobs/{j.id}/result", params={"wait_s": 250})) for j in jobs]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(start_node, processes=1)
            return await asyncio.gather(*polls)

    answers = asyncio.run(scenario())
    assert [r.json()["value"] for r in answers] == list(range(20))
