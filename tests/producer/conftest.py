"""Fixtures: the producer as a real `python -m services.producer` process, spoken to over real HTTP.

`api` is one producer with the standard test settings, shared by the session (it is stateless, and
each test still gets an empty Redis from `redis_url`); `start_producer` starts one with its own
settings (a token, small limits, a dead Redis) for the tests that need them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.embedded import EmbeddedRedis, free_port
from shared.processes import terminate
from tests.conftest import TEST_TASK_MODULES
from tests.support import REPO, wait_for


class Producer:
    """One producer process on a free loopback port; `http` is an httpx client bound to it."""

    def __init__(self, env: dict[str, str], log_dir: Path, token: str | None = None) -> None:
        self.env = env
        self.log_path = log_dir / f"producer-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "wb")
        self.proc: subprocess.Popen[bytes] | None = None
        for _attempt in range(3):  # the free port can be taken before the child binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.producer", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                break
        else:
            raise AssertionError(f"the producer did not start:\n{self.output()}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        def answers() -> bool | str:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return "exited"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code in (200, 503)  # 503: up, Redis down
            except httpx.TransportError:
                return False

        return wait_for(answers, timeout, what="the producer to answer /healthz") is True

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        if self.proc is not None:
            terminate(self.proc, grace_s=10)
        self._log.close()


def producer_env(redis_url: str, state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment tests give Ferry processes (as tests/conftest.py's `env`), without the caller's FERRY_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    return {
        **base,
        "FERRY_REDIS_URL": redis_url,
        "FERRY_TASK_MODULES": TEST_TASK_MODULES,
        "FERRY_STATE_DIR": str(state_dir),
        "FERRY_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


@pytest.fixture(scope="session")
def api_server(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Producer]:
    log_dir = tmp_path_factory.mktemp("producer")
    producer = Producer(producer_env(redis_server.url, log_dir / "state"), log_dir)
    yield producer
    producer.close()


@pytest.fixture()
def api(api_server: Producer, env: dict[str, str]) -> httpx.Client:
    """An HTTP client for the shared producer; `env` empties Redis first and points this process at it too."""
    assert api_server.proc is not None and api_server.proc.poll() is None, api_server.output()
    return api_server.http


@pytest.fixture()
def start_producer(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Producer]]:
    """Start producers with extra settings (FERRY_* overrides); each is stopped at teardown."""
    started: list[Producer] = []

    def start(token: str | None = None, **overrides: str) -> Producer:
        producer = Producer({**env, **overrides}, tmp_path, token=token)
        started.append(producer)
        return producer

    yield start
    for producer in started:
        producer.close()

