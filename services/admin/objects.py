"""`ferry objects`: put, list, get and delete stored objects; collect what is no longer needed.

The shared-memory housekeeping itself lives in `shared.objects.shm`; this module only presents it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from services.admin.common import command, console, esc, fail, human_bytes, note, open_client, print_json, table
from services.admin.queues import CACHE_COUNTERS, cache_table
from shared.errors import EXIT_NOT_FOUND, InvalidRequest
from shared.objects import segments, shm, shm_files
from shared.objects.ref import ObjectKind, ObjectRef

app = typer.Typer(help="Stored objects: large arrays and blobs that jobs take by reference.", no_args_is_help=True)


@app.command("put")
@command
def put(
    path: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A .npy file (stored as an array) or any other file (stored as bytes)."),
    ],
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl-s",
            metavar="SECONDS",
            min=1,
            help="Keep it at least this long, and while jobs that need it are not done (default: FERRY_OBJECT_TTL_S).",
        ),
    ] = None,
    durable: Annotated[
        bool,
        typer.Option(
            "--durable",
            help="Return only once the object is in Redis. On a host where a node runs, the file is also copied "
            "into that node's memory and by default (FERRY_PUT_WRITE_BEHIND) the put returns once it is there, "
            "the node writing it to Redis just after.",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the object reference as JSON.")] = False,
) -> None:
    """Store a file once in Redis and print its object id (pass it to a task as `--arg data=@obj:ID`)."""
    data = load_file(path)
    with open_client() as client:
        started = time.monotonic()
        ref = client.put(data, ttl_s=ttl, durable=True if durable else None)
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


@app.command("list")
@command
def list_objects(
    nodes_too: Annotated[
        bool,
        typer.Option(
            "--nodes",
            help="Also show each node's cache counters and this deployment's segments in this machine's /dev/shm.",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List stored objects: id, kind, dtype, shape, size, seconds to expiry (expired ones stay while jobs need them)."""
    with open_client() as client:
        objects = client.objects.list()
        nodes = client.admin.nodes() if nodes_too else []
        deployment = shm.deployment_id(client.conn) if nodes_too else ""
    resident = [s for s in shm_files.scan(segments.SHM_DIR, deployment) if s.object_id] if nodes_too else []
    if json_output:
        document: dict[str, object] = {
            "objects": [dict(r.model_dump(mode="json"), created_at=c, ttl_s=t) for r, c, t in objects]
        }
        if nodes_too:
            document["nodes"] = [
                {
                    "id": n.id,
                    "alive": n.alive,
                    "shm_budget_bytes": n.shm_budget_bytes,
                    **{k: n.stats.get(k, 0) for k in CACHE_COUNTERS},
                }
                for n in nodes
            ]
            document["segments"] = [
                {"name": s.name, "node": s.node, "object_id": s.object_id, "bytes": s.size, "partial": s.partial}
                for s in resident
            ]
        print_json(document)
        return
    if objects:
        t = table("object", "kind", "dtype", "shape", "size", "ttl")
        for ref, _created, ttl_s in objects:
            t.add_row(
                ref.id,
                ref.kind.value,
                ref.dtype,
                shape_text(ref),
                human_bytes(ref.nbytes),
                f"{ttl_s}s" if ttl_s >= 0 else "expired, kept for its jobs",
            )
        console.print(t)
    else:
        console.print("no objects stored", highlight=False)
    if not nodes_too:
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
            t.add_row(esc(s.name), human_bytes(s.size), "being written" if s.partial else "complete")
        console.print(t)
    else:
        console.print(f"no Ferry segments in {segments.SHM_DIR} on this machine", highlight=False)


app.command("ls", hidden=True)(list_objects)  # the older name


@app.command("delete")
@command
def delete(
    object_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Objects to delete.")],
    force: Annotated[
        bool, typer.Option("--force", help="Delete even if jobs not yet done need it; those jobs fail.")
    ] = False,
) -> None:
    """Delete objects from Redis; refused while jobs not yet done need them, unless --force.

    Running nodes keep their shared-memory copies until they evict them or stop.
    """
    with open_client() as client:
        missing = []
        for object_id in object_ids:
            outcome = client.objects.lifetime.delete(object_id, force=force)
            if not outcome.existed:
                missing.append(object_id)
                continue
            failing = f"; {len(outcome.failed_jobs)} job(s) that need it will fail" if outcome.failed_jobs else ""
            console.print(f"deleted {object_id}{failing}", highlight=False)
    if missing:
        fail(f"no such object: {', '.join(missing)}", EXIT_NOT_FOUND)


app.command("rm", hidden=True)(delete)  # the older name


@app.command("get")
@command
def get(
    object_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write it (.npy for arrays; raw for bytes).")
    ],
) -> None:
    """Fetch an object from Redis into a file (arrays as .npy, bytes as they were put)."""
    with open_client() as client:
        ref = client.objects.ref(object_id)
        data = client.get(ref)
    with open(output, "wb") as f:  # an open file: np.save would otherwise append ".npy" to the name
        if ref.kind is ObjectKind.ARRAY:
            np.save(f, data, allow_pickle=False)
        else:
            f.write(data if isinstance(data, bytes) else data.tobytes())  # a bytes object reads back as bytes
    console.print(f"wrote {describe(ref)} to {esc(output)}", highlight=False)


@app.command("gc")
@command
def gc(json_output: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False) -> None:
    """Delete expired objects no job needs, and free this machine's shared memory held by dead nodes or dead writers.

    This deployment's files (named with its id) of nodes that are not running, and the files and ledger
    entries of nodes of ANY deployment that are provably dead on this machine (nobody holds their lock; a
    stack killed with its Redis leaves those): a live node of another Ferry on this machine, with another
    Redis, is never touched. Every running node also deletes expired objects as it reaps, and sweeps dead
    nodes' files when it starts.
    """
    with open_client() as client:
        expired = client.objects.gc()
        removed = shm.gc(client.conn, segments.SHM_DIR)
    freed = sum(r.bytes for r in removed)
    if json_output:
        print_json({"expired_objects": expired, "removed": [r.__dict__ for r in removed], "bytes_freed": freed})
        return
    for r in removed:
        console.print(f"removed {esc(r.name)} ({human_bytes(r.bytes)}; {esc(r.reason)})", highlight=False)
    if expired:
        console.print(
            f"deleted {len(expired)} expired {'object' if len(expired) == 1 else 'objects'} no job needs",
            highlight=False,
        )
    if not removed and not expired:
        console.print("nothing to collect: no expired objects, no stale segments in /dev/shm", highlight=False)
    else:
        console.print(f"freed {human_bytes(freed)} of shared memory ({freed} bytes)", highlight=False)


def describe(ref: ObjectRef) -> str:
    if ref.kind is ObjectKind.BYTES:
        return f"{human_bytes(ref.nbytes)} of bytes ({ref.id})"
    return f"a {ref.dtype} array of shape {shape_text(ref)}, {human_bytes(ref.nbytes)} ({ref.id})"


def shape_text(ref: ObjectRef) -> str:
    return "x".join(str(n) for n in ref.shape) if ref.shape else "-"
