"""The files of /dev/shm: their names, the per-node lock file and its byte ranges, the host ledger.

Names. Every file is `ferry_<node>_<deployment>_...`: the deployment id is 8 hex characters that the
first Ferry process to need it stores in Redis (`SET NX ferry:deployment`, `shm.deployment_id`), so two
deployments on one host (two Redis servers), even with equal node ids, never touch each other's files.

Locks. One lock file per node (`ferry_<node>_<deployment>.lock`) instead of one per object: locks are
byte ranges in it (Linux open-file-description locks, which the kernel releases when the holder dies,
and which conflict between processes and between opens in one process). Byte 0 guards the node's
space (reserving, evicting), byte 1 is held by the node supervisor for its whole life (so any process
on the host can tell a live node from a dead one without asking Redis), bytes 2.. are per-object
fetch locks (by a hash of the id; a collision only makes two fetches wait for each other).

Ledger. The bytes each node holds, as numbers, in one JSON file per user under a `flock` (see shm.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared import keys

NODE_BYTE, ALIVE_BYTE, FIRST_OBJECT_BYTE = 0, 1, 2
OBJECT_LOCK_RANGE = 1 << 40


@dataclass
class Removed:
    """A file housekeeping removed: its name, its size, and why."""

    name: str
    bytes: int
    reason: str


# --- names ---
@dataclass(frozen=True)
class ShmFile:
    name: str
    node: str
    deployment: str
    object_id: str | None  # None for the node's lock file
    partial: bool
    size: int = 0
    mtime: float = 0.0


def parse_name(name: str) -> ShmFile | None:
    """A Ferry file name split into its parts; None for anything else (including older layouts)."""
    if not name.startswith(keys.SEGMENT_PREFIX):
        return None
    parts = name[len(keys.SEGMENT_PREFIX) :].split("_")
    if len(parts) == 2 and parts[1].endswith(keys.LOCK_SUFFIX):
        deployment = parts[1][: -len(keys.LOCK_SUFFIX)]
        return ShmFile(name, parts[0], deployment, None, False) if len(deployment) == 8 else None
    if len(parts) != 3 or len(parts[1]) != 8:
        return None
    object_id, _, part = parts[2].partition(keys.PART_MARK)
    return ShmFile(name, parts[0], parts[1], object_id, bool(_) and part == "")


def scan(shm_dir: Path, deployment: str | None = None, node: str | None = None) -> Iterator[ShmFile]:
    """Ferry files in `shm_dir` (of one deployment and/or node), with size and mtime. Housekeeping only."""
    with os.scandir(shm_dir) as entries:
        for entry in entries:
            parsed = parse_name(entry.name)
            if parsed is None or (deployment and parsed.deployment != deployment) or (node and parsed.node != node):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            yield ShmFile(
                parsed.name,
                parsed.node,
                parsed.deployment,
                parsed.object_id,
                parsed.partial,
                stat.st_size,
                stat.st_mtime,
            )


# --- locks ---
def range_lock(fd: int, start: int, exclusive: bool = True, wait: bool = True) -> bool:
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, 0, start, 1, 0))
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def range_unlock(fd: int, start: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_UNLCK, 0, start, 1, 0))


def object_lock_byte(object_id: str) -> int:
    return FIRST_OBJECT_BYTE + int(object_id[:12], 16) % OBJECT_LOCK_RANGE


# --- the host ledger ---
class Ledger:
    """The bytes each node on this host holds in /dev/shm, as numbers, under one flock."""

    def __init__(self, shm_dir: Path) -> None:
        self.path = shm_dir / f"{keys.HOST_LEDGER}-{os.getuid()}"

    @contextmanager
    def edit(self) -> Iterator[dict[str, dict[str, int | str]]]:
        """The ledger's entries, locked; changes made to the dict are written back."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = _parse(_read_all(fd))
            before = json.dumps(entries, sort_keys=True)
            yield entries
            for key in [key for key, entry in entries.items() if not int(entry.get("bytes", 0))]:
                del entries[key]  # an empty entry says nothing: without this, every node id ever killed stays
            after = json.dumps(entries, sort_keys=True)
            if after != before:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, after.encode())
        finally:
            os.close(fd)  # releases the flock

    def read(self) -> dict[str, dict[str, int | str]]:
        """The entries as they are now (a shared lock, no write-back)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return _parse(_read_all(fd))
        finally:
            os.close(fd)


def _read_all(fd: int) -> bytes:
    raw = b""
    while chunk := os.read(fd, 1 << 16):
        raw += chunk
    return raw


def _parse(raw: bytes) -> dict[str, dict[str, int | str]]:
    """The ledger's entries; an unreadable file counts as empty (a torn write cannot happen under the lock,
    so only a hand-edited file is rebuilt)."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def ledger_entry(entries: dict[str, dict[str, int | str]], node: str, deployment: str) -> dict[str, int | str]:
    return entries.setdefault(
        f"{node}_{deployment}", {"node": node, "deployment": deployment, "bytes": 0}
    )


def ledger_total(entries: dict[str, dict[str, int | str]]) -> int:
    return sum(int(e["bytes"]) for e in entries.values())


def holders_text(entries: dict[str, dict[str, int | str]]) -> str:
    held = sorted(
        ((int(e["bytes"]), str(e["node"]), str(e["deployment"])) for e in entries.values() if int(e["bytes"])),
        reverse=True,
    )
    if not held:
        return "no node holds any"
    return ", ".join(f"node {node} (deployment {dep}) {size} bytes" for size, node, dep in held)
