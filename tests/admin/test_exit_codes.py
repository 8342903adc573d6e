"""Exit codes: one table (shared/errors.py), told the same by `ferry --help` and README, and given as documented."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_NOT_FOUND, EXIT_USAGE
from tests.admin.helpers import one_line
from tests.support import REPO


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.admin.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_readme_and_help_list_exactly_the_exit_codes_the_cli_uses(cli) -> None:
    readme = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", readme, re.MULTILINE))
    assert {int(code) for code in table} == set(EXIT_CODES), table
    shown = " ".join(cli("--help").stdout.split())
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {' '.join(meaning.split())}" in shown


def test_ferry_up_on_a_busy_port_exits_2_not_3(env: dict[str, str], busy_port: int) -> None:
    started = _ferry(env, "up", "--no-demo", "--host", "127.0.0.1", "--port", str(busy_port))
    assert started.returncode == EXIT_USAGE, started.stderr
    line = one_line(started.stderr)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{busy_port} (")
    assert "pass --port with a free port" in line


def test_ferry_producer_on_a_busy_port_exits_2_not_3(env: dict[str, str], busy_port: int) -> None:
    started = _ferry(env, "producer", "--host", "127.0.0.1", "--port", str(busy_port))
    assert started.returncode == EXIT_USAGE, started.stderr
    assert one_line(started.stderr).startswith(f"error: cannot listen on 127.0.0.1:{busy_port} (")


def test_a_bug_exits_70_with_its_traceback_so_that_exit_1_keeps_meaning_the_job_failed(capsys) -> None:
    from shared.cli import handle_errors

    @handle_errors
    def broken() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(SystemExit) as exited:
        broken()
    assert exited.value.code == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.rstrip().splitlines()[-1] == "error: unexpected RuntimeError; please report it with the traceback above"


def test_a_ferry_error_exits_with_its_code_as_one_line(capsys) -> None:
    from shared.cli import handle_errors
    from shared.errors import JobNotFound

    @handle_errors
    def missing() -> None:
        raise JobNotFound("no job abc (it may have expired)")

    with pytest.raises(SystemExit) as exited:
        missing()
    assert exited.value.code == EXIT_NOT_FOUND
    assert capsys.readouterr().err == "error: no job abc (it may have expired)\n"
