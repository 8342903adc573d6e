"""A node's shared-memory object cache, used by every worker process on the node.

Ownership (see ARCHITECTURE.md):
- The worker process that first needs an object creates its segment: under the object's lock it
  checks the reference against the stored metadata, charges the host budget and creates a `.part`
  segment (under the node lock, evicting least-recently-used objects if needed), fills it from Redis,
  and renames it to its final name. A final name always holds a complete object; a failed fetch
  unlinks its part and gives its bytes back at once; a writer killed mid-fetch leaves a part that the
  next fetch of that object (or `ferry objects gc`) removes.
- Other worker processes attach to the final segment zero-copy and never unlink it.
- Eviction (any worker process, under the node lock) and the node supervisor (at start and stop) and
  `ferry objects gc` unlink. Linux keeps an unlinked segment valid for processes that still map it.

Each segment starts with a HEADER_BYTES page holding the object's stored metadata (JSON), so a process
that attaches checks a job's reference against the truth without asking Redis; the data follows,
page-aligned.
"""

from __future__ import annotations

import errno
import logging
import os
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from shared.errors import InvalidArgs, ShmFull
from shared.locality import Holdings
from shared.objects import segments
from shared.objects.ref import ObjectRef, mismatch, view
from shared.objects.segments import HEADER_BYTES
from shared.objects.shm import DEFAULT_BUDGET_FRACTION, NodeSpace, default_budget, deployment_id
from shared.objects.store import ObjectStore, Stored

log = logging.getLogger("ferry.cache")

WRITE_PIECE_BYTES = 8 * 1024 * 1024  # per pwrite when a result is kept

__all__ = ["DEFAULT_BUDGET_FRACTION", "HEADER_BYTES", "NodeCache", "default_budget"]


@dataclass
class _Mapping:
    shm: shared_memory.SharedMemory
    inode: int
    ref: ObjectRef  # what the segment holds, from its header (the stored metadata)


class NodeCache:
    """Objects resident in this node's /dev/shm, fetched from Redis at most once per node."""

    def __init__(self, node_id: str, shm_dir: Path, budget_bytes: int, store: ObjectStore) -> None:
        self.node_id = node_id
        self.shm_dir = shm_dir
        self.budget_bytes = budget_bytes
        self.store = store
        self.space = NodeSpace(shm_dir, node_id, deployment_id(store.conn), budget_bytes)
        self.counters: Counter[str] = Counter()
        self._mapped: dict[str, _Mapping] = {}
        self._stale: list[shared_memory.SharedMemory] = []  # evicted, still exported to a live view
        self._generation = self.space.evictions()
        self.holdings = Holdings(store.conn, node_id)  # which objects this node holds, for placement

    # --- reading ---
    def array(self, ref: ObjectRef) -> np.ndarray:
        """A read-only, zero-copy view of the object, from this node's memory (fetched once if missing).

        The job's reference must describe the stored object exactly (InvalidArgs otherwise): a reference
        with another dtype or a smaller shape never reads the bytes as something they are not.
        """
        mapping = self._mapped.get(ref.id) or self._attach(ref.id)
        fetched = False
        if mapping is None:
            with self.space.object_lock(ref.id):
                mapping = self._attach(ref.id)
                if mapping is None:
                    mapping, fetched = self._fetch(ref), True
        problem = mismatch(ref, mapping.ref)
        if problem:
            raise InvalidArgs(problem)
        if fetched:
            self._publish_holdings(ref.id)
            self.counters["misses"] += 1
            self.counters["bytes_from_redis"] += ref.nbytes
        else:
            self.counters["hits"] += 1
            self.counters["bytes_from_shm"] += ref.nbytes
        self._touch(ref.id)
        return view(mapping.ref, segments.buffer(mapping.shm)[HEADER_BYTES : HEADER_BYTES + ref.nbytes])

    def _attach(self, object_id: str) -> _Mapping | None:
        try:
            shm = segments.attach(self.space.segment(object_id))
        except FileNotFoundError:
            return None
        inode = os.fstat(segments.fd(shm)).st_ino
        header = bytes(segments.buffer(shm)[:HEADER_BYTES])
        return self._remember(object_id, shm, inode, ObjectRef.model_validate_json(header.rstrip(b" ")))

    def _fetch(self, ref: ObjectRef) -> _Mapping:
        """Read the object from Redis into a new segment; nothing is left in /dev/shm if anything fails.

        The stored meta is read (and checked against `ref`) in the same round trip as the first chunks;
        the segment is created only once it is known to match.
        """
        made: list[tuple[str, shared_memory.SharedMemory, segments.Reservation]] = []

        def place(stored: Stored) -> tuple[memoryview, int, Callable[[int], None]]:
            size = self._size_within_budget(stored.ref)
            name, shm = self.space.create_partial(ref.id, size, f"object {ref.id}")
            reservation = segments.Reservation(shm, name, size, self.shm_dir)
            made.append((name, shm, reservation))
            if size <= reservation.PIECE_BYTES:
                reservation.run()  # one piece: a thread would cost more than the overlap saves
            else:
                reservation.start()  # stays ahead of the socket
            reservation.wait_through(HEADER_BYTES)
            buf = segments.buffer(shm)
            buf[:HEADER_BYTES] = segments.header(stored.ref)
            return buf, HEADER_BYTES, reservation.wait_through

        try:
            stored = self.store.fetch(ref, place)  # missing or different: fails before /dev/shm is touched
            _name, shm, reservation = made[-1]
            reservation.stop()
            self.space.publish(ref.id)
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)  # a frame holding a slice of shm.buf would block close()
            for _name, shm, reservation in made:
                reservation.stop()
                self._release(shm)
                self.space.remove_partial(ref.id)  # never skipped: close() failing must not leak the segment
            raise
        log.debug("object %s: fetched %d bytes from Redis into shared memory", ref.id, ref.nbytes)
        return self._remember(ref.id, shm, os.fstat(segments.fd(shm)).st_ino, stored.ref)

    def _size_within_budget(self, ref: ObjectRef) -> int:
        size = HEADER_BYTES + ref.nbytes
        if size > self.budget_bytes:
            raise ShmFull(
                f"object {ref.id} needs {ref.nbytes} bytes but node {self.node_id}'s shared-memory budget is "
                f"{self.budget_bytes} bytes (one budget for this host's /dev/shm, shared by its nodes); "
                "raise FERRY_SHM_BUDGET_BYTES (and docker's shm_size)"
            )
        return size

    def adopt(self, ref: ObjectRef, array: np.ndarray) -> None:
        """Keep a result this process just computed, so later jobs on this node read it from memory.

        Best effort: a result that does not fit is simply not kept (it is in Redis already).
        """
        if (self.shm_dir / self.space.segment(ref.id)).exists():
            return
        with self.space.object_lock(ref.id):
            if (self.shm_dir / self.space.segment(ref.id)).exists():
                return
            try:
                size = self._size_within_budget(ref)
                name, shm = self.space.create_partial(ref.id, size, f"result object {ref.id}")
            except ShmFull as exc:
                log.info("object %s: result not kept in shared memory (%s)", ref.id, exc.message)
                return
            try:
                _write_into(shm, self.shm_dir, segments.header(ref), array)
                self.space.publish(ref.id)
            except BaseException as exc:
                traceback.clear_frames(exc.__traceback__)
                self._release(shm)
                self.space.remove_partial(ref.id)
                if isinstance(exc, ShmFull):
                    return
                raise
            self._remember(ref.id, shm, os.fstat(segments.fd(shm)).st_ino, ref)
        self._publish_holdings(ref.id)

    def _publish_holdings(self, object_id: str) -> None:
        """Tell placement this node now holds `object_id` (and no longer holds what was evicted for it)."""
        evicted, self.space.evicted_ids = self.space.evicted_ids, []
        self.holdings.publish([object_id], evicted)

    def _remember(self, object_id: str, shm: shared_memory.SharedMemory, inode: int, ref: ObjectRef) -> _Mapping:
        old = self._mapped.pop(object_id, None)
        if old is not None:
            self._release(old.shm)
        mapping = self._mapped[object_id] = _Mapping(shm, inode, ref)
        return mapping

    # --- bookkeeping ---
    def resident_bytes(self) -> int:
        """This node's bytes in /dev/shm (a number kept in the host ledger: no scan)."""
        return self.space.resident_bytes()

    def release_stale(self) -> None:
        """Unmap segments unlinked since we mapped them, so their memory can be freed.

        Only when the node's eviction count moved: no stat per mapped segment after every job.
        """
        for shm in list(self._stale):
            self._stale.remove(shm)
            self._release(shm)
        if not self._mapped:
            return
        generation = self.space.evictions()
        if generation == self._generation:
            return
        self._generation = generation
        for object_id, mapping in list(self._mapped.items()):
            try:
                current = os.stat(self.shm_dir / self.space.segment(object_id)).st_ino
            except FileNotFoundError:
                current = None
            if current != mapping.inode:
                del self._mapped[object_id]
                self._release(mapping.shm)

    def _release(self, shm: shared_memory.SharedMemory) -> None:
        try:
            shm.close()
        except BufferError:  # a numpy view still uses it; try again later
            self._stale.append(shm)

    def close(self) -> None:
        for mapping in self._mapped.values():
            self._release(mapping.shm)
        self._mapped.clear()
        self.space.close()

    def drain_counters(self) -> dict[str, int]:
        counters, self.counters = dict(self.counters), Counter()
        if self.space.evicted:
            counters["evictions"], self.space.evicted = self.space.evicted, 0
        return counters

    def _touch(self, object_id: str) -> None:
        try:
            os.utime(self.shm_dir / self.space.segment(object_id))  # the LRU clock, read only when evicting
        except FileNotFoundError:
            pass  # evicted meanwhile; our mapping stays valid


def _write_into(shm: shared_memory.SharedMemory, shm_dir: Path, header: bytes, array: np.ndarray) -> None:
    """Write header and data into a new segment through its file descriptor.

    `pwrite` into tmpfs allocates each page as it fills it: no zeroing pass (posix_fallocate), no page
    faults through the mapping, and a full /dev/shm is ENOSPC here (ShmFull), never a SIGBUS later.
    """
    descriptor = segments.fd(shm)
    data = array.data.cast("B") if array.nbytes else memoryview(b"")
    try:
        os.pwrite(descriptor, header, 0)
        offset = 0
        while offset < len(data):
            with data[offset : offset + WRITE_PIECE_BYTES] as piece:
                offset += os.pwrite(descriptor, piece, HEADER_BYTES + offset)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ShmFull(f"{shm_dir} is full: a result of {len(data)} bytes does not fit") from exc
        raise


