"""A cancel request that reaches a worker process before its job starts is not lost.

Interrupts owns SIGALRM and SIGUSR1 in a worker process; here it runs in a child interpreter of its own, so
pytest's own alarm (pytest-timeout) is left alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import signal
    from services.worker.interrupts import Interrupts
    from shared.errors import JobCanceled

    interrupts = Interrupts()

    # the request comes while the job is handed over (dispatched or popped, not armed yet)
    assert interrupts.request_cancel("job-a") is False
    try:
        interrupts.arm("job-a", 30)
        raise AssertionError("a job canceled before it started was armed")
    except JobCanceled as exc:
        assert "before it started" in str(exc), exc
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the refusal left no timer behind
    interrupts.arm("job-a", 30)  # a request is used once: a later run of the same job starts
    interrupts.disarm()

    # a request for a job that ended (or was given back) is forgotten
    interrupts.request_cancel("job-b")
    interrupts.forget("job-b")
    interrupts.arm("job-b", 30)
    interrupts.disarm()

    # the running job is interrupted at once
    interrupts.arm("job-c", 30)
    try:
        assert interrupts.request_cancel("job-c") is True
        for _ in range(10_000_000):
            pass
        raise AssertionError("the running job was not interrupted")
    except JobCanceled as exc:
        assert "while running" in str(exc), exc
    finally:
        interrupts.disarm()
    print("ok")
''')


def test_cancel_requests_reach_the_job_whether_it_runs_yet_or_not() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
