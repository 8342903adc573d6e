"""Fixtures for the `ferry` CLI: as a real subprocess (exit codes, stderr, tracebacks) or in-process (fast)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from click.testing import Result
from typer.testing import CliRunner

from services.admin.cli import app
from tests.support import REPO

Ferry = Callable[..., subprocess.CompletedProcess[str]]
Cli = Callable[..., Result]


@pytest.fixture()
def ferry(env: dict[str, str]) -> Ferry:
    """Run `ferry ARGS...` as a real process; `env_overrides` adds variables, `unset` removes them."""

    def run(*args: str, env_overrides: dict[str, str] | None = None, unset: tuple[str, ...] = (),
            timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**env, **(env_overrides or {})}
        for name in unset:
            environment.pop(name, None)
        return subprocess.run([sys.executable, "-m", "services.admin.cli", *args], env=environment, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, input=stdin)

    return run


@pytest.fixture()
def cli(env: dict[str, str]) -> Cli:
    """Invoke the CLI in this process (same code path, no interpreter start-up); stdout and stderr apart."""
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=stdin, catch_exceptions=False)

    return invoke

