"""Which files the dead-node sweep removes, on a directory standing in for /dev/shm (the real thing, with
nodes killed together with their Redis, is tests/worker/test_dead_deployments.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared import keys
from shared.objects.dead_nodes import sweep_dead_nodes
from shared.objects.shm_files import ALIVE_BYTE, Ledger, range_lock

OBJECT = "ab" * 32


def leftovers(shm: Path, node: str, deployment: str, age_s: float, lock: bool = True) -> list[Path]:
    """A node's segment (and lock file) with a ledger entry, `age_s` old."""
    paths = [shm / keys.segment(deployment, node, OBJECT)]
    if lock:
        paths.append(shm / keys.node_lock(deployment, node))
    then = time.time() - age_s
    for path in paths:
        path.write_bytes(b"\0" * (4096 if "lock" not in path.name else 0))
        os.utime(path, (then, then))
    with Ledger(shm).edit() as entries:
        entries[f"{node}_{deployment}"] = {"node": node, "deployment": deployment, "bytes": 4096}
    return paths


def test_only_provably_dead_nodes_of_this_user_are_swept(tmp_path: Path) -> None:
    dead = leftovers(tmp_path, "dead", "0000aaaa", 30)
    young = leftovers(tmp_path, "young", "0000bbbb", 1)  # may be a node that is starting
    live = leftovers(tmp_path, "live", "0000cccc", 30)
    foreign = leftovers(tmp_path, "theirs", "0000dddd", 30)  # another user's Ferry
    old_orphan = leftovers(tmp_path, "gone", "0000eeee", 600, lock=False)
    new_orphan = leftovers(tmp_path, "went", "0000ffff", 30, lock=False)
    for path in foreign:
        os.chown(path, 12345, 12345)
    holder = os.open(live[1], os.O_RDWR)  # what a live node's supervisor holds for its whole life
    try:
        assert range_lock(holder, ALIVE_BYTE, wait=False)
        removed = sweep_dead_nodes(tmp_path)
    finally:
        os.close(holder)
    gone = sorted(p.name for p in [*dead, *old_orphan])
    assert sorted(r.name for r in removed) == gone
    assert not any(p.exists() for p in [*dead, *old_orphan])
    assert all(p.exists() for p in [*young, *live, *foreign, *new_orphan])
    # entries of nodes whose lock file is gone (the dead, the orphans) go; the rest stay
    assert sorted(Ledger(tmp_path).read()) == ["live_0000cccc", "theirs_0000dddd", "young_0000bbbb"]
