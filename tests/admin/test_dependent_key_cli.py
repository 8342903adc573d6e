"""`ferry submit --depends-on ... --idempotency-key`: a reused key with other args is exit 5 (gaps item 2)."""

from __future__ import annotations

from shared.client import Client
from shared.errors import EXIT_CONFLICT


def test_a_dependent_jobs_reused_key_with_other_args_is_exit_5(cli, client: Client, served: str) -> None:
    first = client.submit("echo", {"value": 1}).id
    one = cli("submit", "echo", "--arg", "value=2", "--depends-on", first, "--idempotency-key", "dk-cli")
    same = cli("submit", "echo", "--arg", "value=2", "--depends-on", first, "--idempotency-key", "dk-cli")
    other = cli("submit", "echo", "--arg", "value=3", "--depends-on", first, "--idempotency-key", "dk-cli")
    assert one.exit_code == 0 and same.stdout.strip() == one.stdout.strip(), (one.stdout, same.stdout)
    assert other.exit_code == EXIT_CONFLICT
    assert f"idempotency key 'dk-cli' already belongs to job {one.stdout.strip()}" in " ".join(other.stderr.split())
