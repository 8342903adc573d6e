"""The job surface in the CLI: idempotency conflicts, per-job settings, tags and filters, progress."""

from __future__ import annotations

from shared.client import Client
from shared.errors import EXIT_CONFLICT


def test_a_key_conflict_exits_5_naming_the_job(client: Client, served: str, cli) -> None:
    first = client.submit("echo", {"value": 1}, idempotency_key="order-4")
    result = cli("submit", "echo", "--arg", "value=2", "--idempotency-key", "order-4")
    assert result.exit_code == EXIT_CONFLICT
    assert f"already belongs to job {first.id}" in result.stderr
