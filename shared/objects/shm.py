"""/dev/shm as one subsystem: a node's space (reserving, evicting, sweeping), the host's one budget, and gc.

The files themselves (names that carry the deployment, the per-node lock file and its byte ranges, the
host ledger) are in `shm_files`; sweeping dead nodes of any deployment without their Redis is in
`dead_nodes`. Both build on the files only, so this module uses them without an import circle.

Budget. One budget per host's /dev/shm, shared by every node there, of any deployment: the bytes each
node holds are kept as numbers in the host ledger (`/dev/shm/ferry-ledger-<uid>`, JSON under a
`flock`), updated when a segment is created or removed. No directory scan or stat happens on a job's
path; only when a reservation would exceed the budget is /dev/shm scanned once, to correct the
numbers from the files themselves and to choose least-recently-used victims of this node.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from multiprocessing import shared_memory
from pathlib import Path

import redis

from shared import keys
from shared.errors import ConfigError, ShmFull
from shared.objects import segments
from shared.objects.dead_nodes import sweep_dead_nodes
from shared.objects.shm_files import (
    ALIVE_BYTE,
    NODE_BYTE,
    Ledger,
    Removed,
    ShmFile,
    holders_text,
    ledger_entry,
    ledger_total,
    object_lock_byte,
    range_lock,
    range_unlock,
    scan,
)

log = logging.getLogger("ferry.shm")

DEFAULT_BUDGET_FRACTION = 0.8  # of the host's /dev/shm size
HOLD_ALIVE_WAIT_S = 1.0  # a dead-node sweep holds a dead node's alive byte for a moment


def deployment_id(conn: redis.Redis) -> str:
    """This deployment's short id, created at first use (SET NX), so every process of it agrees."""
    existing = conn.get(keys.DEPLOYMENT)
    if existing is None:
        conn.set(keys.DEPLOYMENT, secrets.token_hex(4), nx=True)
        existing = conn.get(keys.DEPLOYMENT)
    return bytes(existing).decode()  # type: ignore[arg-type]  # None only if deleted in between: TypeError, as ever


def default_budget(shm_dir: Path) -> int:
    """The host's budget when FERRY_SHM_BUDGET_BYTES is unset: a fraction of /dev/shm's size."""
    stats = os.statvfs(shm_dir)
    return int(stats.f_blocks * stats.f_frsize * DEFAULT_BUDGET_FRACTION)


# --- one node's space ---
class NodeSpace:
    """A node's files in /dev/shm: its locks, its share of the host budget, its sweeping."""

    def __init__(self, shm_dir: Path, node_id: str, deployment: str, budget_bytes: int) -> None:
        self.shm_dir, self.node_id, self.deployment, self.budget_bytes = shm_dir, node_id, deployment, budget_bytes
        self.ledger = Ledger(shm_dir)
        self.lock_path = shm_dir / keys.node_lock(deployment, node_id)
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # its own open: its own locks
        self.evicted = 0  # objects this process evicted, for the node's counters
        self.evicted_ids: list[str] = []  # objects this process evicted, for the node's published holdings

    def close(self) -> None:
        os.close(self._fd)

    def segment(self, object_id: str) -> str:
        return keys.segment(self.deployment, self.node_id, object_id)

    def partial(self, object_id: str) -> str:
        return keys.partial_segment(self.deployment, self.node_id, object_id)

    @contextmanager
    def locked(self, byte: int) -> Iterator[None]:
        range_lock(self._fd, byte)
        try:
            yield
        finally:
            range_unlock(self._fd, byte)

    def object_lock(self, object_id: str) -> AbstractContextManager[None]:
        return self.locked(object_lock_byte(object_id))

    # --- the budget ---
    def create_partial(self, object_id: str, size: int, needed_for: str) -> tuple[str, shared_memory.SharedMemory]:
        """Charge `size` bytes to this node and create the object's sparse `.part` segment, under the node lock.

        Within the host budget, least-recently-used objects of this node are evicted first; ShmFull
        (naming every node's holding) if the budget still cannot take it. Call under the object's lock.
        """
        name = self.partial(object_id)
        with self.locked(NODE_BYTE):
            stale = self.shm_dir / name
            if stale.exists():  # its writer died or failed without cleaning up (we hold the object's lock)
                self._remove_locked(name)
            if not self._charge(size):
                self._make_room(size, needed_for)
            try:
                shm = segments.create_unreserved(name, size, self.shm_dir)
            except BaseException:
                self._add(-size)
                raise
        return name, shm

    def remove_partial(self, object_id: str) -> None:
        """Unlink a partial segment that will not be published and give its bytes back."""
        with self.locked(NODE_BYTE):
            self._remove_locked(self.partial(object_id))

    def publish(self, object_id: str) -> None:
        os.rename(self.shm_dir / self.partial(object_id), self.shm_dir / self.segment(object_id))

    def _remove_locked(self, name: str) -> None:
        try:
            size = os.stat(self.shm_dir / name).st_size
        except FileNotFoundError:
            return
        if segments.unlink(name, self.shm_dir):
            self._add(-size)

    def _charge(self, size: int) -> bool:
        with self.ledger.edit() as entries:
            if ledger_total(entries) + size > self.budget_bytes:
                return False
            entry = ledger_entry(entries, self.node_id, self.deployment)
            entry["bytes"] = int(entry["bytes"]) + size
            return True

    def _add(self, delta: int) -> None:
        with self.ledger.edit() as entries:
            entry = ledger_entry(entries, self.node_id, self.deployment)
            entry["bytes"] = max(0, int(entry["bytes"]) + delta)

    def _make_room(self, size: int, needed_for: str) -> None:
        """Over budget: correct the numbers from the files (one scan), evict this node's LRU objects, or refuse.

        A put's segment not yet written to Redis (the sticky bit, see segments.py) is the object's only copy:
        it is never evicted."""
        files = list(scan(self.shm_dir))
        now = time.time()
        mine = sorted(
            (
                f
                for f in files
                if f.node == self.node_id and f.deployment == self.deployment and f.object_id and not f.partial
                and not segments.spared_unwritten(self.shm_dir / f.name, now)
            ),
            key=lambda f: f.mtime,
        )
        with self.ledger.edit() as entries:
            actual: dict[str, int] = {}
            for f in files:
                actual[f"{f.node}_{f.deployment}"] = actual.get(f"{f.node}_{f.deployment}", 0) + f.size
            for key, entry in entries.items():
                entry["bytes"] = actual.get(key, 0)
            entry = ledger_entry(entries, self.node_id, self.deployment)
            evicted = 0
            for victim in mine:
                if ledger_total(entries) + size <= self.budget_bytes:
                    break
                if segments.unlink(victim.name, self.shm_dir):
                    entry["bytes"] = max(0, int(entry["bytes"]) - victim.size)
                    evicted += 1
                    self.evicted_ids.append(str(victim.object_id))
                    log.info(
                        "object %s: evicted from node %s (%d bytes, least recently used)",
                        victim.object_id,
                        self.node_id,
                        victim.size,
                    )
            if evicted:
                self._unlinked()
            self.evicted += evicted
            if ledger_total(entries) + size > self.budget_bytes:
                raise ShmFull(
                    f"{needed_for} needs {size} bytes of shared memory; "
                    f"this host's budget of {self.budget_bytes} bytes "
                    f"(one for all nodes on its /dev/shm) holds {ledger_total(entries)}: {holders_text(entries)}; "
                    "objects in use, or put and not yet written to Redis, cannot be evicted: retry later, stop "
                    "idle nodes (`ferry objects gc` frees dead "
                    "ones), or raise FERRY_SHM_BUDGET_BYTES (and docker's shm_size)"
                )
            entry["bytes"] = int(entry["bytes"]) + size

    def resident_bytes(self) -> int:
        entry = self.ledger.read().get(f"{self.node_id}_{self.deployment}", {})
        return int(entry.get("bytes", 0))

    def evictions(self) -> int:
        """Changes whenever this node unlinks segments (eviction, sweep), so mappings may be stale: one fstat.

        It is the lock file's modification time, which `_unlinked` touches.
        """
        return os.fstat(self._fd).st_mtime_ns

    def _unlinked(self) -> None:
        os.utime(self._fd)

    # --- the node's life (called by its supervisor) ---
    def hold_alive(self) -> None:
        """Mark the node alive on this host (released by the kernel when the node and its workers die).

        A dead-node sweep (dead_nodes.py) holds the byte for a moment while it unlinks a dead node's files:
        wait that long, and if the file we locked was unlinked meanwhile, lock a new one.
        """
        deadline = time.monotonic() + HOLD_ALIVE_WAIT_S
        while True:
            if range_lock(self._fd, ALIVE_BYTE, wait=False):
                if os.fstat(self._fd).st_ino == _inode(self.lock_path):
                    return
                os.close(self._fd)  # swept away under us: a new lock file, and lock that one
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            elif time.monotonic() > deadline:
                raise ConfigError(
                    f"node {self.node_id!r} of this deployment is already running on this host; "
                    "give this node its own FERRY_NODE_ID"
                )
            else:
                time.sleep(0.05)

    def sweep(self, keep_lock: bool = True) -> tuple[int, int]:
        """Unlink every file of this node (at its start and stop); returns (files, bytes)."""
        count = freed = 0
        with self.locked(NODE_BYTE):
            for f in scan(self.shm_dir, self.deployment, self.node_id):
                if f.object_id is None:
                    continue
                if segments.unlink(f.name, self.shm_dir):
                    count, freed = count + 1, freed + f.size
            with self.ledger.edit() as entries:
                entry = ledger_entry(entries, self.node_id, self.deployment)
                entry["bytes"] = 0
                if not keep_lock:
                    entries.pop(f"{self.node_id}_{self.deployment}", None)
            self._unlinked()
        if not keep_lock:
            self.lock_path.unlink(missing_ok=True)
        return count, freed


def start_node(
    conn: redis.Redis, shm_dir: Path, node_id: str, budget_bytes: int, before_sweep: Callable[[], None] | None = None
) -> NodeSpace:
    """At a node's start: refuse a second live node of this id and deployment here, then sweep its old files
    (and those of any node, of any deployment, that is dead on this host).

    `before_sweep` runs once the node is marked alive, while its earlier run's files are still there.
    """
    space = NodeSpace(shm_dir, node_id, deployment_id(conn), budget_bytes)
    space.hold_alive()
    if before_sweep is not None:
        before_sweep()  # puts written behind that the earlier run left unwritten (put_writer.finish_own)
    files, freed = space.sweep()
    if files:
        log.info(
            "node %s: removed %d stale shared-memory files (%d bytes) left by an earlier run", node_id, files, freed
        )
    sweep_dead_nodes(shm_dir)
    return space


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def gc(conn: redis.Redis, shm_dir: Path) -> list[Removed]:
    """Free this deployment's shared memory on this host held by dead nodes and by dead writers, and that of
    dead nodes of any other deployment (whose Redis may be gone with them: dead_nodes.py).

    A node is dead when nobody holds its alive byte (the kernel drops it when its processes die); a
    `.part` segment is abandoned when nobody holds its object's lock. Another deployment's live nodes
    are never touched.
    """
    deployment = deployment_id(conn)
    by_node: dict[str, list[ShmFile]] = {}
    for f in scan(shm_dir, deployment):
        by_node.setdefault(f.node, []).append(f)
    removed: list[Removed] = []
    ledger = Ledger(shm_dir)
    for node, files in by_node.items():
        lock_path = shm_dir / keys.node_lock(deployment, node)
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            fd = -1
        try:
            alive = fd >= 0 and not range_lock(fd, ALIVE_BYTE, wait=False)  # held from here: no start meanwhile
            for f in files:
                if f.object_id is None:
                    continue
                if not alive and segments.spared_unwritten(shm_dir / f.name, time.time()):
                    continue  # a put its node has not written to Redis yet: its restart (or a takeover) will
                if not alive:
                    reason = f"node {node} is not running"
                elif f.partial and range_lock(fd, object_lock_byte(f.object_id), wait=False):
                    reason = "its writer died mid-fetch"
                    range_unlock(fd, object_lock_byte(f.object_id))
                else:
                    continue
                if segments.unlink(f.name, shm_dir):
                    removed.append(Removed(f.name, f.size, reason))
                    with ledger.edit() as entries:
                        entry = ledger_entry(entries, node, deployment)
                        entry["bytes"] = max(0, int(entry["bytes"]) - f.size)
            if not alive:
                lock_path.unlink(missing_ok=True)
                with ledger.edit() as entries:
                    entries.pop(f"{node}_{deployment}", None)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed + sweep_dead_nodes(shm_dir)


def collect_quietly(conn: redis.Redis, shm_dir: Path = segments.SHM_DIR, wait_s: float = 3.0) -> list[Removed]:
    """`gc` for a supervisor that has just killed its nodes (`ferry up`); never raises.

    A killed node's processes release its alive byte only as they finish exiting, so this retries for
    up to `wait_s` while a node of this deployment still looks alive here.
    """
    removed: list[Removed] = []
    deadline = time.monotonic() + wait_s
    try:
        deployment = deployment_id(conn)
        while True:
            removed += gc(conn, shm_dir)
            if not any(f.object_id is None for f in scan(shm_dir, deployment)) or time.monotonic() > deadline:
                return removed
            time.sleep(0.05)
    except (redis.RedisError, OSError) as exc:
        log.warning("shared memory: could not collect stopped nodes' files (%s)", exc)
        return removed
