"""`ferry up`: everything on this machine in one command, for a first run and for development.

It starts a private Redis-compatible server (unless FERRY_REDIS_URL names one), the producer and one
worker node as child processes, waits until they answer, runs the demo, and stops them all, in that
reverse order, on Ctrl-C. The children run in their own sessions so that Ctrl-C reaches only
`ferry up`, which then stops them in order; if `ferry up` itself is killed, the kernel stops them
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Annotated

import redis
import typer

from services.admin import demo as demo_module
from services.admin.common import command, console, err_console, esc, human_bytes, settings
from shared import keys, ports, up_state
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.errors import EXIT_INTERNAL, EXIT_OK, ConfigError
from shared.objects.shm import collect_quietly
from shared.processes import die_with_parent
from shared.redis_conn import connect, connect_checked, redact
from shared.replies import texts
from shared.settings import Settings

READY_TIMEOUT_S = 60.0  # producer and node each; a cold start on a slow disk takes a few seconds
POLL_S = 0.1  # readiness checks
WATCH_S = 0.5  # how often a running stack looks at its children
PRODUCER_STOP_S = 10.0
NODE_STOP_S = 30.0  # running jobs may finish; then a second SIGTERM kills them
KILL_WAIT_S = 10.0
LOG_TAIL_LINES = 15


class ChildDied(Exception):
    """A child process of `ferry up` exited while it should be running."""


@dataclass
class Child:
    """A service started by `ferry up`: its process (leader of its own session) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self, grace_s: float, second_grace_s: float = 0.0) -> int | None:
        """SIGTERM, wait; optionally a second SIGTERM (the node's "kill running jobs"), wait; then SIGKILL the group."""
        for grace in (grace_s, second_grace_s):
            if grace <= 0 or self.exited():
                continue
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                console.print(f"{self.name}: still running after {grace:g}s", highlight=False)
        self._kill_group()  # the leader, if still there, and anything it left in its process group
        try:
            self.process.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        return self.process.returncode

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        try:
            self.process.send_signal(sig)
        except ProcessLookupError:
            pass

    def _kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Stack:
    """What `ferry up` started, so that it can check on it and stop it in order."""

    config: Settings
    server: EmbeddedRedis | None = None  # the private server, when FERRY_REDIS_URL is not set
    redis_url: str = ""
    conn: redis.Redis | None = None  # for readiness checks
    children: list[Child] = field(default_factory=list)
    state_written: bool = False

    # --- start ---
    def start_redis(self) -> str:
        """FERRY_REDIS_URL if set (checked), else a private in-memory server; returns the URL."""
        if self.config.redis_url:
            connect_checked(self.config).close()  # RedisUnavailable, exit 3, when it does not answer
            self.redis_url = self.config.redis_url
            return self.redis_url
        refuse_second_stack(self.config)
        self.server = EmbeddedRedis(persist=False).start()  # in its own session: Ctrl-C does not reach it
        self.redis_url = self.server.url
        return self.redis_url

    def connection(self) -> redis.Redis:
        if self.conn is None:
            self.conn = connect(self.redis_url)
        return self.conn

    def write_state(self, api: str) -> None:
        """Tell `ferry` commands and `Client()` in other terminals where this stack's Redis is (shared/up_state.py)."""
        up_state.write(self.config.state_dir, self.redis_url, api)
        self.state_written = True

    def start_child(self, name: str, log_name: str, args: list[str]) -> Child:
        log_dir = self.config.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{log_name}.log"
        log = open(log_path, "wb")
        env = dict(os.environ, FERRY_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent, start_new_session=True)
        child = Child(name, process, log_path, log)
        self.children.append(child)
        return child

    # --- watch ---
    def check(self) -> None:
        """Raise ChildDied naming the first child that has exited."""
        for child in self.children:
            if child.exited():
                raise ChildDied(f"the {child.name} exited unexpectedly (exit code {child.process.returncode})")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise ChildDied(f"{what} did not become ready within {timeout_s:g}s")
            time.sleep(POLL_S)

    # --- stop ---
    def stop(self) -> None:
        """Stop the producer, then the node (running jobs may finish), then Redis; forget the state file."""
        previous = {sig: signal.signal(sig, self._hurry) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                if child.exited():
                    child.stop(0)
                    continue
                if child.name == "worker node":
                    console.print("stopping the worker node: running jobs finish first (Ctrl-C again to kill them)",
                                  highlight=False)
                    child.stop(NODE_STOP_S, KILL_WAIT_S)
                else:
                    child.stop(PRODUCER_STOP_S)
            if self.conn is not None:
                collect_quietly(self.conn)  # a node that was killed leaves its files in /dev/shm otherwise
                self.conn.close()
            if self.server is not None:
                self.server.cleanup()
        finally:
            self._forget_state()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _hurry(self, signum: int, frame: FrameType | None) -> None:
        """A second Ctrl-C while stopping: the node's second SIGTERM kills its running jobs."""
        for child in self.children:
            if child.name == "worker node" and not child.exited():
                child._signal(signal.SIGTERM)

    def _forget_state(self) -> None:
        if self.state_written:
            up_state.forget(self.config.state_dir)


def refuse_second_stack(config: Settings) -> None:
    """ConfigError when a `ferry up` with a private server already runs here: `ferry` commands could not tell which."""
    running = up_state.read(config.state_dir)
    if running and not config.redis_url:
        raise ConfigError(
            f"`ferry up` is already running on this machine (Redis {running.redis_url}, API {running.api}, "
            f"see {up_state.state_file(config.state_dir)}); "
            "stop it first, or set FERRY_REDIS_URL to run another stack against a server of your choice"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM (docker stop, kill) stops the stack exactly as Ctrl-C does


@command
def up(
    processes: Annotated[
        int | None,
        typer.Option("--processes", "-p", min=1,
            help="Worker processes in the node (default: FERRY_PROCESSES, else the CPU count)."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface the API listens on (default: FERRY_API_HOST, i.e. 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="API port (default: FERRY_API_PORT)."),
    ] = None,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Skip the demo.")] = False,
    exit_after_demo: Annotated[
        bool,
        typer.Option("--exit-after-demo", help="Stop everything once the demo has run; exit with its code."),
    ] = False,
    demo_size_mb: demo_module.DemoSizeMb = demo_module.DEFAULT_SIZE_MB,
    demo_jobs: demo_module.DemoJobs = demo_module.DEFAULT_JOBS,
) -> None:
    """Run Ferry on this machine: Redis (a private one unless FERRY_REDIS_URL is set), the API and a worker node.

    Prints where the API is and how other terminals reach this stack, runs the demo, and keeps running
    until Ctrl-C, which stops the API, then the node (running jobs finish), then Redis.
    """
    config = settings()
    host = host or config.api_host
    port = port or config.api_port
    processes = processes or config.processes
    refuse_second_stack(config)
    ports.require_free(host, port)
    stack = Stack(config)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = stack.start_redis()
        api = f"http://{_reachable(host)}:{port}"
        if stack.server is not None:
            stack.write_state(api)
        producer = stack.start_child("producer", "producer",
                                     [sys.executable, "-m", "services.producer", "--host", host, "--port", str(port)])
        node = stack.start_child("worker node", "node",
                                 [sys.executable, "-m", "services.admin.cli", "worker", "--processes", str(processes)])
        with console.status("starting the API and the worker node…"):
            stack.wait_until(lambda: _healthy(api), f"the producer (log: {producer.log_path})")
            stack.wait_until(lambda: _node_ready(stack.connection(), config.node_id, node.process.pid, processes),
                             f"worker node {config.node_id} (log: {node.log_path})")
        _announce(stack, api, processes)
        code = EXIT_OK
        if not no_demo:
            with Client(redis_url=url, settings=config) as client:
                code = demo_module.run_demo(client, demo_size_mb, demo_jobs, check=stack.check)
        if not exit_after_demo:  # a failed demo is reported above; the stack stays up to be looked at
            console.print("\nFerry is running. Press Ctrl-C to stop it.", highlight=False)
            while True:
                stack.check()
                time.sleep(WATCH_S)
    except KeyboardInterrupt:
        console.print("\nstopping…", highlight=False)
        code = EXIT_OK
    except ChildDied as exc:
        _report_death(stack, str(exc))
        code = EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        stack.stop()
    console.print("Ferry stopped." if code == EXIT_OK else "Ferry stopped after an error.", highlight=False)
    raise typer.Exit(code)


def _reachable(host: str) -> str:
    """The address, as a URL host, to reach a server bound to `host` from this machine."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# Never through an HTTP proxy from the environment: the API is on this machine.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(api: str) -> bool:
    try:
        with _DIRECT.open(f"{api}/healthz", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _node_ready(conn: redis.Redis, node_id: str, pid: int, processes: int) -> bool:
    """The node has registered itself (this pid) and all its worker processes."""
    if conn.hget(keys.node(node_id), "pid") != str(pid).encode():
        return False
    prefix = keys.worker(f"{node_id}.")
    return sum(1 for k in texts(conn.smembers(keys.RQ_WORKERS)) if k.startswith(prefix)) >= processes


def _announce(stack: Stack, api: str, processes: int) -> None:
    config = stack.config
    budget = int(stack.connection().hget(keys.node(config.node_id), "shm_budget_bytes") or 0)
    where = (f"{stack.redis_url} (private and in memory: gone when `ferry up` stops)" if stack.server is not None
             else f"{redact(stack.redis_url)} (from FERRY_REDIS_URL)")
    logs = ", ".join(str(c.log_path) for c in stack.children)
    console.print()
    console.print("[bold green]Ferry is up[/bold green]")
    console.print(f"  API    {api}   (interactive docs: {api}/docs)", highlight=False)
    console.print(f"  node   {config.node_id}: {processes} worker {'process' if processes == 1 else 'processes'}, "
                  f"shared-memory budget {human_bytes(budget)}", highlight=False)
    console.print(f"  Redis  {esc(where)}", highlight=False)
    console.print(f"  logs   {esc(logs)}", highlight=False)
    hint = " (or nothing: `ferry` and `Client()` on this machine find this stack)" if stack.state_written else ""
    console.print(f"In another terminal{hint}:", highlight=False)
    console.print(f"  export FERRY_REDIS_URL={redact(stack.redis_url)}", highlight=False, soft_wrap=True)


def _report_death(stack: Stack, message: str) -> None:
    """One red line, then the end of the log of whichever child is to blame (all of them if none has exited)."""
    err_console.print(f"[red]error:[/red] {esc(message)}", highlight=False, soft_wrap=True)
    exited = [c for c in stack.children if c.exited()] or stack.children
    for child in exited:
        tail = child.tail()
        if tail:
            err_console.print(f"last lines of {esc(child.log_path)}:", highlight=False)
            err_console.print(tail, highlight=False, markup=False)

