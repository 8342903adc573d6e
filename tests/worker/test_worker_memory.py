"""What a worker process imports: only what it uses, since every worker carries its share of the supervisor's
imports (workers' PSS, issue 7). The fork itself and the PSS figures are in benchmarks/shared_input.py."""

from __future__ import annotations

import importlib.util

import pytest

from shared.client import Client


def test_a_worker_never_loads_the_otel_sdk_yet_a_task_can_import_it(client: Client, start_node) -> None:
    """redis-py would import the OpenTelemetry metrics SDK (~20 MB) when installed; Ferry's processes hide it while
    redis is imported, then un-hide it, so a task that wants the SDK still gets it."""
    if importlib.util.find_spec("opentelemetry.sdk.metrics") is None:
        pytest.skip("opentelemetry-sdk is not installed here: nothing to hide, nothing to import")
    start_node(processes=1)
    job = client.submit("test.modules", {"prefixes": ["opentelemetry"], "then_import": "opentelemetry.sdk.metrics"})
    result = client.result(job, wait_s=15)
    assert result.status == "finished", result.error
    assert result.value == {"loaded": [], "imported": "opentelemetry.sdk.metrics"}


def test_a_worker_does_not_load_the_client_nor_the_cli(client: Client, start_node) -> None:
    """`shared` loads its public names on first use and `ferry worker` is assembled alone: a worker process imports
    neither the client library (a producer's tool) nor the admin CLI's command groups and their tables (rich), nor
    what only validating args (jsonschema) or computing cron ticks (croniter) needs."""
    start_node(processes=1)
    unused = ["shared.client", "shared.async_client", "services.admin.", "services.producer", "rich", "jsonschema",
              "croniter"]
    job = client.submit("test.modules", {"prefixes": unused})
    result = client.result(job, wait_s=15)
    assert result.status == "finished", result.error
    assert result.value["loaded"] == []
