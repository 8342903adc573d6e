"""A stack killed together with its Redis leaves nothing in /dev/shm for good: the next node start or
`ferry objects gc` of any other deployment on the host sweeps it, and never a live deployment's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.embedded import EmbeddedRedis
from shared.objects.shm import Ledger, deployment_id
from tests.support import REPO, NodeProcess, shm_files

SHM = Path("/dev/shm")


@dataclass
class Deployment:
    """Its own Redis and one node that has fetched an object (a segment, a lock file, a ledger entry)."""

    redis: EmbeddedRedis
    node: NodeProcess
    id: str

    def files(self) -> list[str]:
        return [n for n in shm_files(self.node.node_id, locks=True) if f"_{self.id}" in n]

    def ledger_bytes(self) -> int:
        entry = Ledger(SHM).read().get(f"{self.node.node_id}_{self.id}", {})
        return int(entry.get("bytes", 0))

    def age(self, seconds: float) -> None:
        """Make its files look `seconds` old (the sweep leaves younger lock files alone: a node may be starting)."""
        then = time.time() - seconds
        for name in self.files():
            os.utime(SHM / name, (then, then))

    def kill_all(self) -> None:
        """SIGKILL the node's whole group and its Redis: nobody of this deployment is left to clean up."""
        self.node.kill()
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait(10)


@pytest.fixture()
def deployments(env: dict[str, str]) -> Iterator[Callable[[], Deployment]]:
    """Make deployments on demand; everything is stopped and every file removed at the end."""
    made: list[Deployment] = []

    def make() -> Deployment:
        server = EmbeddedRedis().start()
        node = NodeProcess(dict(env, FERRY_REDIS_URL=server.url), f"d{uuid.uuid4().hex[:8]}", processes=1)
        conn = redis.Redis.from_url(server.url)
        made.append(Deployment(server, node, deployment_id(conn)))
        node.wait_ready(conn)
        with Client(server.url) as client:
            job = client.submit("array.stats", {"data": client.put(np.arange(50_000, dtype=np.float64))})
            assert client.result(job, wait_s=30).status == "finished"
        conn.close()
        deployment = made[-1]
        assert len(deployment.files()) == 2 and deployment.ledger_bytes() > 0  # a segment and the lock file
        return deployment

    yield make
    for d in made:
        d.node.close()
        d.redis.cleanup()
        for name in d.files():
            (SHM / name).unlink(missing_ok=True)


def test_gc_sweeps_a_dead_deployment_and_never_a_live_one(deployments, env: dict[str, str]) -> None:
    dead, live = deployments(), deployments()
    dead.kill_all()
    dead.age(30)
    live.age(30)  # old files, but a live node: its supervisor holds its alive byte
    done = subprocess.run([sys.executable, "-m", "services.admin.cli", "objects", "gc", "--json"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    removed = {r["name"]: r["reason"] for r in json.loads(done.stdout)["removed"]}
    assert dead.files() == [] and dead.ledger_bytes() == 0
    assert f"{dead.node.node_id}_{dead.id}" not in Ledger(SHM).read()
    lock = keys.node_lock(dead.id, dead.node.node_id)
    assert removed[lock] == f"node {dead.node.node_id} of deployment {dead.id} is not running on this host"
    assert len(live.files()) == 2 and live.ledger_bytes() > 0


def test_a_node_start_sweeps_a_dead_deployment_but_not_a_young_one(deployments, start_node) -> None:
    dead, young = deployments(), deployments()
    dead.kill_all()
    young.kill_all()
    dead.age(30)
    young.age(0)  # just written: it could be a node that is starting
    start_node(processes=1)
    assert dead.files() == [] and f"{dead.node.node_id}_{dead.id}" not in Ledger(SHM).read()
    assert len(young.files()) == 2 and young.ledger_bytes() > 0
