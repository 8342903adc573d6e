"""POSIX shared-memory segments without Python's resource tracker.

On Python 3.11/3.12 every SharedMemory registers its name with the process's resource tracker, which
unlinks the segment when that process exits, under every other process's feet (cpython gh-82300).
Ferry's segments belong to the node, not to a process, so each handle is untracked right after it
is opened (3.13+: `track=False`). Creation reserves the pages with posix_fallocate so that a full
/dev/shm is an ENOSPC error here instead of a SIGBUS later.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import sys
import threading
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

from shared.errors import ShmFull
from shared.objects.ref import ObjectRef

# A segment's layout: a one-page header (the object's ObjectRef as JSON, space-padded), then the data, so the
# data stays page-aligned and a reader can check the bytes against the reference it was given.
HEADER_BYTES = 4096


def header(ref: ObjectRef) -> bytes:
    text = ref.model_dump_json().encode()
    return text + b" " * (HEADER_BYTES - len(text))

_TRACK_FLAG = sys.version_info >= (3, 13)
SHM_DIR = Path("/dev/shm")  # where multiprocessing.shared_memory puts segments on Linux
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux's value; Python 3.11 lacks the name
_LIBC = ctypes.CDLL(None, use_errno=True)


def _open(name: str, create: bool, size: int = 0) -> shared_memory.SharedMemory:
    if _TRACK_FLAG:
        return shared_memory.SharedMemory(  # type: ignore[call-arg]  # `track` is new in 3.13; mypy checks as 3.11
            name=name, create=create, size=size, track=False)
    # 3.11/3.12 register every handle with the tracker; registering then unregistering cost two pipe
    # writes and two liveness probes per segment (a quarter of a small object's fetch), so the
    # registration is skipped instead. Only this module opens segments, from one thread at a time.
    register = resource_tracker.register
    resource_tracker.register = _not_tracked
    try:
        return shared_memory.SharedMemory(name=name, create=create, size=size)
    finally:
        resource_tracker.register = register


def _not_tracked(name: object, rtype: str) -> None:
    """Stands in for resource_tracker.register while Ferry opens a segment (see `_open`)."""


def share_tracker_with_children() -> None:
    """Start the resource tracker in a parent before it forks, so a node runs one tracker, not one per worker.

    Ferry unregisters every segment at once, so the tracker never acts; on 3.11/3.12 SharedMemory still
    insists on one, and each worker process would otherwise start its own (~9 MB each).
    """
    if not _TRACK_FLAG:
        resource_tracker.ensure_running()


def create(name: str, size: int, shm_dir: Path) -> shared_memory.SharedMemory:
    """A new segment of `size` bytes whose pages are all reserved now; ShmFull if /dev/shm cannot hold it."""
    shm = create_unreserved(name, size, shm_dir)
    reservation = Reservation(shm, name, size, shm_dir)
    reservation.run()
    try:
        reservation.wait_through(size)
    except BaseException:
        shm.close()
        unlink(name, shm_dir)
        raise
    return shm


def create_unreserved(name: str, size: int, shm_dir: Path) -> shared_memory.SharedMemory:
    """A new, still sparse segment: reserve its pages (`Reservation`) before touching them."""
    free = free_bytes(shm_dir)
    if free < size:
        raise _full(shm_dir, size, free)
    return _open(name, create=True, size=max(size, 1))


class Reservation:
    """Reserves a sparse segment's pages piece by piece (posix_fallocate, then one madvise to map them).

    Run in a thread, it stays ahead of a writer that calls `wait_through(end)` before touching bytes
    below `end`: the page allocation then overlaps the network receive instead of preceding it, and a
    full /dev/shm is still an ENOSPC error here, never a SIGBUS in the writer.
    """

    PIECE_BYTES = 8 * 1024 * 1024

    def __init__(self, shm: shared_memory.SharedMemory, name: str, size: int, shm_dir: Path) -> None:
        self.shm, self.name, self.size, self.shm_dir = shm, name, max(size, 1), shm_dir
        self.reserved = 0
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> Reservation:
        self._thread = threading.Thread(target=self.run, name=f"reserve-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reserving and wait for the thread (before the segment is unmapped under it)."""
        self._stopped = True
        if self._thread is not None:
            self._thread.join()

    def run(self) -> None:
        address = _address(self.shm)
        try:
            for offset in range(0, self.size, self.PIECE_BYTES):
                if self._stopped:
                    return
                length = min(self.PIECE_BYTES, self.size - offset)
                os.posix_fallocate(fd(self.shm), offset, length)
                _libc_madvise(address + offset, length, MADV_POPULATE_WRITE)
                with self._changed:
                    self.reserved = offset + length
                    self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the writer by wait_through
            with self._changed:
                self.error = _full(self.shm_dir, self.size, free_bytes(self.shm_dir)) if _is_enospc(exc) else exc
                self._changed.notify_all()

    def wait_through(self, end: int) -> None:
        """Return once bytes [0, end) are reserved; raise ShmFull (or the OS error) if they cannot be."""
        with self._changed:
            while self.reserved < min(end, self.size) and self.error is None:
                self._changed.wait()
            if self.reserved < min(end, self.size) and self.error is not None:
                raise self.error


def _full(shm_dir: Path, size: int, free: int) -> ShmFull:
    return ShmFull(
        f"{shm_dir} has only {free} bytes free, the object needs {size}; "
        "give the node more shared memory (docker: shm_size) or lower FERRY_SHM_BUDGET_BYTES "
        "so older objects are evicted first"
    )


def _is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.ENOMEM)


def fd(shm: shared_memory.SharedMemory) -> int:
    """The segment's file descriptor (CPython keeps it in `_fd`; typeshed does not declare the attribute)."""
    return shm._fd  # type: ignore[attr-defined]  # private, stable since 3.8; no public accessor


def buffer(shm: shared_memory.SharedMemory) -> memoryview:
    """The segment's memory; ValueError once it is closed (typeshed's `buf` is Optional for that reason)."""
    buf = shm.buf
    if buf is None:
        raise ValueError(f"shared memory segment {shm.name} is closed")
    return buf


def _address(shm: shared_memory.SharedMemory) -> int:
    """The mapping's address (the temporary export is released before returning)."""
    holder = ctypes.c_char.from_buffer(buffer(shm))
    try:
        return ctypes.addressof(holder)
    finally:
        del holder


def _libc_madvise(address: int, length: int, advice: int) -> None:
    """madvise through libc, which (unlike mmap.madvise) lets other threads run meanwhile.

    Mapping every page in one call costs about a third of faulting them in one by one; on kernels
    without the advice (before Linux 5.14) the pages are simply faulted in on first use.
    """
    _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), ctypes.c_int(advice))


def attach(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment; FileNotFoundError if it is gone (evicted or never made)."""
    return _open(name, create=False)  # pages map on first touch: a job reading a slice pays for that slice only


# A put written behind (local_put.py) leaves the only copy of its object in a node's segment until the node
# has written it to Redis. The segment carries the sticky bit meanwhile (no effect on access): sweeps that
# cannot ask Redis whether it is written (another node's start, `ferry objects gc` for a dead node) leave it
# to its node's restart, or to a live node of its deployment here that takes the write over.
UNWRITTEN_KEEP_S = 7 * 86_400  # an unwritten segment is kept this long after its node's death at most


def mark_unwritten(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_ISVTX)


def mark_written(path: Path) -> None:
    try:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    except FileNotFoundError:
        pass


def spared_unwritten(path: Path, now: float) -> bool:
    """A put's segment not yet written to Redis, young enough that its node may still come back for it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    return bool(info.st_mode & stat.S_ISVTX) and now - info.st_mtime < UNWRITTEN_KEEP_S


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
