"""POSIX shared-memory segments without Python's resource tracker.

On Python 3.11/3.12 every SharedMemory registers its name with the process's resource tracker, which
unlinks the segment when that process exits, under every other process's feet (cpython gh-82300).
Ferry's segments belong to the node, not to a process, so each handle is untracked right after it
is opened (3.13+: `track=False`). Creation reserves the pages with posix_fallocate so that a full
/dev/shm is an ENOSPC error here instead of a SIGBUS later.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

from shared.errors import ShmFull

_TRACK_FLAG = sys.version_info >= (3, 13)
SHM_DIR = Path("/dev/shm")
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux's value; Python 3.11 lacks the name  # where multiprocessing.shared_memory puts segments on Linux


def _open(name: str, create: bool, size: int = 0) -> shared_memory.SharedMemory:
    if _TRACK_FLAG:
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)  # type: ignore[call-arg]
    shm = shared_memory.SharedMemory(name=name, create=create, size=size)
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def share_tracker_with_children() -> None:
    """Start the resource tracker in a parent before it forks, so a node runs one tracker, not one per worker.

    Ferry unregisters every segment at once, so the tracker never acts; on 3.11/3.12 SharedMemory still
    insists on one, and each worker process would otherwise start its own (~9 MB each).
    """
    if not _TRACK_FLAG:
        resource_tracker.ensure_running()


def create(name: str, size: int, shm_dir: Path) -> shared_memory.SharedMemory:
    """A new segment of `size` bytes whose pages are reserved now; ShmFull if /dev/shm cannot hold it."""
    shm = _open(name, create=True, size=max(size, 1))
    try:
        os.posix_fallocate(shm._fd, 0, max(size, 1))  # type: ignore[attr-defined]
    except OSError as exc:
        shm.close()
        unlink(name, shm_dir)
        if exc.errno in (errno.ENOSPC, errno.ENOMEM):
            free = free_bytes(shm_dir)
            raise ShmFull(
                f"{shm_dir} has only {free} bytes free, the object needs {size}; "
                "give the node more shared memory (docker: shm_size) or lower FERRY_SHM_BUDGET_BYTES "
                "so older objects are evicted first"
            ) from exc
        raise
    _populate(shm, MADV_POPULATE_WRITE)
    return shm


def attach(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment; FileNotFoundError if it is gone (evicted or never made)."""
    return _open(name, create=False)  # pages map on first touch: a job reading a slice pays for that slice only


def _populate(shm: shared_memory.SharedMemory, advice: int) -> None:
    """Map every page now in one call rather than one fault per 4 KiB page later (a third of the cost).

    Linux 5.14+; elsewhere the pages are simply faulted in on first use.
    """
    try:
        shm._mmap.madvise(advice)  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        pass


def unlink(name: str, shm_dir: Path) -> bool:
    """Remove a segment's name; processes that still map it keep a valid mapping until they unmap."""
    try:
        os.unlink(shm_dir / name)
        return True
    except FileNotFoundError:
        return False


def free_bytes(shm_dir: Path) -> int:
    stats = os.statvfs(shm_dir)
    return stats.f_bavail * stats.f_frsize
