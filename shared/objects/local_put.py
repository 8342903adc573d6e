"""A same-host put: the bytes go straight into a local node's shared memory, not only into Redis.

Without it, `put` writes the chunks to Redis and the node's first job fetches them all back out into
/dev/shm: two copies through Redis and two page allocations before any job runs. When the client runs on
a host where a live node of its deployment has its space (its lock file in /dev/shm, its alive byte held:
`shm.py`), `put` also writes the bytes into a segment of that node's space, named and charged exactly as
the node's own fetch would be (an upload's `.part` segment under the node lock, the host budget charged
once, then renamed to the object's segment; the node's holdings published for placement). So the node's
first job finds the object resident: 0 bytes fetched from Redis by that node.

Two modes (FERRY_PUT_WRITE_BEHIND, `put(..., durable=True)`):
- durable: the segment is written by a thread WHILE the chunks go to Redis from the caller's memory (and
  the hash runs); `put` returns once the object is in Redis, and the segment is published after that;
- write-behind (the default): `put` returns once the segment is published and a marker
  `ferry:obj:<id>:pending` (naming the node and host) is in Redis; the node writes the chunks from the
  segment (`put_writer.py`). Readers elsewhere wait while the marker exists, as for results written behind
  their job (`handoff.py`).

A put that fails (or is interrupted) removes its segment and gives its bytes back to the host ledger; a
writer killed mid-copy leaves a `.part` whose object lock is free, which `ferry objects gc` and the node's
own sweeps remove. With no live node here, or no room in the host budget, a put is exactly what it was.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
import time
import traceback
import uuid
from contextlib import ExitStack
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import redis

from shared import keys
from shared.errors import ShmFull
from shared.locality import Holdings
from shared.objects import segments
from shared.objects.lifetime import shape_field
from shared.objects.ref import ObjectRef
from shared.objects.shm import NodeSpace, default_budget, deployment_id
from shared.objects.shm_files import ALIVE_BYTE, NODE_BYTE, Ledger, scan
from shared.settings import Settings
from shared.timeutil import unix_now

log = logging.getLogger("ferry.objects")

LOCAL_MIN_BYTES = 4 * 1024 * 1024  # smaller objects: the node's own fetch is one round trip, a copy here saves nothing
WRITE_PIECE_BYTES = 8 * 1024 * 1024  # per pwrite: tmpfs allocates each page as it fills it (no SIGBUS, ENOSPC instead)

MARK_PUT = """
-- A put written behind: mark the object as being written by a node, unless it is already stored.
-- KEYS: meta, marker, puts index, expiry index, the node's doorbell
-- ARGV: id, now, expiry, node, host, kind, dtype, shape, nbytes
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[1])
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end   -- an equal put is being written already
redis.call('HSET', KEYS[2], 'put', '1', 'node', ARGV[4], 'host', ARGV[5], 'expiry', ARGV[3], 'since', ARGV[2],
           'kind', ARGV[6], 'dtype', ARGV[7], 'shape', ARGV[8], 'nbytes', ARGV[9])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[5], 3600)
return 1
"""


def node_alive_here(shm_dir: Path, deployment: str, node_id: str) -> bool:
    """Whether the node's supervisor holds its alive byte on this host (the kernel drops it when it dies)."""
    try:
        fd = os.open(shm_dir / keys.node_lock(deployment, node_id), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:  # F_OFD_GETLK only asks: taking the byte, even briefly, could make a starting node refuse to start
        probe = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, ALIVE_BYTE, 1, 0))
        return struct.unpack("hhqqi4x", probe)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


class LocalPut:
    """Finds a live local node of this deployment for a put, and starts its copy (one per ObjectStore)."""

    NODES_FRESH_S = 5.0  # how long a found list of local nodes is trusted (each is still checked alive per put)

    def __init__(self, conn: redis.Redis, shm_dir: Path, budget_bytes: int | None, write_behind: bool) -> None:
        self.conn, self.shm_dir, self.write_behind = conn, shm_dir, write_behind
        self.budget_bytes = budget_bytes
        self._deployment: str | None = None
        self._nodes: list[str] = []
        self._nodes_at = 0.0
        self._spaces: dict[str, NodeSpace] = {}
        self._mark = conn.register_script(MARK_PUT)
        self._lock = threading.Lock()  # the async client puts from several threads
        self.publishing = threading.Lock()

    @classmethod
    def from_settings(cls, conn: redis.Redis, settings: Settings) -> LocalPut | None:
        if not settings.put_local_copy or not segments.SHM_DIR.is_dir():
            return None
        return cls(conn, segments.SHM_DIR, settings.shm_budget_bytes, settings.put_write_behind)

    def begin(self, nbytes: int) -> LocalCopy | None:
        """A copy of `nbytes` into a live local node's memory, started; None when there is none or no room."""
        if nbytes < LOCAL_MIN_BYTES:
            return None
        try:
            with self._lock:
                node = self._live_node()
                if node is None:
                    return None
                space = self._space(node)
            return LocalCopy.create(self, space, nbytes)
        except ShmFull as exc:
            log.info("put: no room in node memory for %d bytes; Redis only (%s)", nbytes, exc.message)
        except OSError as exc:
            log.info("put: could not copy into a local node's memory (%s); Redis only", exc)
        return None

    def mark(self, ref: ObjectRef, node: str, ttl_s: int) -> int:
        """Hand the write to `node`: 1 marked, 0 already stored (expiry extended), 2 an equal put is being written."""
        now = unix_now()
        segment = self.shm_dir / keys.segment(self._deployment_id(), node, ref.id)
        segments.mark_unwritten(segment)  # before the marker: from then on only Redis has the truth (segments.py)
        marked = int(self._mark(
            keys=[keys.object_meta(ref.id), keys.object_pending(ref.id), keys.PUTS_PENDING, keys.OBJECT_EXPIRY,
                  keys.node_puts(node)],
            args=[ref.id, now, now + ttl_s, node, socket.gethostname(), ref.kind.value, ref.dtype,
                  shape_field(ref.shape), ref.nbytes],
        ))
        if marked != 1:
            segments.mark_written(segment)  # stored already, or an equal put's marker covers it
        return marked

    def _deployment_id(self) -> str:
        if self._deployment is None:
            self._deployment = deployment_id(self.conn)
        return self._deployment

    def _live_node(self) -> str | None:
        deployment = self._deployment_id()
        now = time.monotonic()
        if not self._nodes or now - self._nodes_at > self.NODES_FRESH_S:
            self._nodes = sorted({f.node for f in scan(self.shm_dir, deployment) if f.object_id is None})
            self._nodes_at = now
        alive = [node for node in self._nodes if node_alive_here(self.shm_dir, deployment, node)]
        if not alive:
            self._nodes = []  # every one found is gone: look again next time
            return None
        if len(alive) == 1:
            return alive[0]
        held = Ledger(self.shm_dir).read()  # several nodes here: the one holding the fewest bytes, so objects
        return min(alive, key=lambda n: int(held.get(f"{n}_{deployment}", {}).get("bytes", 0)))  # (and jobs) spread

    def _space(self, node: str) -> NodeSpace:
        space = self._spaces.get(node)
        if space is not None and not _same_file(space):  # the node restarted: its lock file is a new one
            space.close()
            space = None
        if space is None:
            budget = self.budget_bytes or default_budget(self.shm_dir)
            space = self._spaces[node] = NodeSpace(self.shm_dir, node, self._deployment_id(), budget)
        return space

    def close(self) -> None:
        for space in self._spaces.values():
            space.close()
        self._spaces.clear()


class LocalCopy:
    """One put's copy into a node's memory: an upload `.part` segment filled by a thread, then published."""

    def __init__(self, owner: LocalPut, space: NodeSpace, upload: str, shm: shared_memory.SharedMemory,
                 held: ExitStack) -> None:
        self.owner, self.space, self.upload, self.shm, self._held = owner, space, upload, shm, held
        self.node = space.node_id
        self._error: BaseException | None = None
        self._renamed_to: str | None = None  # the object's segment, when this put created it
        self._stopped = False
        self._thread: threading.Thread | None = None

    @classmethod
    def create(cls, owner: LocalPut, space: NodeSpace, nbytes: int) -> LocalCopy:
        """Charge the host budget and create the `.part` segment (under its own lock: gc sees a live writer)."""
        upload = uuid.uuid4().hex  # the object id is not known yet (hashing runs meanwhile); an id-shaped name
        held = ExitStack()
        held.enter_context(space.object_lock(upload))
        try:
            _name, shm = space.create_partial(upload, segments.HEADER_BYTES + nbytes, f"a put of {nbytes} bytes")
        except BaseException:
            held.close()
            raise
        return cls(owner, space, upload, shm, held)

    def start(self, array: np.ndarray) -> None:
        """Copy the array's bytes in behind the header page, on a thread (pwrite releases the GIL)."""
        self._thread = threading.Thread(target=self._copy, args=(array,), name="ferry-put-local", daemon=True)
        self._thread.start()

    def _copy(self, array: np.ndarray) -> None:
        descriptor = segments.fd(self.shm)
        try:
            with array.data.cast("B") as data:
                offset = 0
                while offset < len(data) and not self._stopped:
                    with data[offset : offset + WRITE_PIECE_BYTES] as piece:
                        offset += os.pwrite(descriptor, piece, segments.HEADER_BYTES + offset)
        except BaseException as exc:  # noqa: BLE001 - handed to the put by `finish`
            self._error = exc

    def finish(self, ref: ObjectRef) -> bool:
        """Publish the segment as the object's (or drop it if the node has it already); True if the node holds it.

        Never raises for a lost copy (the node restarted and swept it, /dev/shm filled up): the put then
        simply did not fill the cache.
        """
        try:
            self._join()
            if self._error is not None:
                raise self._error
            os.pwrite(segments.fd(self.shm), segments.header(ref), 0)
            with self.owner.publishing, self.space.object_lock(ref.id):  # (OFD locks do not exclude our own threads)
                final = self.space.shm_dir / self.space.segment(ref.id)
                if final.exists():
                    self.space.remove_partial(self.upload)  # an equal put or a fetch was first
                else:
                    os.rename(self.space.shm_dir / self.space.partial(self.upload), final)
                    self._renamed_to = final.name
        except BaseException as exc:
            self._drop()  # whatever went wrong: no segment left, no bytes charged
            if not isinstance(exc, OSError):
                raise
            log.info("object %s: not kept in node %s's memory (%s)", ref.id, self.node, exc)
            return False
        finally:
            self._close()
        evicted, self.space.evicted_ids = self.space.evicted_ids, []
        Holdings(self.owner.conn, self.node).publish([ref.id], evicted)
        log.debug("object %s: copied into node %s's memory by the put", ref.id, self.node)
        return True

    def withdraw(self, ref: ObjectRef) -> None:
        """The put failed after the segment was published (its marker was refused): unlink it, give its bytes back."""
        if self._renamed_to is None:
            return
        with self.owner.publishing, self.space.object_lock(ref.id), self.space.locked(NODE_BYTE):
            self.space._remove_locked(self._renamed_to)
        self.space._unlinked()  # processes that mapped it meanwhile drop their mapping
        Holdings(self.owner.conn, self.node).publish([], [ref.id])

    def abort(self) -> None:
        """The put failed: stop copying, unlink the segment, give its bytes back."""
        self._stopped = True
        self._join()
        self._drop()
        self._close()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _drop(self) -> None:
        try:
            self.space.remove_partial(self.upload)
        except OSError as exc:
            log.warning("put: could not remove its shared-memory segment %s (%s)", self.upload, exc)

    def _close(self) -> None:
        if self._error is not None:
            traceback.clear_frames(self._error.__traceback__)
        try:
            self.shm.close()
        finally:
            self._held.close()


def _same_file(space: NodeSpace) -> bool:
    """Whether the space's open lock file is still the one at its path (a restarted node makes a new one)."""
    try:
        return os.stat(space.lock_path).st_ino == os.fstat(space._fd).st_ino
    except FileNotFoundError:
        return False
