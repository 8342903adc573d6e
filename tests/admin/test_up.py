"""`ferry up` on a machine with no Redis configured: private server, API, node, demo; and a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from shared.embedded import free_port
from shared.errors import EXIT_INTERNAL
from tests.admin.helpers import kill_all, processes_with_cmdline, processes_with_env
from tests.support import REPO, as_a_terminals_job, shm_files, wait_for

UP_TIMEOUT_S = 90


@pytest.fixture()
def up_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A fresh machine's environment: no FERRY_REDIS_URL, its own state dir and node id, a small demo."""
    environment = {**env, "FERRY_NODE_ID": f"up{uuid.uuid4().hex[:8]}", "FERRY_STATE_DIR": str(tmp_path / "up-state"),
                   "FERRY_DEMO_SIZE_MB": "8", "FERRY_DEMO_JOBS": "16"}
    environment.pop("FERRY_REDIS_URL")
    return environment


def ferry_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.admin.cli", *args]


def started_by(up_env: dict[str, str], output: str) -> list[psutil.Process]:
    """Every live process of the stack: those that inherited this test's state dir, and its Redis server.

    redis-server rewrites its process title over its environment, so it is found by its port instead.
    """
    found = processes_with_env("FERRY_STATE_DIR", up_env["FERRY_STATE_DIR"])
    match = re.search(r"export FERRY_REDIS_URL=redis://127\.0\.0\.1:(\d+)/0", output)
    if match:
        found += [p for p in processes_with_cmdline(f"127.0.0.1:{match.group(1)}") if p not in found]
    return found


def start_up(up_env: dict[str, str], output: Path, *args: str) -> subprocess.Popen[bytes]:
    """`ferry up ARGS` in its own process group, as a terminal's foreground job, its output (both streams) to `output`."""
    with open(output, "w") as log:
        return subprocess.Popen(ferry_command("up", *args), env=up_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=as_a_terminals_job)


def stop_leftovers(up: subprocess.Popen[bytes], up_env: dict[str, str], output: Path) -> list[psutil.Process]:
    """Kill whatever of the stack is still alive (so a failing test leaks nothing) and return what that was."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    leftovers = started_by(up_env, output.read_text())
    kill_all(leftovers)
    return leftovers


def wait_ready(up: subprocess.Popen[bytes], output: Path) -> None:
    wait_for(lambda: up.poll() is not None or "Press Ctrl-C" in output.read_text(), UP_TIMEOUT_S, what="ferry up to be ready")
    assert up.poll() is None, output.read_text()


def assert_nothing_left(up_env: dict[str, str], api_port: int) -> None:
    assert not (Path(up_env["FERRY_STATE_DIR"]) / "up.json").exists()
    assert shm_files(up_env["FERRY_NODE_ID"], locks=True) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", api_port)) != 0, "the API still listens"


def test_up_without_a_redis_url_runs_the_demo_to_the_end_and_leaves_nothing_behind(up_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "up.out"
    up = start_up(up_env, output, "--exit-after-demo", "--processes", "2", "--port", str(port))
    try:
        code = up.wait(UP_TIMEOUT_S)
    finally:
        leftovers = stop_leftovers(up, up_env, output)
    out = output.read_text()
    assert code == 0, out
    assert f"API    http://127.0.0.1:{port}   (interactive docs: http://127.0.0.1:{port}/docs)" in out
    assert f"node   {up_env['FERRY_NODE_ID']}: 2 worker processes" in out
    assert re.search(r"^  export FERRY_REDIS_URL=redis://127\.0\.0\.1:\d+/0$", out, re.MULTILINE)
    for task in ("echo", "stats.describe", "text.word_count"):
        assert re.search(rf"^{re.escape(task)} .* ok\s*$", out, re.MULTILINE), task
    assert "put a float64 array of 1,048,576 values (8.0 MiB) once" in out
    assert "submitted a map-reduce workflow in one call" in out
    assert "results check: 16/16 slices match numpy (count, sum, min, max); the reduce step: 1,048,576 values" in out
    assert re.search(r"16 map jobs \+ 1 reduce in [\d.]+s: [\d.]+ jobs/s", out)
    # Where each step ran: one row per worker process of the node, 16 slices between them, one reduce.
    rows = re.findall(rf"^\s*{re.escape(up_env['FERRY_NODE_ID'])}\s+(\S+)\s+(\d+)\s*(1?)\s*$", out, re.MULTILINE)
    assert sum(int(n) for _, n, _ in rows) == 16 and [r for _, _, r in rows].count("1") == 1, out
    # One fetch from Redis into the node; the other 15 jobs read the node's shared memory.
    assert "bytes from Redis: 8.0 MiB (1 fetch into 1 node); bytes from shared memory: 120.0 MiB (15 zero-copy reads" in out
    assert out.rstrip().endswith("Ferry stopped.")
    assert leftovers == []
    assert_nothing_left(up_env, port)


def test_ctrl_c_stops_the_stack_in_order_and_other_terminals_find_it_meanwhile(up_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "up.out"
    up = start_up(up_env, output, "--no-demo", "--processes", "1", "--port", str(port))
    try:
        wait_ready(up, output)
        state = json.loads((Path(up_env["FERRY_STATE_DIR"]) / "up.json").read_text())
        assert (state["pid"], state["api"]) == (up.pid, f"http://127.0.0.1:{port}")

        # Another terminal, with no FERRY_REDIS_URL either: `ferry` finds the running stack through its state file.
        other = subprocess.run(ferry_command("submit", "echo", "--arg", "value=found it", "--wait-s", "30"),
                               env=up_env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert (other.returncode, json.loads(other.stdout)) == (0, "found it"), other.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200

        running = started_by(up_env, output.read_text())
        # ferry up, Redis, the producer, the node, its worker process (and, before Python 3.13, the node's resource tracker)
        assert len(running) == (6 if sys.version_info < (3, 13) else 5), [p.cmdline() for p in running]
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its whole foreground process group
        assert up.wait(60) == 0, output.read_text()
    finally:
        leftovers = stop_leftovers(up, up_env, output)
    out = output.read_text()
    assert "stopping…" in out and out.rstrip().endswith("Ferry stopped.")
    node_log = (Path(up_env["FERRY_STATE_DIR"]) / "logs" / "node.log").read_text()
    assert f"node {up_env['FERRY_NODE_ID']}: stopped" in node_log
    assert "could not record its stop" not in node_log  # Redis outlived the node: Ctrl-C did not reach it
    assert leftovers == []
    assert_nothing_left(up_env, port)


def test_a_child_that_dies_is_named_and_everything_stops_with_exit_70(up_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "up.out"
    up = start_up(up_env, output, "--no-demo", "--processes", "1", "--port", str(port))
    try:
        wait_ready(up, output)
        [node] = [p for p in started_by(up_env, "") if "worker" in p.cmdline() and p.ppid() == up.pid]
        node.send_signal(signal.SIGKILL)
        assert up.wait(60) == EXIT_INTERNAL  # not 1, which means "the job failed"
    finally:
        leftovers = stop_leftovers(up, up_env, output)
    out = output.read_text()
    assert "error: the worker node exited unexpectedly (exit code -9)" in out
    assert f"last lines of {Path(up_env['FERRY_STATE_DIR']) / 'logs' / 'node.log'}:" in out
    assert out.rstrip().endswith("Ferry stopped after an error.")
    assert leftovers == []  # its worker processes too, and the producer, and Redis
    assert_nothing_left(up_env, port)


def test_demo_without_a_node_says_how_to_start_one(cli) -> None:
    shown = cli("demo", "--demo-size-mb", "1", "--demo-jobs", "2")
    assert shown.exit_code == 1
    assert shown.stdout.strip() == (
        "demo failed: no live worker node serves queue 'default': "
        "no worker node has registered; start one with `ferry worker` (or run `ferry up`)"
    )
