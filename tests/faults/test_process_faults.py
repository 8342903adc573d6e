"""Fault suite: worker processes, whole nodes and supervisors SIGKILLed while jobs run (issue 11).

Each test prints one FIGURES line (also repeated in pytest's terminal summary): jobs submitted, finished,
failed, lost, bodies run twice, leaked segments, elapsed. Body executions are counted from the ledger file the
`test.ledger` task appends to, independently of Redis.
"""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest
import redis

from shared import job_metrics, keys
from shared.client import Client
from shared.settings import Settings
from tests.faults.conftest import (
    FINAL,
    Ledger,
    describe_stuck,
    job_states,
    node_processes,
    wait_until_final,
)
from tests.support import shm_files, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# ferry:metrics requeue reasons (shared/job_metrics.py): the supervisor at a worker's death, the reaper.
WORKER_DIED, NODE_DIED = job_metrics.REQUEUE_REASONS[:2]


def _submit_ledger_jobs(
    client: Client, count: int, seconds: float, prefix: str = "", **options: object
) -> dict[str, str]:
    """Submit `count` ledger jobs; job id -> token."""
    tokens = [f"{prefix}{i}" for i in range(count)]
    submitted = client.submit_many([{"task": "test.ledger", "args": {"token": t, "seconds": seconds}, **options}
                                    for t in tokens])
    return {s.id: t for s, t in zip(submitted, tokens, strict=True)}


def _tally(states: dict[str, str | None]) -> tuple[int, int, list[str]]:
    finished = sum(1 for s in states.values() if s == "finished")
    failed = sum(1 for s in states.values() if s == "failed")
    lost = [j for j, s in states.items() if s not in FINAL]
    return finished, failed, lost


JOBS = 1000
KILLS = 20
PROCESSES = 4
BODY_S = 0.02


@pytest.mark.timeout(300)
def test_1000_jobs_with_20_worker_processes_sigkilled_at_random_lose_nothing_and_run_no_body_twice(
    client: Client, start_node, conn: redis.Redis, ledger: Ledger, figures
) -> None:
    node = start_node(processes=PROCESSES)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    began = time.monotonic()
    token_of = _submit_ledger_jobs(client, JOBS, BODY_S)
    ids = list(token_of)

    killed: list[int] = []
    kill_times: dict[int, float] = {}
    deadline = time.monotonic() + 120
    while len(killed) < KILLS and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.05, 0.25))  # random spacing of the faults (the load, not a synchronisation)
        states = job_states(conn, ids)
        if all(s in FINAL for s in states.values()):
            break
        registered = set(node.worker_pids(conn))
        victims = [p.pid for p in node_processes(node.proc.pid) if p.pid in registered and p.pid not in killed]
        if victims:
            victim = rng.choice(victims)
            kill_times[victim] = time.time()
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    states, _ = wait_until_final(conn, ids, timeout=120)
    elapsed = time.monotonic() - began
    ledger.read()
    finished, failed, lost = _tally(states)
    tokens = list(token_of.values())
    twice = ledger.twice(tokens, kill_times)
    killed_mid_job = sum(ledger.killed_mid_job(t) for t in tokens)
    killed_after_body = sum(ledger.killed_before_recording(t, kill_times) for t in tokens)
    reruns = sum(max(0, len(ledger.starts.get(t, [])) - 1) for t in tokens)
    recovery = _recovery_times(ledger, tokens, kill_times)
    by_supervisor, by_reaper = _requeues(conn, WORKER_DIED), _requeues(conn, NODE_DIED)
    uncharged = _retries_without_a_run(conn, token_of, ledger, kill_times)
    node.terminate()
    leaked = shm_files(node.node_id)
    figures(submitted=len(ids), finished=finished, failed=failed, lost=len(lost), bodies_run_twice=len(twice),
            killed_mid_body=killed_mid_job, killed_right_after_body=killed_after_body,
            bodies_rerun_after_a_kill=reruns, kill_to_rerun_done_median_s=_median(recovery),
            kill_to_rerun_done_max_s=max(recovery, default=None), requeued_at_worker_death=by_supervisor,
            requeued_by_reaper=by_reaper, retries_charged_to_jobs_not_started=len(uncharged),
            kills=len(killed), leaked_segments=len(leaked),
            elapsed_s=f"{elapsed:.1f}", seed=seed)

    assert len(killed) == KILLS, f"the run ended (or timed out) after only {len(killed)} kills"
    assert not lost, (f"{len(lost)} jobs never reached a final state:\n{describe_stuck(conn, lost, ledger, token_of)}"
                      f"\nnode log (tail):\n{node.output()[-3000:]}")
    assert failed == 0, [(j, conn.hget(keys.job(j), "ferry_error")) for j, s in states.items() if s == "failed"][:5]
    assert not twice, "bodies run twice, process not killed mid-job (token: [(line, pid, killed?)]): " + "; ".join(
        f"{t}: {[(kind, pid, pid in killed) for kind, pid in ledger.order[t]]}" for t in twice[:10])
    assert by_reaper == 0, (
        f"{by_reaper} executions of killed worker processes were left to the reaper (abandonment deadline, "
        f"{NODE_DIED}) instead of being requeued by their live supervisor at the death")
    assert not leaked


def _recovery_times(ledger: Ledger, tokens: list[str], kill_times: dict[int, float]) -> list[float]:
    """For each job whose body a kill cut short: seconds from that kill to the end of its next body (a figure)."""
    times = []
    for token in tokens:
        ends = ledger.end_times.get(token, [])
        for pid in ledger.starts.get(token, []):
            if pid in kill_times and pid not in ledger.ends.get(token, []):
                later = [when for when in ends if when > kill_times[pid]]
                if later:
                    times.append(round(min(later) - kill_times[pid], 2))
    return times


def _retries_without_a_run(conn: redis.Redis, token_of: dict[str, str], ledger: Ledger,
                           kill_times: dict[int, float]) -> list[str]:
    """Jobs charged more retries than they had executions cut short by a kill (a figure, not asserted: a kill
    between a claim and the body's first line legitimately charges one, though that window is microseconds)."""
    pipe = conn.pipeline(transaction=False)
    for job_id in token_of:
        pipe.hget(keys.job(job_id), "number_of_retries")
    charged = dict(zip(token_of, (int(v or 0) for v in pipe.execute()), strict=True))
    return [j for j, t in token_of.items()
            if charged[j] > ledger.killed_mid_job(t) + ledger.killed_before_recording(t, kill_times)]


def _requeues(conn: redis.Redis, reason: str) -> int:
    """Executions given back to a queue for `reason`, summed over queues and tasks (ferry:metrics)."""
    counters = conn.hgetall(job_metrics.METRICS_KEY)
    return sum(int(v) for k, v in counters.items()
               if k.decode().startswith("requeued" + job_metrics.SEP) and k.decode().endswith(job_metrics.SEP + reason))


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


ABANDONED_AFTER_S = 3
REAP_INTERVAL_S = 0.5
NODE_JOBS = 400
NODE_BODY_S = 0.05
# What the deadline ("the abandonment deadline plus one reaper period", from the kill) does not include:
# starting the replacement node's Python processes and running the job's body, on a shared 2-core machine.
RESTART_AND_RUN_SLACK_S = 2.0


@pytest.mark.timeout(180)
def test_a_node_sigkilled_mid_run_and_restarted_loses_nothing_and_its_jobs_finish_within_the_abandonment_deadline(
    client: Client, start_node, conn: redis.Redis, ledger: Ledger, settings: Settings, figures
) -> None:
    assert settings.abandoned_after_s == ABANDONED_AFTER_S and settings.reap_interval_s == REAP_INTERVAL_S
    node = start_node(processes=2)
    began = time.monotonic()
    token_of = _submit_ledger_jobs(client, NODE_JOBS, NODE_BODY_S)
    ids = list(token_of)
    wait_for(lambda: len(ledger.read().ends) >= 40, timeout=60, what="40 jobs to finish before the kill")

    pids = [p.pid for p in node_processes(node.proc.pid)]
    kill_times = dict.fromkeys(pids, time.time())
    node.kill()  # supervisor and worker processes at once (its process group): nobody settles their jobs
    killed_at = time.monotonic()
    orphans = sorted({m.decode().split(":")[0] for m in conn.zrange(keys.started("default"), 0, -1)})
    backlog = conn.llen(keys.queue("default"))
    start_node(node_id=node.node_id, processes=2)  # same id: it sweeps the old run's memory and registrations

    orphan_states, orphan_done = wait_until_final(conn, orphans, timeout=60)
    late = {j: round(orphan_done[j] - killed_at, 2) if j in orphan_done else None for j in orphans}
    states, _ = wait_until_final(conn, ids, timeout=90)
    elapsed = time.monotonic() - began
    ledger.read()
    finished, failed, lost = _tally(states)
    twice = ledger.twice(list(token_of.values()), kill_times)
    slowest = max((v for v in late.values() if v is not None), default=None)
    figures(submitted=len(ids), finished=finished, failed=failed, lost=len(lost), bodies_run_twice=len(twice),
            orphaned_by_kill=len(orphans), backlog_at_kill=backlog, requeued_by_reaper=_requeues(conn, NODE_DIED),
            orphans_done_after_kill_s=slowest,
            leaked_segments=len(shm_files(node.node_id)), elapsed_s=f"{elapsed:.1f}")

    assert orphans, "no job was running when the node was killed"
    assert not lost, f"{len(lost)} jobs never reached a final state:\n{describe_stuck(conn, lost, ledger, token_of)}"
    assert failed == 0
    assert not twice, f"bodies run twice, not explained by the kill: {[(t, ledger.order[t]) for t in twice[:10]]}"
    bound = ABANDONED_AFTER_S + REAP_INTERVAL_S + RESTART_AND_RUN_SLACK_S
    too_late = {j: t for j, t in late.items() if t is None or t > bound}
    assert not too_late, (f"jobs of the killed node finished later than {bound}s after the kill "
                          f"(abandonment {ABANDONED_AFTER_S}s + reap {REAP_INTERVAL_S}s + {RESTART_AND_RUN_SLACK_S}s "
                          f"restart slack), with {backlog} jobs queued behind them: {too_late}")


SUPERVISOR_EXIT_MARGIN_S = 1.0


@pytest.mark.timeout(60)
def test_no_worker_process_survives_its_supervisor_sigkilled_by_a_heartbeat_interval(
    client: Client, start_node, conn: redis.Redis, settings: Settings, ledger: Ledger, figures
) -> None:
    node = start_node(processes=2)
    busy = client.submit("test.ledger", {"token": "busy", "seconds": 30})  # one process mid-job, one idle
    wait_for(lambda: client.status(busy).status == "started", what="the long job to start")
    registered = set(node.worker_pids(conn))
    descendants = node_processes(node.proc.pid)
    workers = [p for p in descendants if p.pid in registered]
    others = [p for p in descendants if p.pid not in registered]  # multiprocessing's resource tracker
    assert len(workers) == 2, (registered, descendants)

    os.kill(node.proc.pid, signal.SIGKILL)  # the supervisor only, not its group
    node.proc.wait(10)
    killed_at = time.monotonic()
    deadline = killed_at + settings.heartbeat_interval_s + SUPERVISOR_EXIT_MARGIN_S
    survivors: list[psutil.Process] = list(workers)
    while survivors and time.monotonic() < deadline:
        survivors = [p for p in survivors if _alive(p)]
        time.sleep(0.01)
    survivors = [p for p in survivors if _alive(p)]
    gone_after = time.monotonic() - killed_at
    # The node's other processes (the resource tracker) exit once no worker holds their pipe any more.
    helpers_left = [p for p in others if _alive(p)]
    if not survivors:
        end = time.monotonic() + 5
        while helpers_left and time.monotonic() < end:
            helpers_left = [p for p in helpers_left if _alive(p)]
            time.sleep(0.02)
    figures(workers=len(workers), survivors=len(survivors), other_node_processes_left=len(helpers_left),
            waited_s=f"{gone_after:.2f}", deadline_s=settings.heartbeat_interval_s + SUPERVISOR_EXIT_MARGIN_S,
            busy_job_status=conn.hget(keys.job(busy), "status"))

    assert not survivors, (
        f"{len(survivors)} worker processes outlived their SIGKILLed supervisor (pid {node.proc.pid}) by more than "
        f"{settings.heartbeat_interval_s}s heartbeat + {SUPERVISOR_EXIT_MARGIN_S}s: "
        + "; ".join(f"pid {p.pid} ppid {_ppid(p)} {' '.join(_cmdline(p))[:80]}" for p in survivors))
    assert not helpers_left, [f"pid {p.pid} {' '.join(_cmdline(p))[:80]}" for p in helpers_left]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:
        return []
