"""Interrupting the running task from a signal: its timeout (SIGALRM) and a cancel request (SIGUSR1).

Worker processes run tasks in their main thread and keep it (no fork per job), so a timeout is the
signal-based death penalty RQ's SimpleWorker uses. The handler raises only while a task is running.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from shared.errors import JobCanceled, JobTimeout

PENDING_KEPT = 256  # cancel requests remembered for jobs not running yet (a few in flight to this process)


class Interrupts:
    def __init__(self) -> None:
        self._armed_job: str | None = None
        self._timeout_s = 0.0
        self._cancel_for: str | None = None
        self._pending: dict[str, None] = {}  # canceled before they started: `arm` refuses them
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(signal.SIGUSR1, self._on_cancel)

    def arm(self, job_id: str, timeout_s: float) -> None:
        """From here until `disarm`, JobTimeout after `timeout_s` and JobCanceled on a cancel request are raised.
        A job whose cancel came before it started (while it was handed to this process) raises JobCanceled here.

        A pair of calls in try/finally rather than a context manager: this runs for every job.
        """
        self._timeout_s = timeout_s
        self._cancel_for = None
        self._armed_job = job_id  # before the check: a request from now on signals, one before it is pending
        if job_id in self._pending:
            self._armed_job = None
            del self._pending[job_id]
            raise JobCanceled("job was canceled before it started")
        signal.setitimer(signal.ITIMER_REAL, timeout_s)

    def cancel_requested(self, job_id: str) -> bool:
        """A cancel for `job_id` came before it started (it is refused at `arm` anyway; this lets the worker
        refuse it before reading its data)."""
        return job_id in self._pending

    def forget(self, job_id: str) -> None:
        """The job ended (or was given back): a cancel request for it no longer matters."""
        self._pending.pop(job_id, None)

    def disarm(self) -> None:
        self._armed_job = None
        signal.setitimer(signal.ITIMER_REAL, 0)

    @contextmanager
    def armed(self, job_id: str, timeout_s: float) -> Iterator[None]:
        """Run the body with a deadline; raises JobTimeout or JobCanceled inside it."""
        self.arm(job_id, timeout_s)
        try:
            yield
        finally:
            self.disarm()

    def request_cancel(self, job_id: str) -> bool:
        """Called from another thread: interrupt the main thread if it runs `job_id` (True); else remember the
        request, so the job is canceled when it starts (False)."""
        self._pending[job_id] = None
        while len(self._pending) > PENDING_KEPT:
            del self._pending[next(iter(self._pending))]
        if self._armed_job != job_id:
            return False
        self._cancel_for = job_id
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        return True

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._armed_job is not None:
            raise JobTimeout(f"job exceeded its timeout of {self._timeout_s:g}s and was interrupted")

    def _on_cancel(self, signum: int, frame: FrameType | None) -> None:
        if self._armed_job is not None and self._cancel_for == self._armed_job:
            raise JobCanceled("job was canceled while running")
