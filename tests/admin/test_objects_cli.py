"""`ferry objects put/ls/get/rm/gc`, and objects passed to tasks with `--arg NAME=@obj:ID`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from shared import keys
from shared.client import Client
from shared.errors import EXIT_NOT_FOUND, EXIT_USAGE
from shared.objects.cache import HEADER_BYTES
from shared.objects.shm import NodeSpace, deployment_id
from tests.admin.helpers import one_line
from tests.support import shm_files

SHM = Path("/dev/shm")


def test_put_list_get_delete_round_trip_an_array_and_a_file(cli, client: Client, tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.save(tmp_path / "a.npy", array)
    (tmp_path / "notes.txt").write_bytes(b"raw bytes\x00\x01")

    put = cli("objects", "put", str(tmp_path / "a.npy"), "--ttl-s", "600")
    assert put.exit_code == 0
    array_id = put.stdout.strip()
    assert "stored a <i4 array of shape 3x4" in put.stderr
    blob = json.loads(cli("objects", "put", str(tmp_path / "notes.txt"), "--json").stdout)
    assert (blob["kind"], blob["nbytes"]) == ("bytes", 11)

    listed = {o["id"]: o for o in json.loads(cli("objects", "list", "--json").stdout)["objects"]}
    assert set(listed) == {array_id, blob["id"]}
    assert (listed[array_id]["kind"], listed[array_id]["dtype"], listed[array_id]["shape"], listed[array_id]["nbytes"]) == ("array", "<i4", [3, 4], 48)
    assert 590 <= listed[array_id]["ttl_s"] <= 600
    human = cli("objects", "list").stdout
    assert array_id in human and "3x4" in human and "48 B" in human

    got = cli("objects", "get", array_id, "-o", str(tmp_path / "back"))  # no ".npy" appended to the name
    assert got.exit_code == 0
    assert np.array_equal(np.load(tmp_path / "back"), array)
    cli("objects", "get", blob["id"], "-o", str(tmp_path / "notes.back"))
    assert (tmp_path / "notes.back").read_bytes() == b"raw bytes\x00\x01"

    removed = cli("objects", "delete", array_id, blob["id"])
    assert (removed.exit_code, removed.stdout.split()) == (0, ["deleted", array_id, "deleted", blob["id"]])
    assert client.objects.list() == []
    again = cli("objects", "rm", array_id)  # the older name still works
    assert (again.exit_code, one_line(again.stderr)) == (EXIT_NOT_FOUND, f"error: no such object: {array_id}")
    assert cli("objects", "get", array_id, "-o", str(tmp_path / "x")).exit_code == EXIT_NOT_FOUND
    assert cli("objects", "list").stdout.strip() == "no objects stored"


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


def test_a_task_takes_an_object_by_id_and_list_node_shows_the_cache(cli, client: Client, start_node, tmp_path: Path) -> None:
    node = start_node(processes=1)
    data = np.linspace(0.0, 1.0, 100_000)
    np.save(tmp_path / "d.npy", data)
    object_id = cli("objects", "put", str(tmp_path / "d.npy")).stdout.strip()

    done = cli("submit", "array.stats", "--arg", f"data=@obj:{object_id}", "--arg", "start=10", "--arg", "stop=20", "--wait-s", "30")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["sum"] == pytest.approx(float(data[10:20].sum()))
    missing = cli("submit", "array.stats", "--arg", "data=@obj:0000000000000000000000000000dead")
    assert missing.exit_code == EXIT_NOT_FOUND and "object 0000000000000000000000000000dead does not exist" in missing.stderr

    shown = json.loads(cli("objects", "list", "--nodes", "--json").stdout)
    [stats] = [n for n in shown["nodes"] if n["id"] == node.node_id]
    assert (stats["bytes_from_redis"], stats["misses"], stats["resident_bytes"]) == (data.nbytes, 1, HEADER_BYTES + data.nbytes)
    name = keys.segment(deployment_id(client.conn), node.node_id, object_id)
    assert {"name": name, "node": node.node_id, "object_id": object_id, "bytes": HEADER_BYTES + data.nbytes,
            "partial": False} in shown["segments"]
    human = cli("objects", "list", "--nodes").stdout
    assert name in human and "Node caches" in human

    scaled = cli("submit", "array.scale", "--arg", f"data=@obj:{object_id}", "--arg", "factor=2", "--wait-s", "30")
    assert scaled.exit_code == 0
    assert scaled.stdout.startswith("object ") and "shape 100000" in scaled.stdout
    assert "ferry objects get" in scaled.stderr


def test_gc_removes_files_of_dead_nodes_and_dead_writers_of_its_own_deployment_only(
        cli, client: Client, conn: redis.Redis, start_node) -> None:
    deployment = deployment_id(conn)
    live = start_node(processes=1)
    dead = start_node(processes=1)
    refs = [client.put(np.full(100_000, float(i))) for i in range(2)]
    job = client.submit("array.stats", {"data": refs[0]})
    assert client.result(job, wait_s=30).status == "finished"
    ran_on = client.status(job).worker.split(".")[0]
    assert shm_files(ran_on)
    kill = live if ran_on == dead.node_id else dead
    other = dead if kill is live else live
    kill.kill()  # SIGKILL of the whole group: its files stay
    stale = NodeSpace(SHM, kill.node_id, deployment, 1 << 30)  # hand-made leftovers of the dead node
    name, shm = stale.create_partial(refs[1].id, 8192, "test")
    shm.close()
    stale.close()
    foreign = SHM / keys.segment("0badc0de", kill.node_id, refs[1].id)  # another deployment, same node id
    foreign.write_bytes(b"\0" * 4096)
    try:
        collected = cli("objects", "gc")
        assert collected.exit_code == 0, collected.stdout
        lines = collected.stdout.splitlines()
        assert f"removed {name} (8.0 KiB; node {kill.node_id} is not running)" in lines
        assert lines[-1].startswith("freed ")
        assert shm_files(kill.node_id, locks=True) == [foreign.name]  # the other deployment's file is untouched
        assert (SHM / keys.node_lock(deployment, other.node_id)).exists()  # a live node keeps everything
    finally:
        foreign.unlink(missing_ok=True)
    again = json.loads(cli("objects", "gc", "--json").stdout)
    assert not any(kill.node_id in r["name"] or other.node_id in r["name"] for r in again["removed"])
