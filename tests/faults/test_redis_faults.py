"""Fault suite: redis-server SIGKILLed and restarted from its AOF, or SIGSTOPped, while a node drains jobs (issue 11).

Body executions are counted from the `test.ledger` task's file, not from Redis: the point is what Redis may have
forgotten or done twice.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from shared import keys
from shared.client import Client
from shared.errors import FerryError
from shared.redis_conn import SOCKET_TIMEOUT_S
from shared.settings import Settings, get_settings
from tests.faults.conftest import (
    FINAL,
    KillableRedis,
    Ledger,
    describe_stuck,
    node_processes,
    result_entries,
    wait_until_final,
)
from tests.support import shm_files, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


class Submitter(threading.Thread):
    """Submits ledger jobs one at a time, as a producer would, through the outage; keeps only the acknowledged ones."""

    def __init__(self, settings: Settings, body_s: float, per_second: float) -> None:
        super().__init__(name="fault-submitter", daemon=True)
        self.client = Client(settings=settings)
        self.body_s = body_s
        self.interval = 1.0 / per_second
        self.acked: dict[str, str] = {}  # job id -> token: submit returned
        self.refused = 0  # submits that raised (not acknowledged)
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        attempt = 0
        try:
            while not self.halt.is_set():
                token = f"s{attempt}"
                attempt += 1
                try:
                    job_id = self.client.submit("test.ledger", {"token": token, "seconds": self.body_s})
                except (FerryError, redis.RedisError):
                    self.refused += 1
                    self.halt.wait(0.05)
                    continue
                with self.lock:
                    self.acked[job_id] = token
                self.halt.wait(self.interval)  # the submit rate (load shape), not a synchronisation
        finally:
            self.client.close()

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def stop(self) -> dict[str, str]:
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the submitter did not stop"
        return dict(self.acked)


def _fresh(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10)


REDIS_DOWN_ABANDONED_AFTER_S = 30  # longer than the outage: no running job is given up because of it
SUBMITS_PER_S = 150
BACKLOG = 500
BODY_S = 0.01


@pytest.mark.timeout(240)
@pytest.mark.parametrize("down_s", [2, 10])
def test_redis_sigkilled_and_restarted_from_its_aof_loses_no_acknowledged_job_and_no_worker(
    down_s: int, fault_redis: KillableRedis, env: dict[str, str], start_node, ledger: Ledger, figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env["FERRY_ABANDONED_AFTER_S"] = str(REDIS_DOWN_ABANDONED_AFTER_S)
    monkeypatch.setenv("FERRY_ABANDONED_AFTER_S", str(REDIS_DOWN_ABANDONED_AFTER_S))
    get_settings.cache_clear()
    settings = get_settings()
    conn = _fresh(fault_redis.url)
    node = start_node(processes=2)
    supervisor = node.proc.pid
    workers_before = sorted(p.pid for p in node_processes(supervisor))
    began = time.monotonic()
    submitter = Submitter(settings, BODY_S, SUBMITS_PER_S)
    submitter.start()
    try:
        wait_for(lambda: len(ledger.read().ends) >= 100, timeout=60, what="100 jobs to finish before the kill")
        with Client(settings=settings) as batch_client:  # a backlog in the queue when Redis dies
            batch = batch_client.submit_many([{"task": "test.ledger", "args": {"token": f"b{i}", "seconds": BODY_S}}
                                              for i in range(BACKLOG)])
        conn.close()
        fault_redis.kill()
        killed_at = time.monotonic()
        time.sleep(down_s)  # the fault itself: Redis stays down this long
        fault_redis.start()  # same port, same directory: it replays its AOF
        down_for = time.monotonic() - killed_at
        acked_at_restart = submitter.count()
        wait_for(lambda: submitter.count() >= acked_at_restart + 100, timeout=60,
                 what="100 more acknowledged submits after the restart")
    finally:
        token_of = submitter.stop()
    token_of.update({s.id: f"b{i}" for i, s in enumerate(batch)})
    conn = _fresh(fault_redis.url)
    ids = list(token_of)
    states, _ = wait_until_final(conn, ids, timeout=REDIS_DOWN_ABANDONED_AFTER_S + 15)
    elapsed = time.monotonic() - began
    ledger.read()
    lost = [j for j, s in states.items() if s not in FINAL]
    missing = [j for j, s in states.items() if s is None]
    failed = [j for j, s in states.items() if s == "failed"]
    finished = sum(1 for s in states.values() if s == "finished")
    twice = ledger.twice(list(token_of.values()))
    workers_after = sorted(p.pid for p in node_processes(supervisor))
    output = node.output()
    supervisor_alive = node.proc.poll() is None
    node.terminate()
    figures(down_s=f"{down_for:.1f}", submitted=len(ids), backlog_at_kill=BACKLOG,
            refused_during_outage=submitter.refused, finished=finished,
            failed=len(failed), lost=len(lost), missing_after_restart=len(missing), bodies_run_twice=len(twice),
            worker_pids_unchanged=workers_after == workers_before, tracebacks=output.count("Traceback"),
            outage_log_lines=_outage_lines(output),
            leaked_segments=len(shm_files(node.node_id)), elapsed_s=f"{elapsed:.1f}")

    assert down_for >= down_s
    assert supervisor_alive, f"the supervisor exited during the outage:\n{output[-3000:]}"
    assert workers_after == workers_before, (
        f"worker processes changed during the outage: before {workers_before}, after {workers_after}; node log:\n"
        + output[-3000:])
    assert not lost, (f"{len(lost)} acknowledged jobs were lost or never finished ({len(missing)} gone from Redis):\n"
                      + describe_stuck(conn, lost, ledger, token_of))
    assert not failed, [(j, conn.hget(keys.job(j), "ferry_error")) for j in failed[:5]]
    assert not twice, f"bodies run again after they completed: {[(t, ledger.order[t]) for t in twice[:5]]}"


def _outage_lines(output: str) -> int:
    """Node log lines about Redis being unreachable or timing out (a figure: the wording is the product's)."""
    return sum(1 for line in output.splitlines() if "unreachable" in line or "Timeout" in line or "is back" in line)


def _socket_timeout_s() -> tuple[float, str | None]:
    """The socket time-out workers use, and the setting that sets it (None: a constant in shared/redis_conn.py)."""
    for name in ("redis_socket_timeout_s", "socket_timeout_s", "redis_timeout_s"):
        if name in Settings.model_fields:
            return 3.0, f"FERRY_{name.upper()}"
    return SOCKET_TIMEOUT_S, None


STALL_JOBS = 1000
STALL_PROCESSES = 4
STALL_BODY_S = 0.005


@pytest.mark.timeout(300)
def test_redis_sigstopped_longer_than_the_socket_timeout_claims_and_records_each_job_once(
    fault_redis: KillableRedis, env: dict[str, str], start_node, ledger: Ledger, figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeout_s, setting = _socket_timeout_s()
    stall_s = timeout_s + 3
    abandoned_after_s = int(stall_s) + 60  # a stall shorter than the abandonment deadline gives up no running job
    overrides = {"FERRY_ABANDONED_AFTER_S": str(abandoned_after_s)}
    if setting:
        overrides[setting] = str(timeout_s)
    for name, value in overrides.items():
        env[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    conn = _fresh(fault_redis.url)
    node = start_node(processes=STALL_PROCESSES)
    supervisor = node.proc.pid
    workers_before = sorted(p.pid for p in node_processes(supervisor))
    began = time.monotonic()
    with Client(settings=settings) as client:
        tokens = [f"j{i}" for i in range(STALL_JOBS)]
        submitted = client.submit_many([{"task": "test.ledger", "args": {"token": t, "seconds": STALL_BODY_S},
                                         "retries": 0} for t in tokens])
    token_of = {s.id: t for s, t in zip(submitted, tokens, strict=True)}
    ids = list(token_of)
    wait_for(lambda: len(ledger.read().ends) >= 150, timeout=60, what="150 jobs to finish before the stall")
    conn.close()
    fault_redis.pause()
    stopped_at = time.monotonic()
    time.sleep(stall_s)  # the fault itself: Redis is stopped this long
    fault_redis.resume()
    stalled_for = time.monotonic() - stopped_at
    conn = _fresh(fault_redis.url)
    # Shorter than the abandonment deadline: a job that a lost claim left "started" stays stuck here, and is reported.
    states, _ = wait_until_final(conn, ids, timeout=45)
    elapsed = time.monotonic() - began
    ledger.read()
    entries = result_entries(conn, ids)
    lost = [j for j, s in states.items() if s not in FINAL]
    failed = [j for j, s in states.items() if s == "failed"]
    finished = sum(1 for s in states.values() if s == "finished")
    not_one_result = {j: n for j, n in entries.items() if n != 1}
    runs = {j: len(ledger.starts.get(t, [])) for j, t in token_of.items()}
    not_run_once = {j: n for j, n in runs.items() if n != 1 or ledger.completed(token_of[j]) != 1}
    failed_unrun = [j for j in failed if runs[j] == 0]
    workers_after = sorted(p.pid for p in node_processes(supervisor))
    output = node.output()
    node.terminate()
    figures(stall_s=f"{stalled_for:.1f}", socket_timeout_s=timeout_s, timeout_setting=setting or "none",
            submitted=len(ids), finished=finished, failed=len(failed), failed_unrun=len(failed_unrun),
            lost=len(lost), result_entries_not_1=len(not_one_result), bodies_not_run_once=len(not_run_once),
            worker_pids_unchanged=workers_after == workers_before, tracebacks=output.count("Traceback"),
            outage_log_lines=_outage_lines(output),
            leaked_segments=len(shm_files(node.node_id)), elapsed_s=f"{elapsed:.1f}")

    assert stalled_for > timeout_s
    assert not lost, (f"{len(lost)} jobs never reached a final state (claimed and dropped?):\n"
                      + describe_stuck(conn, lost, ledger, token_of))
    assert not failed_unrun, ("jobs failed without their body ever running: "
                              f"{[(j, conn.hget(keys.job(j), 'ferry_error')) for j in failed_unrun[:5]]}")
    assert not failed, [(j, conn.hget(keys.job(j), "ferry_error")) for j in failed[:5]]
    assert not not_one_result, f"result streams without exactly one entry: {list(not_one_result.items())[:10]}"
    assert not not_run_once, f"jobs whose body did not run exactly once: {list(not_run_once.items())[:10]}"
