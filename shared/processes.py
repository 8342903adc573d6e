"""Helpers for child processes that must never outlive their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (use as Popen's preexec_fn)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: the parent's own cleanup still runs
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (EPERM means it does, owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM a child and wait up to `grace_s` for it to exit; SIGKILL it if it has not."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
