"""Fixtures: a real Redis server on a free port (never the user's own), clients, and worker nodes.

The server is started once per session from the same binary `ferry up` uses (redis-server on PATH,
else the bundled Valkey); every test gets an empty database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared import catalog, keys
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.settings import Settings, get_settings
from shared.tasks import load_tasks
from shared.timeutil import unix_now
from tests.support import NodeProcess, shm_files

# Task modules the tests add to the defaults (also proves FERRY_TASK_MODULES works).
TEST_TASK_MODULES = "tests.tasks_for_tests"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.cleanup()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    conn.close()
    return redis_server.url


@pytest.fixture()
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def env(redis_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment for Ferry processes started by a test; also applied to this process."""
    values = {
        "FERRY_REDIS_URL": redis_url,
        "FERRY_TASK_MODULES": TEST_TASK_MODULES,
        "FERRY_STATE_DIR": str(tmp_path / "state"),
        "FERRY_HEARTBEAT_INTERVAL_S": "0.5",
        "FERRY_ABANDONED_AFTER_S": "3",
        "FERRY_REAP_INTERVAL_S": "0.5",
        "FERRY_LOG_LEVEL": "INFO",
        # Puts go to Redis only (the node fetches them), as the object-path tests expect; the same-host copy into
        # a node's memory is tested on its own (tests/worker/test_local_put.py turns it on).
        "FERRY_PUT_LOCAL_COPY": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTEST_TMP": str(tmp_path),
    }
    for name in list(os.environ):
        if name.startswith("FERRY_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield dict(os.environ)
    get_settings.cache_clear()


@pytest.fixture()
def settings(env: dict[str, str]) -> Settings:
    return get_settings()


@pytest.fixture()
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings=settings)
    yield c
    c.close()


STAND_IN_NODE = "catalog-stand-in"


@pytest.fixture()
def served(conn: redis.Redis, settings: Settings) -> str:
    """The test tasks published as one live node's catalog, with no node to run them: their jobs stay queued.

    For tests about submitting and queued jobs; tests about running jobs start real nodes instead.
    """
    conn.zadd(keys.NODES, {STAND_IN_NODE: unix_now()})
    catalog.publish(conn, STAND_IN_NODE, settings.queues, load_tasks(settings.task_modules), ttl_s=300)
    return STAND_IN_NODE


@pytest.fixture()
def node_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def start_node(env: dict[str, str], conn: redis.Redis) -> Iterator[Callable[..., NodeProcess]]:
    """Start `ferry worker` nodes; each is stopped, and its shared memory checked, at teardown."""
    started: list[NodeProcess] = []

    def start(node_id: str | None = None, processes: int = 2, wait: bool = True, **kwargs) -> NodeProcess:
        node = NodeProcess(kwargs.pop("env", env), node_id or f"n{uuid.uuid4().hex[:8]}", processes, **kwargs)
        started.append(node)
        return node.wait_ready(conn) if wait else node

    yield start
    for node in started:
        node.close()
    for node in started:
        for name in shm_files(node.node_id, locks=True):  # a crashed test must not leak memory either
            Path(f"/dev/shm/{name}").unlink(missing_ok=True)  # a node's start may have swept a dead node's files
