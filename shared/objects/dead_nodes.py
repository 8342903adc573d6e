"""Sweeping what provably dead nodes of ANY deployment left in this host's /dev/shm, without their Redis.

Why: `shm.gc` and a node's start-up sweep look only at their own deployment (a live node of another
deployment must never lose its files). But a stack killed together with its Redis (`docker kill`, an OOM
kill of the group, a test machine's crash) leaves segments, its nodes' lock files and their host-ledger
entries that nobody of its deployment will ever come back to collect, and they count against every
other node's budget forever. So every node's start and every `ferry objects gc` also sweep those.

Proof of death without Redis: a live node's supervisor holds byte 1 (`shm_files.ALIVE_BYTE`) of its lock file
for its whole life, and the kernel drops it when the node's processes die (a Linux open-file-description
lock). A node is provably dead when that byte can be taken here AND its lock file is older than
`MIN_AGE_S` (a node that has just created its file and not yet taken the byte is never swept). The sweep
holds the byte while it unlinks, so a node of that id cannot start meanwhile (its start waits a moment,
then checks that the file it locked is still the one in /dev/shm: `NodeSpace.hold_alive`). A segment
whose node has no lock file at all is a leftover too (a live node creates its lock file before anything
else), but is swept only after `ORPHAN_MIN_AGE_S`, the safe side for something never expected. Ledger
entries go with their node's lock file.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from shared import keys
from shared.objects import segments
from shared.objects.shm_files import ALIVE_BYTE, Ledger, Removed, ShmFile, range_lock, scan

log = logging.getLogger("ferry.shm")

MIN_AGE_S = 5.0  # a lock file younger than this may be a node that is starting: never swept
ORPHAN_MIN_AGE_S = 300.0  # a segment without its node's lock file (never a live node's): swept after this


def sweep_dead_nodes(shm_dir: Path, min_age_s: float = MIN_AGE_S,
                     orphan_min_age_s: float = ORPHAN_MIN_AGE_S) -> list[Removed]:
    """Unlink the files and drop the ledger entries of every node of any deployment that is dead on this host."""
    by_node: dict[tuple[str, str], list[ShmFile]] = {}
    for f in scan(shm_dir):
        if _owned(shm_dir / f.name):  # another user's Ferry has its own ledger, and its files are not ours to remove
            by_node.setdefault((f.node, f.deployment), []).append(f)
    now = time.time()
    removed: list[Removed] = []
    for (node, deployment), files in by_node.items():
        lock = next((f for f in files if f.object_id is None), None)
        if lock is None:
            reason = f"node {node} of deployment {deployment} left it without its lock file"
            removed += _unlink([f for f in files if now - f.mtime >= orphan_min_age_s], shm_dir, reason)
        elif now - lock.mtime >= min_age_s:
            removed += _sweep_if_dead(shm_dir, node, deployment, files)
    _drop_ledger_entries(shm_dir)
    if removed:
        log.info("shared memory: removed %d files (%d bytes) of nodes that are dead on this host",
                 len(removed), sum(r.bytes for r in removed))
    return removed


def _sweep_if_dead(shm_dir: Path, node: str, deployment: str, files: list[ShmFile]) -> list[Removed]:
    lock_path = shm_dir / keys.node_lock(deployment, node)
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return []
    try:
        if not range_lock(fd, ALIVE_BYTE, wait=False):
            return []  # alive: its supervisor holds the byte
        if os.fstat(fd).st_ino != _inode(lock_path):
            return []  # replaced since we listed it: a node just started; leave it
        reason = f"node {node} of deployment {deployment} is not running on this host"
        removed = _unlink([f for f in files if f.object_id is not None], shm_dir, reason)
        lock_path.unlink(missing_ok=True)  # while we hold its alive byte: nobody started meanwhile
        removed.append(Removed(lock_path.name, 0, reason))
        return removed
    finally:
        os.close(fd)  # releases the byte


def _unlink(files: list[ShmFile], shm_dir: Path, reason: str) -> list[Removed]:
    now = time.time()  # a put not yet written to Redis is left for its node's restart (segments.mark_unwritten)
    return [Removed(f.name, f.size, reason) for f in files
            if not segments.spared_unwritten(shm_dir / f.name, now) and segments.unlink(f.name, shm_dir)]


def _owned(path: Path) -> bool:
    try:
        return os.stat(path).st_uid == os.getuid()
    except FileNotFoundError:
        return False


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def _drop_ledger_entries(shm_dir: Path) -> None:
    """Entries whose node has no lock file: it is gone (a node's lock file exists before its first charge)."""
    with Ledger(shm_dir).edit() as entries:
        for key, entry in list(entries.items()):
            if not (shm_dir / keys.node_lock(str(entry.get("deployment")), str(entry.get("node")))).exists():
                del entries[key]
