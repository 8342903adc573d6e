"""Periodic jobs on real nodes: each tick runs once with three nodes and after one is SIGKILLed; missed ticks.

Counted per tick: a tick's job id is `cron-<schedule>-<tick>`, the schedule's `fired` counter moves only
when FIRE's gate lets a node through, and the task records each run in a Redis list.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from shared import keys, schedules
from shared.models import JobStatus
from tests.support import NodeProcess, wait_for

CRON_MODULES = "tests.tasks_for_tests,tests.cron_tasks_for_tests"
CODE = "code-every-second"  # declared in tests/cron_tasks_for_tests.py: every second, records into test:cron:code


def tick_jobs(conn: redis.Redis, name: str) -> list[int]:
    return sorted(int(k.decode().rsplit("-", 1)[1]) for k in conn.scan_iter(keys.job(f"cron-{name}-*")))


def fired(conn: redis.Redis, name: str) -> int:
    return int(conn.hget(keys.schedule_state(name), "fired") or 0)


def statuses(conn: redis.Redis, name: str) -> list[JobStatus]:
    return [JobStatus.parse(conn.hget(keys.job(f"cron-{name}-{t}"), "status")) for t in tick_jobs(conn, name)]


@pytest.mark.slow
def test_each_tick_runs_once_with_three_nodes_and_after_one_is_killed(
    env: dict[str, str], conn: redis.Redis, start_node: Callable[..., NodeProcess]
) -> None:
    cron_env = {**env, "FERRY_TASK_MODULES": CRON_MODULES}
    nodes = [start_node(processes=1, env=cron_env) for _ in range(3)]
    wait_for(lambda: fired(conn, CODE) >= 3, 20, what="three ticks with three nodes")
    nodes[0].kill()  # SIGKILL, supervisor and worker together, while the schedule runs
    after_kill = fired(conn, CODE)
    wait_for(lambda: fired(conn, CODE) >= after_kill + 3, 20, what="three more ticks after a node was killed")
    schedules.set_paused(conn, CODE, True)
    # a poll under way may still fire one tick; every fired tick's job then finishes:
    wait_for(lambda: all(s == JobStatus.FINISHED for s in statuses(conn, CODE))
             and len(tick_jobs(conn, CODE)) == fired(conn, CODE), 20, what="every tick's job to finish")
    ticks = tick_jobs(conn, CODE)
    assert len(ticks) >= 6
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), f"a tick was skipped: {ticks}"
    assert fired(conn, CODE) == len(ticks)  # FIRE's gate let exactly one node through per tick
    runs = Counter(job.decode() for job in conn.lrange("test:cron:code:jobs", 0, -1))
    assert sorted(runs) == sorted(f"cron-{CODE}-{t}" for t in ticks)  # each tick's job ran
    again = [job for job, n in runs.items() if n > 1]  # at-least-once: only a job its killed node was running
    assert len(again) <= 1 and all(int(conn.hget(keys.job(job), "number_of_retries") or 0) >= 1 for job in again), runs
    assert not any(b"Traceback" in n.output().encode() for n in nodes[1:])


def test_missed_ticks_follow_each_schedules_policy_when_a_node_starts(
    env: dict[str, str], conn: redis.Redis, start_node: Callable[..., NodeProcess]
) -> None:
    since = time.time() - 30  # as if added 30 s ago while no node ran
    for name, policy in (("late-latest", "latest"), ("late-skip", "skip"), ("late-all", "all")):
        schedules.add(conn, schedules.parse({"name": name, "task": "test.cron_mark", "every_s": 1,
                                             "args": {"label": name}, "catch_up": policy, "catch_up_max": 5}))
        conn.hset(keys.schedule_state(name), "since", since)
    start_node(processes=1, env={**env, "FERRY_TASK_MODULES": CRON_MODULES, "FERRY_CRON_GRACE_S": "2"})
    wait_for(lambda: all(tick_jobs(conn, n) for n in ("late-latest", "late-skip", "late-all")), 20,
             what="the first poll of the node")
    first = {name: tick_jobs(conn, name)[0] for name in ("late-latest", "late-skip", "late-all")}
    # one poll decided all three: latest ran the most recent missed tick, skip none, all the 5 most recent
    assert first["late-latest"] == first["late-skip"] - 1
    assert first["late-all"] == first["late-latest"] - 4
    assert first["late-all"] > since + 20  # nothing older than catch_up_max allows
    assert int(conn.hget(keys.schedule_state("late-skip"), "skipped") or 0) >= 1
