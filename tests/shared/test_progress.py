"""Progress: a task asks for a JobContext, reports how far it is; the client sees it rise, live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.async_client import AsyncClient
from shared.client import Client
from shared.models import JobInfo, JobStatus
from shared.tasks import load_tasks
from tests.support import wait_for


def _go(gate: Path, step: int) -> None:
    (gate / f"go{step}").touch()


def test_progress_is_seen_rising_through_the_client_status(client: Client, start_node, tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 3})
    seen = []
    for step in range(3):
        _go(tmp_path, step)
        def reached(step: int = step) -> JobInfo | None:
            info = client.status(job)
            return info if info.progress and info.progress.fraction >= (step + 1) / 3 else None

        info = wait_for(reached, timeout=10, what=f"progress of step {step + 1}")
        seen.append((info.progress.fraction, info.progress.message, info.progress.data))
    assert seen == [(1 / 3, "step 1 of 3", {"done": 1}), (2 / 3, "step 2 of 3", {"done": 2}),
                    (1.0, "step 3 of 3", {"done": 3})]
    assert client.result(job, wait_s=10).value == 3
    assert client.status(job).progress.fraction == 1.0  # kept after the end


def test_watch_yields_each_change_until_the_job_is_final(client: Client, start_node, tmp_path: Path) -> None:
    start_node(processes=1)
    job = client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 2})
    fractions, statuses = [], []
    for info in client.watch(job, timeout_s=20):
        statuses.append(info.status)
        fractions.append(info.progress.fraction if info.progress else None)
        if info.status == JobStatus.STARTED and fractions[-1] is None:
            _go(tmp_path, 0)
        elif fractions[-1] == 0.5:
            _go(tmp_path, 1)
    assert statuses[-1] == JobStatus.FINISHED
    rising = [f for f in fractions if f is not None]
    assert rising == sorted(rising) and rising[0] == 0.5 and rising[-1] == 1.0


def test_the_context_parameter_is_not_an_input_and_bad_progress_fails_the_job(client: Client, start_node) -> None:
    spec = load_tasks(["tests.tasks_for_tests"]).get("test.steps")
    assert set(spec.input_schema()["properties"]) == {"gate_dir", "steps"} and spec.context_param == "ctx"
    start_node(processes=1)
    job = client.submit("test.bad_progress", {"fraction": 1.5}, retries=0)
    result = client.result(job, wait_s=10)
    assert result.status == JobStatus.FAILED
    assert result.error == "progress fraction must be a number from 0 to 1, not 1.5"


def test_the_async_client_watches_progress_rise_on_its_one_subscription(settings, start_node, tmp_path: Path) -> None:
    start_node(processes=1)

    async def scenario() -> list[tuple[str, float | None]]:
        async with AsyncClient(settings=settings) as client:
            job = await client.submit("test.steps", {"gate_dir": str(tmp_path), "steps": 2})
            seen = []
            async for info in client.watch(job, timeout_s=20):
                assert info is not None  # no keepalive asked for
                fraction = info.progress.fraction if info.progress else None
                seen.append((info.status.value, fraction))
                if info.status == JobStatus.STARTED:
                    _go(tmp_path, 0 if fraction is None else 1)
            assert client.events.woken > 0  # woken by messages, not found by re-checks
            return seen

    seen = asyncio.run(scenario())
    assert seen[-1] == ("finished", 1.0) and ("started", 0.5) in seen
