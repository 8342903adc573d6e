"""Segments: pages are reserved before they are written, so a full /dev/shm is an error, never a SIGBUS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO

# Run in a private mount namespace whose /dev/shm is a 16 MB tmpfs: the segment is made sparse (as
# when two fetches pass the free-space check together), then reserved piece by piece while written.
SCRIPT = """
from shared.errors import ShmFull
from shared.objects import segments
shm = segments._open("ferry_probe_1", create=True, size=32 * 1024 * 1024)
reservation = segments.Reservation(shm, "ferry_probe_1", 32 * 1024 * 1024, segments.SHM_DIR).start()
written = 0
try:
    for end in range(8 * 1024 * 1024, 32 * 1024 * 1024 + 1, 8 * 1024 * 1024):
        reservation.wait_through(end)
        shm.buf[written:end] = b"x" * (end - written)
        written = end
except ShmFull as exc:
    print("SHMFULL", written, exc)
reservation.stop()
shm.close()
segments.unlink("ferry_probe_1", segments.SHM_DIR)
print("ALIVE")
"""


def test_a_reservation_that_runs_out_of_space_raises_before_the_writer_touches_the_pages() -> None:
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.fail("this test needs root and mount namespaces (unshare)")
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=16m tmpfs /dev/shm && exec {sys.executable} -c '{SCRIPT}'"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr  # a SIGBUS would end it with -7
    lines = done.stdout.splitlines()
    assert lines[-1] == "ALIVE"
    written = int(lines[0].split()[1])
    assert lines[0].startswith("SHMFULL") and 0 < written <= 16 * 1024 * 1024
    assert "/dev/shm has only" in lines[0] and "shm_size" in lines[0]


def test_the_host_ledger_forgets_nodes_that_hold_nothing(tmp_path) -> None:
    """Killed nodes' ids would otherwise pile up in the host ledger, which every fetch reads and rewrites."""
    from shared.objects.shm import Ledger

    ledger = Ledger(tmp_path)
    with ledger.edit() as entries:
        entries["gone_0000aaaa"] = {"node": "gone", "deployment": "0000aaaa", "bytes": 0}
        entries["live_0000aaaa"] = {"node": "live", "deployment": "0000aaaa", "bytes": 4096}
    assert ledger.read() == {"live_0000aaaa": {"node": "live", "deployment": "0000aaaa", "bytes": 4096}}
