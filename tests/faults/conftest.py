"""Fixtures of the fault suite: a Redis server the test may SIGKILL, SIGSTOP and restart, and a ledger of job bodies.

Every test here gets its own redis-server (AOF on, `appendfsync everysec`, its own directory and port), so it
can be killed and restarted from its append-only file on the same port without disturbing the session server
the rest of the suite shares. `redis_url` is overridden, so `env`, `conn`, `client` and `start_node` from
tests/conftest.py all point at it.

The ledger is a file that the `test.ledger` task appends to (one line when a body starts, one when it ends,
with the pid): it counts executions independently of Redis, which is the thing under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis

from shared import keys
from shared.embedded import find_server_binary, free_port
from shared.processes import die_with_parent
from tests.tasks_for_tests import LEDGER_ENV

REDIS_START_TIMEOUT_S = 15.0
_FIGURES = pytest.StashKey[list[str]]()


class KillableRedis:
    """A redis-server child on a fixed port and directory: SIGKILL it, SIGSTOP it, start it again from its AOF."""

    def __init__(self, data_dir: Path) -> None:
        self.binary = find_server_binary()
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> KillableRedis:
        """Start (or restart) the server on the same port and directory; wait with a deadline until it answers."""
        assert self.process is None or self.process.poll() is not None, "redis-server is already running"
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes", "--loglevel", "notice", "--logfile", str(self.data_dir / "server.log"),
        ]
        # Its own session (a signal to the test's group does not reach it); it dies with the test process.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent, start_new_session=True)
        self.stopped = False
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} exited with {self.process.returncode}: "
                                         f"{self.log_tail()}")
                try:
                    if probe.ping():
                        return self
                except redis.BusyLoadingError:
                    pass  # still reading its AOF
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server on port {self.port} did not answer within "
                                         f"{REDIS_START_TIMEOUT_S}s: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL the server: no shutdown and no final AOF rewrite, as an OOM kill of the process would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.stopped = False

    def log_tail(self, chars: int = 800) -> str:
        log = self.data_dir / "server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process handles nothing until continued
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture()
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableRedis]:
    """This test's own redis-server; killed and its directory removed at teardown, whatever the test did to it."""
    data_dir = tmp_path_factory.mktemp("fault-redis")
    server = KillableRedis(data_dir).start()
    try:
        yield server
    finally:
        server.close()
        for path in sorted(data_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        data_dir.rmdir()


@pytest.fixture()
def redis_url(fault_redis: KillableRedis) -> str:
    """Point the shared fixtures (env, conn, client, start_node) at this test's killable server."""
    return fault_redis.url


# A body may run again when the process that completed it was SIGKILLed before it recorded the outcome (the
# at-least-once window between a body's last line and the result reaching Redis): the kill came after the body's
# end line, within this long, and that process started no other body in between.
RECORD_WINDOW_S = 0.5


@dataclass
class Ledger:
    """Body executions per token, read from the file the `test.ledger` task appends to."""

    path: Path
    starts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    order: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    last_line: dict[int, tuple[str, str, float]] = field(default_factory=dict)  # pid -> (kind, token, when)
    end_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # wall clock

    def read(self) -> Ledger:
        for table in (self.starts, self.ends, self.order, self.last_line, self.end_times):
            table.clear()
        if not self.path.exists():
            return self
        for line in self.path.read_text().splitlines():
            kind, token, raw_pid, when = line.split()
            pid = int(raw_pid)
            (self.starts if kind == "start" else self.ends)[token].append(pid)
            self.order[token].append((kind, pid))
            self.last_line[pid] = (kind, token, float(when))
            if kind == "end":
                self.end_times[token].append(float(when))
        return self

    def killed_mid_job(self, token: str) -> int:
        """Executions of `token` that started and never ended (their process died inside the body)."""
        ended = list(self.ends.get(token, []))
        killed = 0
        for pid in self.starts.get(token, []):
            if pid in ended:
                ended.remove(pid)
            else:
                killed += 1
        return killed

    def killed_before_recording(self, token: str, kills: dict[int, float]) -> int:
        """Complete executions of `token` whose process was SIGKILLed right after the body, before anything else.

        `kills`: pid -> wall-clock time of its SIGKILL. Such an execution's outcome may never have reached Redis.
        """
        count = 0
        for pid in set(self.ends.get(token, [])):
            last = self.last_line.get(pid)
            if pid in kills and last and last[:2] == ("end", token) and 0 <= kills[pid] - last[2] <= RECORD_WINDOW_S:
                count += 1
        return count

    def ran_twice(self, token: str, kills: dict[int, float] | None = None) -> bool:
        """More than one body run not explained by a SIGKILL of its process mid-job, or any start after an end.

        Mid-job: inside the body (a start line and no end line) or, with `kills`, after the body and before the
        process did anything else (see `killed_before_recording`).
        """
        starts = len(self.starts.get(token, []))
        explained = self.killed_mid_job(token) + (self.killed_before_recording(token, kills) if kills else 0)
        if starts - explained > 1:
            return True
        if kills is not None:
            return False
        seen_end = False
        for kind, _pid in self.order.get(token, []):
            if kind == "end":
                seen_end = True
            elif seen_end:
                return True
        return False

    def twice(self, tokens: list[str], kills: dict[int, float] | None = None) -> list[str]:
        return [t for t in tokens if self.ran_twice(t, kills)]

    def completed(self, token: str) -> int:
        return len(self.ends.get(token, []))


@pytest.fixture()
def ledger(env: dict[str, str], tmp_path: Path) -> Ledger:
    """A ledger directory given to every node this test starts (through FERRY_TEST_LEDGER_DIR)."""
    directory = tmp_path / "ledger"
    directory.mkdir()
    env[LEDGER_ENV] = str(directory)  # the dict start_node passes to nodes
    return Ledger(directory / "ledger.log")


@pytest.fixture()
def figures(request: pytest.FixtureRequest):
    """Print a test's one-line summary, and repeat it in the terminal summary (visible without -s)."""

    def report(**values: object) -> str:
        line = f"{request.node.name}: " + " ".join(f"{k}={v}" for k, v in values.items())
        print(f"\nFIGURES {line}", flush=True)
        request.config.stash.setdefault(_FIGURES, []).append(line)
        return line

    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("fault suite figures")
        for line in lines:
            terminalreporter.write_line(line)


def node_processes(supervisor_pid: int) -> list[psutil.Process]:
    """The live (non-zombie) descendants of a node's supervisor: its worker processes."""
    try:
        children = psutil.Process(supervisor_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of a process group (a node's group survives its supervisor)."""
    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and _alive(process):
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


FINAL = ("finished", "failed", "canceled")


def job_states(conn: redis.Redis, job_ids: list[str]) -> dict[str, str | None]:
    """Each job's status field (None: no job hash, i.e. lost or expired), in one pipelined round trip."""
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "status")
    return {job_id: (raw.decode() if raw else None) for job_id, raw in zip(job_ids, pipe.execute(), strict=True)}


def result_entries(conn: redis.Redis, job_ids: list[str]) -> dict[str, int]:
    """XLEN of each job's result stream."""
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.xlen(keys.results(job_id))
    return dict(zip(job_ids, pipe.execute(), strict=True))


def wait_until_final(
    conn: redis.Redis, job_ids: list[str], timeout: float
) -> tuple[dict[str, str | None], dict[str, float]]:
    """Poll until every job is in a final state or `timeout` passes; (last states, monotonic time each became final)."""
    deadline = time.monotonic() + timeout
    final_at: dict[str, float] = {}
    while True:
        pending = [j for j in job_ids if j not in final_at]
        states = job_states(conn, pending) if pending else {}
        now = time.monotonic()
        for job_id, state in states.items():
            if state in FINAL:
                final_at[job_id] = now
        if len(final_at) == len(job_ids) or now > deadline:
            return job_states(conn, job_ids), final_at
        time.sleep(0.05)


def describe_stuck(
    conn: redis.Redis, job_ids: list[str], ledger: Ledger, token_of: dict[str, str], limit: int = 10
) -> str:
    """For a failure message: each unfinished job's status, worker, started-registry membership and body runs."""
    members = {m.decode().split(":")[0] for q in conn.smembers(keys.RQ_QUEUES)
               for m in conn.zrange(keys.started(q.decode()[len(keys.QUEUE_PREFIX):]), 0, -1)}
    lines = []
    for job_id in job_ids[:limit]:
        status, worker, origin = conn.hmget(keys.job(job_id), "status", "worker_name", "origin")
        in_queue = origin is not None and conn.lpos(keys.queue(origin.decode()), job_id) is not None
        token = token_of.get(job_id, "?")
        lines.append(f"  {job_id} token={token} status={status and status.decode()} "
                     f"worker={worker and worker.decode()} in_queue={in_queue} "
                     f"in_started_registry={job_id in members} body_starts={len(ledger.starts.get(token, []))} "
                     f"body_ends={len(ledger.ends.get(token, []))}")
    more = f"\n  ... and {len(job_ids) - limit} more" if len(job_ids) > limit else ""
    return "\n".join(lines) + more
