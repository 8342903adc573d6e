"""Helpers for tests: deadlines instead of sleeps, and worker nodes as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

from shared import keys
from shared.processes import pid_alive

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def as_a_terminals_job() -> None:
    """`preexec_fn` for a process the test stops with Ctrl-C: SIGINT (and SIGQUIT) at their defaults, as in a
    terminal's foreground job. A suite started in the background by a shell (`./.ci/run &`) inherits both
    ignored, an ignored signal stays ignored across exec, and `ferry up` would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class NodeProcess:
    """`ferry worker` as a real subprocess (its own process group, so killing it kills its workers too)."""

    def __init__(self, env: dict[str, str], node_id: str, processes: int = 2, queues: str | None = None,
                 extra_args: list[str] | None = None, command: list[str] | None = None) -> None:
        self.node_id = node_id
        self.processes = processes
        self.env = dict(env, FERRY_NODE_ID=node_id)
        args = command or [sys.executable, "-m", "services.admin.cli", "worker", "--processes", str(processes)]
        if queues and not command:
            args += ["--queues", queues]
        self.log_path = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"ferry-node-{node_id}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args + (extra_args or []), env=self.env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def workers(self, conn: redis.Redis) -> list[str]:
        names = [k.decode()[len("rq:worker:"):] for k in conn.smembers(keys.RQ_WORKERS)]
        return sorted(n for n in names if n.startswith(f"{self.node_id}."))

    def wait_ready(self, conn: redis.Redis, timeout: float = 20.0) -> NodeProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.node_id} exited with {self.proc.returncode}:\n{self.output()}")
            if conn.hget(keys.node(self.node_id), "pid") != str(self.proc.pid).encode():
                return False  # an earlier run of this node id may still be registered
            return len([p for p in self.worker_pids(conn) if pid_alive(p)]) >= self.processes
        wait_for(ready, timeout, what=f"node {self.node_id} to register {self.processes} workers")
        return self

    def worker_pids(self, conn: redis.Redis) -> list[int]:
        return [int(name.rsplit(".", 1)[1]) for name in self.workers(conn)]

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole node: supervisor and worker processes together (what an OOM kill or `docker kill` does)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
        self.kill()  # whatever is left in its group
        self._log.close()


def shm_files(node_id: str, locks: bool = False) -> list[str]:
    """The node's segments in /dev/shm (and its zero-byte lock files, with `locks`)."""
    return sorted(n for n in os.listdir("/dev/shm")
                  if n.startswith(f"ferry_{node_id}_") and (locks or not n.endswith(".lock")))
