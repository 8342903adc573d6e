"""`ferry worker` is assembled without the other command groups (a node's memory); it must read as before."""

from __future__ import annotations

from tests.admin.conftest import Cli, Ferry


def test_ferry_worker_alone_parses_and_explains_as_in_the_whole_cli(ferry: Ferry, cli: Cli) -> None:
    alone = ferry("worker", "--help")
    assert alone.returncode == 0, alone.stderr
    assert "Usage: ferry worker [OPTIONS]" in alone.stdout and "--processes" in alone.stdout
    assert "--queues" in alone.stdout and "Run a worker node" in alone.stdout

    bad = ferry("worker", "--processes", "0")
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr

    whole = cli("--help")  # the whole CLI still lists it with the others
    assert whole.exit_code == 0 and "worker" in whole.stdout and "submit" in whole.stdout
