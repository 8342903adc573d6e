"""The async client mirrors the sync one, and its waiters hold no pooled connection."""

from __future__ import annotations

import asyncio

import pytest

from shared import keys
from shared.async_client import AsyncClient
from shared.client import Client
from shared.errors import Conflict, InvalidArgs, JobNotFound, UnknownTask
from shared.lifecycle import functions
from shared.models import Submitted


def test_the_async_client_has_the_sync_clients_methods() -> None:
    public = {name for name in dir(Client) if not name.startswith("_")} - {"admin", "jobs"}
    assert public <= set(dir(AsyncClient)), public - set(dir(AsyncClient))


def test_submit_result_status_cancel_and_the_same_errors(settings, start_node, served: str) -> None:
    start_node(processes=1, queues="high")

    async def scenario() -> None:
        async with AsyncClient(settings=settings) as client:
            job = await client.submit("echo", {"value": [1, 2]}, queue="high")
            assert isinstance(job, Submitted) and job.queue == "high"
            assert (await client.result(job, wait_s=20)).value == [1, 2]
            assert (await client.status(job.id)).status == "finished"
            with pytest.raises(Conflict):
                await client.cancel(job)
            queued = await client.submit("sleep", {"seconds": 1}, queue="low")  # served by the stand-in: never runs
            assert (await client.cancel(queued)).status == "canceled"
            with pytest.raises(InvalidArgs) as invalid:
                await client.submit("sleep", {"seconds": -1})
            assert [e["field"] for e in invalid.value.details["errors"]] == ["seconds"]
            with pytest.raises(UnknownTask):
                await client.submit("ecko", {})
            with pytest.raises(JobNotFound):
                await client.result("nope", wait_s=1)
            batch = await client.submit_many(
                [{"task": "echo", "args": {"value": i}, "queue": "high"} for i in range(3)]
            )
            assert [(await client.result(j, wait_s=20)).value for j in batch] == [0, 1, 2]

    asyncio.run(scenario())


def test_two_hundred_waiters_share_two_connections_and_are_all_woken(settings, start_node, served: str) -> None:
    quiet = settings.model_copy(update={"result_recheck_s": 600})  # only the done message can wake them in time

    async def scenario() -> list[object]:
        async with AsyncClient(settings=quiet, max_connections=2) as client:
            jobs = [await client.submit("echo", {"value": i}, allow_unserved=True) for i in range(200)]
            waits = [asyncio.ensure_future(client.result(j, wait_s=30)) for j in jobs]
            await asyncio.sleep(0.2)
            assert (await client.submit("echo", {"value": "still served"})).status == "queued"  # the pool is free
            await asyncio.to_thread(start_node, processes=2)
            values = [r.value for r in await asyncio.gather(*waits)]
            assert client.done.woken == 200  # each by its job's `ferry:done` message, none by a re-check
            return values

    assert asyncio.run(scenario()) == list(range(200))


def test_the_async_client_submits_delayed_jobs_through_the_same_code(settings, served: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(settings=settings) as client:
            submitted = await client.submit("echo", {"value": 1}, delay_s=30, retry_delay_s=1)
            assert submitted.status == "scheduled"
            info = await client.status(submitted)
            assert info.status == "scheduled" and info.due_at is not None
            assert (await client.cancel(submitted)).status == "canceled"

    asyncio.run(scenario())


def test_the_async_client_manages_schedules(settings, served: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(settings=settings) as client:
            added = await client.add_schedule("nightly", "echo", {"value": 1}, cron="0 3 * * *", tz="Europe/Paris")
            assert added.next_run is not None and added.schedule.tz == "Europe/Paris"
            assert [s.schedule.name for s in await client.schedules()] == ["nightly"]
            assert (await client.pause_schedule("nightly")).paused
            assert not (await client.resume_schedule("nightly")).paused
            await client.delete_schedule("nightly")
            with pytest.raises(InvalidArgs, match="bad cron expression"):
                await client.add_schedule("bad", "echo", cron="61 * * * *")
            assert await client.schedules() == []

    asyncio.run(scenario())


def test_submits_are_loaded_again_after_the_server_forgets_the_lifecycle_functions(settings, conn) -> None:
    async def main() -> list[str]:
        async with AsyncClient(settings=settings) as client:
            first = await client.submit("echo", {"value": 1}, allow_unserved=True)
            conn.function_flush()  # a restart without persistence
            again = await asyncio.gather(*(client.submit("echo", {"value": i}, allow_unserved=True) for i in range(3)))
            return [first.id, *(s.id for s in again)]

    ids = asyncio.run(main())
    assert conn.function_list(library=functions.LIBRARY_NAME)
    assert conn.lrange(keys.queue("default"), 0, -1) == [i.encode() for i in ids]  # each enqueued once
