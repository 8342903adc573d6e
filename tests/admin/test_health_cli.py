"""`ferry health`, the workers' docker healthcheck: 0 healthy, 3 Redis unreachable, 1 node not alive, 2 no settings."""

from __future__ import annotations

import pytest

from shared.embedded import free_port
from shared.errors import EXIT_FAILED, EXIT_REDIS, EXIT_USAGE
from shared.settings import get_settings
from tests.admin.helpers import one_line


def test_health_exits_0_when_redis_answers(ferry, redis_url: str) -> None:
    healthy = ferry("health")
    assert (healthy.returncode, healthy.stdout.strip(), healthy.stderr) == (0, f"ok: Redis at {redis_url} answers", "")


def test_health_exits_3_when_nothing_listens_at_the_url(ferry) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    down = ferry("health", env_overrides={"FERRY_REDIS_URL": url})
    assert down.returncode == EXIT_REDIS
    line = one_line(down.stderr)
    assert line.startswith(f"error: cannot reach Redis at {url} (ConnectionError:")
    assert line.endswith("start Redis there or point FERRY_REDIS_URL at a running server (`ferry up` starts a private one)")


def test_health_without_a_redis_url_or_a_running_ferry_up_exits_2_saying_what_to_do(ferry) -> None:
    unset = ferry("health", unset=("FERRY_REDIS_URL",))  # FERRY_STATE_DIR is the test's own: no `ferry up` there
    assert unset.returncode == EXIT_USAGE
    assert one_line(unset.stderr) == (
        "error: FERRY_REDIS_URL is not set and no `ferry up` is running: set FERRY_REDIS_URL=redis://HOST:6379/0, "
        "or run `ferry up` to start a private server."
    )


def test_health_of_a_node_follows_its_heartbeat_and_its_stop(ferry, start_node) -> None:
    node = start_node(processes=1)
    alive = ferry("health", "--node", node.node_id)
    assert alive.returncode == 0
    assert alive.stdout.startswith(f"ok: node {node.node_id} is alive (heartbeat ")
    here = ferry("health", "--this-node", env_overrides={"FERRY_NODE_ID": node.node_id})  # a worker container's check
    assert here.returncode == 0 and here.stdout.startswith(f"ok: node {node.node_id} is alive")

    unknown = ferry("health", "--node", "nosuchnode")
    assert unknown.returncode == EXIT_FAILED
    assert one_line(unknown.stderr).startswith("error: node nosuchnode is not registered in Redis at redis://")

    assert node.terminate() == 0
    stopped = ferry("health", "--node", node.node_id)
    assert stopped.returncode == EXIT_FAILED
    assert one_line(stopped.stderr) == f"error: node {node.node_id} is not alive: it has stopped (a live node beats every 0.5s)"


@pytest.mark.parametrize("args", [
    ("info",), ("status", "0" * 32), ("submit", "echo"), ("purge", "low", "--yes"), ("objects", "ls"), ("objects", "gc"), ("demo",),
])  # through the Client, through Admin, through the ObjectStore
def test_every_command_that_needs_redis_exits_3_with_one_line_when_it_is_down(cli, monkeypatch, args: tuple[str, ...]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("FERRY_REDIS_URL", url)
    get_settings.cache_clear()
    down = cli(*args)
    assert down.exit_code == EXIT_REDIS
    assert one_line(down.stderr).startswith(f"error: cannot reach Redis at {url}")
