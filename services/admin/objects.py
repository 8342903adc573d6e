"""`ferry objects`: put, list, fetch and delete stored objects; clean up this machine's shared memory."""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from shared.processes import pid_alive
from services.admin.common import command, console, esc, fail, human_bytes, note, open_client, print_json, table
from services.admin.queues import CACHE_COUNTERS, cache_table
from shared.errors import EXIT_NOT_FOUND
from shared import keys
from shared.errors import InvalidRequest
from shared.objects import segments
from shared.objects.cache import scan, segment_node
from shared.objects.ref import ObjectKind, ObjectRef

app = typer.Typer(help="Stored objects: large arrays and blobs that jobs take by reference.", no_args_is_help=True)


@app.command("put")
@command
def put(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A .npy file (stored as an array) or any other file (stored as bytes).")],
    ttl: Annotated[Optional[int], typer.Option("--ttl", metavar="SECONDS", min=1, help="Keep it this long (default: FERRY_OBJECT_TTL_S).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the object reference as JSON.")] = False,
) -> None:
    """Store a file once in Redis and print its object id (pass it to a task as `--arg data=@obj:ID`)."""
    data = load_file(path)
    with open_client() as client:
        started = time.monotonic()
        ref = client.put(data, ttl_s=ttl)
        elapsed = time.monotonic() - started
    if json_output:
        print_json(ref)
        return
    print(ref.id)
    note(f"stored {describe(ref)} in {elapsed:.2f}s; use it as --arg NAME=@obj:{ref.id}")


NPY_MAGIC = b"\x93NUMPY"


def load_file(path: Path) -> np.ndarray | bytes:
    """A .npy file as an array (never unpickling), anything else as its bytes."""
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        with path.open("rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise InvalidRequest(
                    f"{path}: not a .npy file (it lacks the .npy header); write arrays with numpy.save, "
                    "or give the file another extension to store its raw bytes"
                )
        try:
            return np.load(path, allow_pickle=False, mmap_mode="r")  # mapped: a large file is read once, by the hash
        except ValueError as exc:
            raise InvalidRequest(f"{path}: not a numeric .npy array ({exc})") from exc
    return path.read_bytes()


@app.command("ls")
@command
def ls(
    node: Annotated[bool, typer.Option("--node", help="Also show each node's cache counters and the segments in this machine's /dev/shm.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List stored objects: id, kind, dtype, shape, size, remaining TTL."""
    with open_client() as client:
        objects = client.objects.list()
        nodes = client.admin.nodes() if node else []
    resident = list(scan(segments.SHM_DIR)) if node else []
    if json_output:
        document: dict[str, object] = {"objects": [dict(r.model_dump(mode="json"), created_at=c, ttl_s=t) for r, c, t in objects]}
        if node:
            document["nodes"] = [{"id": n.id, "alive": n.alive, "shm_budget_bytes": n.shm_budget_bytes,
                                  **{k: n.stats.get(k, 0) for k in CACHE_COUNTERS}} for n in nodes]
            document["segments"] = [{"name": s.name, "node": segment_node(s.name), "object_id": s.object_id, "bytes": s.size,
                                     "partial_pid": s.partial_pid} for s in resident]
        print_json(document)
        return
    if objects:
        t = table("object", "kind", "dtype", "shape", "size", "ttl")
        for ref, _created, ttl_s in objects:
            t.add_row(ref.id, ref.kind.value, ref.dtype, shape_text(ref), human_bytes(ref.nbytes), f"{ttl_s}s" if ttl_s >= 0 else "-")
        console.print(t)
    else:
        console.print("no objects stored", highlight=False)
    if not node:
        return
    console.print()
    if nodes:
        console.print(cache_table(nodes))
    else:
        console.print("no worker node has registered", highlight=False)
    console.print()
    if resident:
        t = table("segment", "size", "state", title=f"Segments in {segments.SHM_DIR} on this machine")
        for s in resident:
            state = "complete" if s.partial_pid is None else f"being written by pid {s.partial_pid}"
            t.add_row(esc(s.name), human_bytes(s.size), state)
        console.print(t)
    else:
        console.print(f"no Ferry segments in {segments.SHM_DIR} on this machine", highlight=False)


@app.command("rm")
@command
def rm(object_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Objects to delete.")]) -> None:
    """Delete objects from Redis (running nodes keep their shared-memory copies until they evict them or stop)."""
    with open_client() as client:
        missing = [object_id for object_id in object_ids if not client.delete(object_id)]
    for object_id in object_ids:
        if object_id not in missing:
            console.print(f"removed {object_id}", highlight=False)
    if missing:
        fail(f"no such object: {', '.join(missing)}", EXIT_NOT_FOUND)


@app.command("get")
@command
def get(
    object_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write it (.npy for arrays; raw for bytes).")],
) -> None:
    """Fetch an object from Redis into a file (arrays as .npy, bytes as they were put)."""
    with open_client() as client:
        ref = client.objects.ref(object_id)
        data = client.get(ref)
    with open(output, "wb") as f:  # an open file: np.save would otherwise append ".npy" to the name
        if ref.kind is ObjectKind.ARRAY:
            np.save(f, data, allow_pickle=False)
        else:
            f.write(data)  # type: ignore[arg-type]
    console.print(f"wrote {describe(ref)} to {esc(output)}", highlight=False)


@dataclass
class Removed:
    name: str
    bytes: int
    reason: str


@app.command("gc")
@command
def gc(json_output: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False) -> None:
    """Forget expired objects in Redis and free this machine's shared memory held by dead nodes or dead writers.

    Removes /dev/shm segments `ferry_<node>_*` of nodes that are not alive in Redis (stopped, silent, or
    unknown), and `.part<pid>` segments whose writing process has died. A segment that a live process
    still maps is kept: it belongs to a node this Redis does not know (e.g. another Ferry on this machine).
    """
    with open_client() as client:
        forgotten = client.objects.gc()
        alive = {n.id for n in client.admin.nodes() if n.alive}
    removed = sweep_shared_memory(segments.SHM_DIR, alive)
    freed = sum(r.bytes for r in removed)
    if json_output:
        print_json({"expired_index_entries": forgotten, "removed": [r.__dict__ for r in removed], "bytes_freed": freed})
        return
    for r in removed:
        console.print(f"removed {esc(r.name)} ({human_bytes(r.bytes)}; {esc(r.reason)})", highlight=False)
    if forgotten:
        console.print(f"forgot {len(forgotten)} expired {'object' if len(forgotten) == 1 else 'objects'} in the index", highlight=False)
    if not removed and not forgotten:
        console.print("nothing to collect: no expired objects, no stale segments in /dev/shm", highlight=False)
    else:
        console.print(f"freed {human_bytes(freed)} of shared memory ({freed} bytes)", highlight=False)


def sweep_shared_memory(shm_dir: Path, alive_nodes: set[str]) -> list[Removed]:
    """Unlink segments of nodes not in `alive_nodes` and partial segments of dead writers; returns what went."""
    mapped = mapped_segments(shm_dir)  # taken first: a segment created after it belongs to a node that is starting
    removed: list[Removed] = []
    dead_nodes: set[str] = set()
    for s in scan(shm_dir):
        node = segment_node(s.name)
        if node not in alive_nodes:
            if s.name in mapped:
                continue
            dead_nodes.add(node)
            if segments.unlink(s.name, shm_dir):
                removed.append(Removed(s.name, s.size, f"node {node} is not alive"))
        elif s.partial_pid is not None and not pid_alive(s.partial_pid):
            if segments.unlink(s.name, shm_dir):
                removed.append(Removed(s.name, s.size, f"its writer, pid {s.partial_pid}, died mid-fetch"))
    for node in dead_nodes:
        if not any(name.startswith(keys.node_segment_prefix(node)) for name in mapped):
            _remove_free_locks(shm_dir, node)
    return removed


def _remove_free_locks(shm_dir: Path, node: str) -> None:
    """Unlink a dead node's lock files (zero bytes), each only while we hold it: never one a live process holds."""
    for path in shm_dir.glob(f"{keys.node_segment_prefix(node)}*{keys.LOCK_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)


def mapped_segments(shm_dir: Path) -> set[str]:
    """Names of Ferry segments that some process on this machine maps (from /proc/*/maps; others' are unreadable)."""
    prefix = f"{shm_dir}/ferry_"
    names: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    at = line.find(prefix)
                    if at >= 0:
                        names.add(line[at + len(str(shm_dir)) + 1 :].split(" (deleted)")[0].strip())
        except OSError:  # gone meanwhile, or another user's
            continue
    return names


def describe(ref: ObjectRef) -> str:
    if ref.kind is ObjectKind.BYTES:
        return f"{human_bytes(ref.nbytes)} of bytes ({ref.id})"
    return f"a {ref.dtype} array of shape {shape_text(ref)}, {human_bytes(ref.nbytes)} ({ref.id})"


def shape_text(ref: ObjectRef) -> str:
    return "x".join(str(n) for n in ref.shape) if ref.shape else "-"
