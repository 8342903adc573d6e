"""A node's shared-memory object cache, used by every worker process on the node.

Ownership (see ARCHITECTURE.md):
- The worker process that first needs an object creates its segment: it reserves the pages under the
  node lock (evicting least-recently-used objects to stay in budget), fills a `.part<pid>` segment
  from Redis under the object's lock, and renames it to its final name. A final name therefore always
  holds a complete object; a crash mid-fetch leaves only a `.part` segment that nobody attaches.
- Other worker processes attach to the final segment zero-copy and never unlink it.
- Eviction (any worker process, under the node lock) and the node supervisor (at start and stop, and
  `ferry objects gc`) unlink. Linux keeps an unlinked segment valid for processes that still map it.
Locks are `flock`s, so the kernel releases them when a holder dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from shared.processes import pid_alive
from shared import keys
from shared.errors import ShmFull
from shared.objects import segments
from shared.objects.ref import ObjectRef, view
from shared.objects.store import ObjectStore

log = logging.getLogger("ferry.cache")

DEFAULT_BUDGET_FRACTION = 0.8  # of /dev/shm's free space at node start


def default_budget(shm_dir: Path) -> int:
    return int(segments.free_bytes(shm_dir) * DEFAULT_BUDGET_FRACTION)


@dataclass
class _Mapping:
    shm: shared_memory.SharedMemory
    inode: int


@dataclass(frozen=True)
class SegmentFile:
    name: str
    object_id: str
    size: int
    mtime: float
    partial_pid: int | None  # set for `.part<pid>` segments still being written


class NodeCache:
    """Objects resident in this node's /dev/shm, fetched from Redis at most once per node."""

    def __init__(self, node_id: str, shm_dir: Path, budget_bytes: int, store: ObjectStore) -> None:
        self.node_id = node_id
        self.shm_dir = shm_dir
        self.budget_bytes = budget_bytes
        self.store = store
        self.counters: Counter[str] = Counter()
        self._mapped: dict[str, _Mapping] = {}
        self._stale: list[shared_memory.SharedMemory] = []  # evicted, still exported to a live view

    # --- reading ---
    def array(self, ref: ObjectRef) -> np.ndarray:
        """A read-only, zero-copy view of the object, from this node's memory (fetched once if missing)."""
        mapping = self._mapped.get(ref.id) or self._attach(ref)
        if mapping is None:
            with self._lock(ref.id):
                mapping = self._attach(ref)
                if mapping is None:
                    mapping = self._fetch(ref)
                    self._count_miss(ref)
                else:
                    self._count_hit(ref)
        else:
            self._count_hit(ref)
        self._touch(ref.id)
        return view(ref, mapping.shm.buf)

    def _count_hit(self, ref: ObjectRef) -> None:
        self.counters["hits"] += 1
        self.counters["bytes_from_shm"] += ref.nbytes

    def _count_miss(self, ref: ObjectRef) -> None:
        self.counters["misses"] += 1
        self.counters["bytes_from_redis"] += ref.nbytes

    def _attach(self, ref: ObjectRef) -> _Mapping | None:
        name = keys.segment(self.node_id, ref.id)
        try:
            shm = segments.attach(name)
            inode = os.fstat(shm._fd).st_ino  # type: ignore[attr-defined]
        except FileNotFoundError:
            return None
        return self._remember(ref.id, shm, inode)

    def _fetch(self, ref: ObjectRef) -> _Mapping:
        shm, partial = self._reserve(ref, reserve_now=False)
        reservation = segments.Reservation(shm, partial, ref.nbytes, self.shm_dir).start()  # stays ahead of the socket
        try:
            self.store.read_into(ref, shm.buf[: ref.nbytes], before_chunk=reservation.wait_through)
            reservation.stop()
            mapping = self._publish(ref, shm, partial)
        except BaseException:
            reservation.stop()
            shm.close()
            segments.unlink(partial, self.shm_dir)
            raise
        log.debug("object %s: fetched %d bytes from Redis into shared memory", ref.id, ref.nbytes)
        return mapping

    def adopt(self, ref: ObjectRef, array: np.ndarray) -> None:
        """Keep a result this process just computed, so later jobs on this node read it from memory."""
        if (self.shm_dir / keys.segment(self.node_id, ref.id)).exists():
            return
        with self._lock(ref.id):
            if (self.shm_dir / keys.segment(self.node_id, ref.id)).exists():
                return
            shm, partial = self._reserve(ref)
            shm.buf[: ref.nbytes] = memoryview(array).cast("B") if ref.nbytes else b""
            self._publish(ref, shm, partial)

    def _publish(self, ref: ObjectRef, shm: shared_memory.SharedMemory, partial: str) -> _Mapping:
        os.rename(self.shm_dir / partial, self.shm_dir / keys.segment(self.node_id, ref.id))
        return self._remember(ref.id, shm, os.fstat(shm._fd).st_ino)  # type: ignore[attr-defined]

    def _remember(self, object_id: str, shm: shared_memory.SharedMemory, inode: int) -> _Mapping:
        old = self._mapped.pop(object_id, None)
        if old is not None:
            self._release(old.shm)
        mapping = self._mapped[object_id] = _Mapping(shm, inode)
        return mapping

    # --- space ---
    def _reserve(self, ref: ObjectRef, reserve_now: bool = True) -> tuple[shared_memory.SharedMemory, str]:
        """Make room within the budget and create the partial segment, all under the node lock.

        With `reserve_now`, its pages are reserved before this returns; without, the caller reserves them
        (a `segments.Reservation`) before it writes.
        """
        if ref.nbytes > self.budget_bytes:
            raise ShmFull(
                f"object {ref.id} needs {ref.nbytes} bytes but node {self.node_id}'s shared-memory budget is "
                f"{self.budget_bytes} bytes; raise FERRY_SHM_BUDGET_BYTES (and docker's shm_size)"
            )
        partial = keys.partial_segment(self.node_id, ref.id, os.getpid())
        with self._lock("node"):
            files = self.segment_files()
            self._sweep_dead_partials(files)
            resident = sum(f.size for f in files if f.partial_pid is None or pid_alive(f.partial_pid))
            for victim in sorted((f for f in files if f.partial_pid is None), key=lambda f: f.mtime):
                if resident + ref.nbytes <= self.budget_bytes:
                    break
                if segments.unlink(victim.name, self.shm_dir):
                    resident -= victim.size
                    self.counters["evictions"] += 1
                    log.info("object %s: evicted from node %s (%d bytes, least recently used)",
                             victim.object_id, self.node_id, victim.size)
            if resident + ref.nbytes > self.budget_bytes:
                raise ShmFull(
                    f"object {ref.id} needs {ref.nbytes} bytes; node {self.node_id} has {resident} of its "
                    f"{self.budget_bytes}-byte budget held by objects being fetched; retry, or raise FERRY_SHM_BUDGET_BYTES"
                )
            if reserve_now:
                return segments.create(partial, ref.nbytes, self.shm_dir), partial
            return segments.create_unreserved(partial, ref.nbytes, self.shm_dir), partial

    def _sweep_dead_partials(self, files: list[SegmentFile]) -> None:
        for f in files:
            if f.partial_pid is not None and not pid_alive(f.partial_pid):
                segments.unlink(f.name, self.shm_dir)
                log.info("segment %s: removed, its writer (pid %d) died mid-fetch", f.name, f.partial_pid)

    def segment_files(self) -> list[SegmentFile]:
        """This node's segments in /dev/shm (complete and partial), lock files excluded."""
        return list(scan(self.shm_dir, self.node_id))

    def resident_bytes(self) -> int:
        return sum(f.size for f in self.segment_files())

    def release_stale(self) -> None:
        """Unmap segments that were evicted since we mapped them, so their memory can be freed."""
        for object_id, mapping in list(self._mapped.items()):
            try:
                current = os.stat(self.shm_dir / keys.segment(self.node_id, object_id)).st_ino
            except FileNotFoundError:
                current = None
            if current != mapping.inode:
                del self._mapped[object_id]
                self._release(mapping.shm)
        for shm in list(self._stale):
            self._stale.remove(shm)
            self._release(shm)

    def _release(self, shm: shared_memory.SharedMemory) -> None:
        try:
            shm.close()
        except BufferError:  # a numpy view still uses it; try again later
            self._stale.append(shm)

    def close(self) -> None:
        for mapping in self._mapped.values():
            self._release(mapping.shm)
        self._mapped.clear()

    def drain_counters(self) -> dict[str, int]:
        counters, self.counters = dict(self.counters), Counter()
        return counters

    # --- helpers ---
    def _touch(self, object_id: str) -> None:
        try:
            os.utime(self.shm_dir / keys.segment(self.node_id, object_id))
        except FileNotFoundError:
            pass  # evicted meanwhile; our mapping stays valid

    @contextmanager
    def _lock(self, what: str) -> Iterator[None]:
        path = self.shm_dir / f"{keys.node_segment_prefix(self.node_id)}{what}{keys.LOCK_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


def scan(shm_dir: Path, node_id: str | None = None) -> Iterator[SegmentFile]:
    """Ferry segments in `shm_dir`, of one node or of all; object ids are the last 32 hex characters."""
    prefix = keys.node_segment_prefix(node_id) if node_id else keys.SEGMENT_PREFIX
    with os.scandir(shm_dir) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(prefix) or name.endswith(keys.LOCK_SUFFIX):
                continue
            base, _, pid = name.partition(keys.PART_MARK)
            object_id = base[-32:]
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            yield SegmentFile(name, object_id, stat.st_size, stat.st_mtime, int(pid) if pid.isdigit() else None)


def segment_node(name: str) -> str:
    """The node id inside a segment or lock name `ferry_<node>_<rest>` (node ids have no "_")."""
    return name[len(keys.SEGMENT_PREFIX) :].split("_", 1)[0]


def sweep_node(shm_dir: Path, node_id: str) -> tuple[int, int]:
    """Unlink every segment and lock file of a node (at its start and stop); returns (files, bytes)."""
    count = freed = 0
    prefix = keys.node_segment_prefix(node_id)
    with os.scandir(shm_dir) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                try:
                    size = entry.stat().st_size
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                count += 1
                freed += size
    return count, freed
