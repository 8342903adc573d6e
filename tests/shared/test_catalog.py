"""The task catalog: nodes publish what they serve; clients, the CLI and the producer validate against it
without the task code, and refuse a task no live node serves unless told to queue it anyway."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from shared import catalog, keys
from shared.client import Client
from shared.errors import InvalidArgs, TaskNotServed, UnknownTask
from tests.support import REPO, wait_for

USER_MODULE = "ferry_user_tasks_for_catalog"


@pytest.fixture()
def user_node(env: dict[str, str], start_node, tmp_path: Path):
    """A node running a user task module that exists only in its own PYTHONPATH, never in the test process."""
    code = tmp_path / "usercode"
    code.mkdir()
    (code / f"{USER_MODULE}.py").write_text(
        textwrap.dedent('''
        from shared.tasks import task

        @task("user.greet")
        def greet(name: str, times: int = 1) -> str:
            """Greet someone, several times."""
            return " ".join([f"hello {name}"] * times)
    ''')
    )
    node_env = {
        **env,
        "FERRY_TASK_MODULES": f"tests.tasks_for_tests,{USER_MODULE}",
        "PYTHONPATH": f"{code}:{env.get('PYTHONPATH', REPO)}",
    }
    return start_node(processes=1, env=node_env, queues="default,user")


def run_app(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with no FERRY_TASK_MODULES: an app that has none of the task code."""
    app_env = {k: v for k, v in env.items() if k != "FERRY_TASK_MODULES"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=app_env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_a_client_without_task_modules_submits_a_user_task_validated_by_the_catalog(env, user_node) -> None:
    ran = run_app(
        env,
        f'''
        import asyncio, json, sys
        from shared.async_client import AsyncClient
        from shared.client import Client
        from shared.errors import InvalidArgs, UnknownTask

        client = Client()
        out = {{"value": client.result(client.submit("user.greet", {{"name": "ada", "times": 2}}), wait_s=20).value}}
        try:
            client.submit("user.greet", {{"times": "many", "extra": 1}})
        except InvalidArgs as exc:
            out["invalid"] = sorted(e["field"] for e in exc.details["errors"])
        try:
            client.submit("user.gret", {{}})
        except UnknownTask as exc:
            out["known"] = exc.details["known"]

        async def main():
            async with AsyncClient() as aclient:
                job = await aclient.submit("user.greet", {{"name": "bob"}})
                return (await aclient.result(job, wait_s=20)).value
        out["async"] = asyncio.run(main())
        out["imported"] = "{USER_MODULE}" in sys.modules
        print(json.dumps(out))
    ''',
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["value"] == "hello ada hello ada" and out["async"] == "hello bob"
    assert out["invalid"] == ["extra", "name", "times"]
    assert "user.greet" in out["known"] and "echo" in out["known"]
    assert out["imported"] is False


def test_ferry_tasks_lists_the_user_tasks_of_a_running_node(env, user_node) -> None:
    app_env = {k: v for k, v in env.items() if k != "FERRY_TASK_MODULES"}
    shown = subprocess.run(
        [sys.executable, "-m", "services.admin.cli", "tasks", "--json"],
        env=app_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    tasks = {t["name"]: t for t in json.loads(shown.stdout)}
    greet = tasks["user.greet"]
    assert (greet["nodes"], greet["queues"], greet["description"]) == (
        [user_node.node_id],
        ["default", "user"],
        "Greet someone, several times.",
    )
    assert greet["input_schema"]["required"] == ["name"] and len(greet["versions"][user_node.node_id]) == 12

    human = subprocess.run(
        [sys.executable, "-m", "services.admin.cli", "tasks"],
        env=app_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    line = next(line for line in human.splitlines() if line.startswith("user.greet"))
    assert "name: string (required)" in line and user_node.node_id in line


def test_a_task_no_live_node_serves_is_refused_unless_the_caller_says_so(
    client: Client, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1, queues="high")

    with pytest.raises(TaskNotServed, match="served on queues high .* not on queue 'low'"):
        client.submit("echo", {"value": 1}, queue="low")
    queued = client.submit("echo", {"value": 1}, queue="low", allow_unserved=True)
    assert client.status(queued).status == "queued"
    with pytest.raises(InvalidArgs):  # validated against the catalog all the same
        client.submit("sleep", {"seconds": "soon"}, queue="low", allow_unserved=True)

    node.terminate()  # a clean stop withdraws its catalog entry at once
    assert catalog.read(conn).names() == []
    client.jobs.catalog_cache.read_at = 0  # forget the cached catalog, as a second later
    with pytest.raises(TaskNotServed, match="no node is running"):
        client.submit("echo", {"value": 1}, queue="high")
    with pytest.raises(UnknownTask):
        client.submit("nobody.has.this", {})


def test_a_dead_nodes_catalog_expires_with_its_heartbeat(env, start_node, conn: redis.Redis) -> None:
    node = start_node(processes=1)
    assert node.node_id in catalog.read(conn).get("echo").nodes
    ttl_ms = conn.pttl(keys.catalog(node.node_id))
    assert 0 < ttl_ms <= 3000  # FERRY_ABANDONED_AFTER_S in the tests

    node.kill()  # no clean stop: nothing withdraws the entry

    wait_for(lambda: not conn.exists(keys.catalog(node.node_id)), timeout=10, what="the dead node's catalog to expire")
    assert catalog.read(conn).get("echo") is None
