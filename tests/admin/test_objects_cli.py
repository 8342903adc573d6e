"""`ferry objects put/ls/get/rm/gc`, and objects passed to tasks with `--arg NAME=@obj:ID`."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.errors import EXIT_NOT_FOUND, EXIT_USAGE
from shared.timeutil import unix_now
from tests.admin.helpers import one_line

SHM = Path("/dev/shm")


def test_put_ls_get_rm_round_trip_an_array_and_a_file(cli, client: Client, tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.save(tmp_path / "a.npy", array)
    (tmp_path / "notes.txt").write_bytes(b"raw bytes\x00\x01")

    put = cli("objects", "put", str(tmp_path / "a.npy"), "--ttl", "600")
    assert put.exit_code == 0
    array_id = put.stdout.strip()
    assert "stored a <i4 array of shape 3x4" in put.stderr
    blob = json.loads(cli("objects", "put", str(tmp_path / "notes.txt"), "--json").stdout)
    assert (blob["kind"], blob["nbytes"]) == ("bytes", 11)

    listed = {o["id"]: o for o in json.loads(cli("objects", "ls", "--json").stdout)["objects"]}
    assert set(listed) == {array_id, blob["id"]}
    assert (listed[array_id]["kind"], listed[array_id]["dtype"], listed[array_id]["shape"], listed[array_id]["nbytes"]) == ("array", "<i4", [3, 4], 48)
    assert 590 <= listed[array_id]["ttl_s"] <= 600
    human = cli("objects", "ls").stdout
    assert array_id in human and "3x4" in human and "48 B" in human

    got = cli("objects", "get", array_id, "-o", str(tmp_path / "back"))  # no ".npy" appended to the name
    assert got.exit_code == 0
    assert np.array_equal(np.load(tmp_path / "back"), array)
    cli("objects", "get", blob["id"], "-o", str(tmp_path / "notes.back"))
    assert (tmp_path / "notes.back").read_bytes() == b"raw bytes\x00\x01"

    removed = cli("objects", "rm", array_id, blob["id"])
    assert (removed.exit_code, removed.stdout.split()) == (0, ["removed", array_id, "removed", blob["id"]])
    assert client.objects.list() == []
    again = cli("objects", "rm", array_id)
    assert (again.exit_code, one_line(again.stderr)) == (EXIT_NOT_FOUND, f"error: no such object: {array_id}")
    assert cli("objects", "get", array_id, "-o", str(tmp_path / "x")).exit_code == EXIT_NOT_FOUND
    assert cli("objects", "ls").stdout.strip() == "no objects stored"


def test_put_refuses_missing_files_files_that_are_not_npy_and_pickled_arrays(ferry, tmp_path: Path) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = ferry("objects", "put", str(tmp_path / "objects.npy"))
    assert pickled.returncode == EXIT_USAGE
    assert one_line(pickled.stderr).startswith(f"error: {tmp_path / 'objects.npy'}: not a numeric .npy array")
    assert "Traceback" not in pickled.stderr
    (tmp_path / "text.npy").write_text("hello")
    not_npy = ferry("objects", "put", str(tmp_path / "text.npy"))
    assert (not_npy.returncode, one_line(not_npy.stderr)) == (
        EXIT_USAGE, f"error: {tmp_path / 'text.npy'}: not a .npy file (it lacks the .npy header); write arrays "
        "with numpy.save, or give the file another extension to store its raw bytes")
    missing = ferry("objects", "put", str(tmp_path / "nope.npy"))
    assert (missing.returncode, one_line(missing.stderr)) == (EXIT_USAGE, f"error: {tmp_path / 'nope.npy'}: no such file")


def test_a_task_takes_an_object_by_id_and_ls_node_shows_the_cache(cli, start_node, tmp_path: Path) -> None:
    node = start_node(processes=1)
    data = np.linspace(0.0, 1.0, 100_000)
    np.save(tmp_path / "d.npy", data)
    object_id = cli("objects", "put", str(tmp_path / "d.npy")).stdout.strip()

    done = cli("submit", "array.stats", "--arg", f"data=@obj:{object_id}", "--arg", "start=10", "--arg", "stop=20", "--wait-s", "30")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["sum"] == pytest.approx(float(data[10:20].sum()))
    missing = cli("submit", "array.stats", "--arg", "data=@obj:0000000000000000000000000000dead")
    assert missing.exit_code == EXIT_NOT_FOUND and "object 0000000000000000000000000000dead does not exist" in missing.stderr

    shown = json.loads(cli("objects", "ls", "--node", "--json").stdout)
    [stats] = [n for n in shown["nodes"] if n["id"] == node.node_id]
    assert (stats["bytes_from_redis"], stats["misses"], stats["resident_bytes"]) == (data.nbytes, 1, data.nbytes)
    assert {"name": f"ferry_{node.node_id}_{object_id}", "node": node.node_id, "object_id": object_id,
            "bytes": data.nbytes, "partial_pid": None} in shown["segments"]
    human = cli("objects", "ls", "--node").stdout
    assert f"ferry_{node.node_id}_{object_id}" in human and "Node caches" in human

    scaled = cli("submit", "array.scale", "--arg", f"data=@obj:{object_id}", "--arg", "factor=2", "--wait-s", "30")
    assert scaled.exit_code == 0
    assert scaled.stdout.startswith("object ") and "shape 100000" in scaled.stdout
    assert "ferry objects get" in scaled.stderr


@pytest.fixture()
def stale_files() -> Iterator[list[Path]]:
    """Files a test creates in /dev/shm; removed afterwards whatever happened."""
    created: list[Path] = []
    yield created
    for path in created:
        path.unlink(missing_ok=True)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_gc_removes_segments_of_dead_nodes_and_of_dead_writers_only(cli, conn: redis.Redis, stale_files: list[Path]) -> None:
    dead_node, live_node = f"gcdead{uuid.uuid4().hex[:8]}", f"gclive{uuid.uuid4().hex[:8]}"
    now = unix_now()  # a node that beats (registered by hand: no process needed to be "alive" in Redis)
    conn.hset(keys.node(live_node), mapping={"host": "h", "pid": os.getpid(), "processes": 1, "queues": "[]", "started_at": now,
                                             "last_heartbeat": now, "state": "running", "shm_budget_bytes": 1 << 30})
    conn.zadd(keys.NODES, {live_node: now})
    conn.zadd(keys.OBJECTS, {"0" * 32: now})  # an index entry whose object has expired

    def make(name: str, size: int) -> Path:
        path = SHM / name
        stale_files.append(path)
        path.write_bytes(b"\0" * size)
        return path

    orphan = make(keys.segment(dead_node, uuid.uuid4().hex), 1 << 20)
    orphan_lock = make(f"{keys.node_segment_prefix(dead_node)}node{keys.LOCK_SUFFIX}", 0)
    dead_pid = _dead_pid()
    abandoned = make(keys.partial_segment(live_node, uuid.uuid4().hex, dead_pid), 4096)
    in_progress = make(keys.partial_segment(live_node, uuid.uuid4().hex, os.getpid()), 4096)
    resident = make(keys.segment(live_node, uuid.uuid4().hex), 8192)

    held_lock = make(f"{keys.node_segment_prefix(dead_node)}{uuid.uuid4().hex}{keys.LOCK_SUFFIX}", 0)
    holder = os.open(held_lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # someone still holds it: gc must leave it

    try:
        collected = cli("objects", "gc")
    finally:
        os.close(holder)
    assert collected.exit_code == 0
    lines = collected.stdout.splitlines()  # other Ferry runs on this machine may add lines of their own
    assert f"removed {orphan.name} (1.0 MiB; node {dead_node} is not alive)" in lines
    assert f"removed {abandoned.name} (4.0 KiB; its writer, pid {dead_pid}, died mid-fetch)" in lines
    assert "forgot 1 expired object in the index" in lines
    assert lines[-1].startswith("freed ")
    assert not orphan.exists() and not orphan_lock.exists() and not abandoned.exists()
    assert in_progress.exists() and resident.exists() and held_lock.exists()

    again = json.loads(cli("objects", "gc", "--json").stdout)
    assert again["expired_index_entries"] == []
    assert not any(live_node in r["name"] or dead_node in r["name"] for r in again["removed"])
