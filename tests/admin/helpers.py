"""Helpers for the CLI tests."""

from __future__ import annotations

import json
from typing import Any

import psutil


def one_line(text: str) -> str:
    """The single line of `text`, failing the test if there are more (or none)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


def parse_json(text: str) -> Any:
    """stdout of a `--json` command: exactly one JSON document."""
    return json.loads(text)


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has NAME=VALUE: what a test's `ferry up` started, and anything they started."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(name) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def processes_with_cmdline(fragment: str) -> list[psutil.Process]:
    """Live processes whose command line contains `fragment`."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and fragment in " ".join(process.cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
