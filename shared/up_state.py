"""Where a running `ferry up` says which Redis it started: one small JSON file, written and removed by `ferry up`.

`ferry up` (services/admin/up.py) writes it once its private server answers and removes it when it stops;
`Settings.resolved_redis_url` reads it, so that `Client()` and plain `ferry` commands on the same machine find the
stack with no FERRY_REDIS_URL set. A file whose writer is gone counts as absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "up.json"


@dataclass(frozen=True)
class UpState:
    """What a running `ferry up` publishes: its pid, its Redis URL and its API's base URL."""

    pid: int
    redis_url: str
    api: str


def state_file(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def read(state_dir: Path) -> UpState | None:
    """The state of a live `ferry up`, or None when there is none (no file, a broken one, or its writer has exited)."""
    try:
        raw = json.loads(state_file(state_dir).read_text())
        state = UpState(pid=int(raw["pid"]), redis_url=str(raw["redis_url"]), api=str(raw.get("api", "")))
        os.kill(state.pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def write(state_dir: Path, redis_url: str, api: str) -> None:
    """Publish this process's stack, atomically (a reader never sees half a file)."""
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"pid": os.getpid(), "redis_url": redis_url, "api": api}))
    os.replace(temporary, path)


def forget(state_dir: Path) -> None:
    """Remove the file if this process wrote it (a later `ferry up` may have replaced it)."""
    path = state_file(state_dir)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
