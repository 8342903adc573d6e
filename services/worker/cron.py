"""The node's cron loop: fires the due ticks of every schedule, exactly once across all nodes, with no leader.

The supervisor calls `poll()` from its loop (and waits no longer than `wait_s()` so a tick is fired
within milliseconds of its time). Every live node does the same; `FIRE` (shared/lifecycle/lua_cron.py)
lets exactly one of them enqueue each tick, so losing any node loses nothing: the others fire the next
tick as usual. The policy for missed ticks (no node fired them within FERRY_CRON_GRACE_S) is the
schedule's `catch_up`; see shared/schedules.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from shared import keys, schedules
from shared.errors import FerryError
from shared.lifecycle import lua_cron
from shared.models import JobRequest
from shared.schedules import Schedule, State
from shared.settings import Settings
from shared.submission import enqueue_call
from shared.tasks import TaskRegistry

log = logging.getLogger("ferry.cron")

NEXT_TICK_CACHE = 10_000  # entries before the next-tick cache is emptied
ON_TIME_MAX = 1000  # ticks within the grace fired in one pass (a 1-second schedule and a long grace)


class CronLoop:
    """One node's view: the run-time schedules in Redis plus the ones its own code declares."""

    def __init__(self, conn: redis.Redis, settings: Settings, node_id: str, registry: TaskRegistry) -> None:
        self.conn = conn
        self.settings = settings
        self.node_id = node_id
        self.registry = registry
        self.declared = schedules.declared(registry)
        for name in schedules.orphans(registry):
            log.warning("schedule %s is declared on a function that is not a registered task: it never runs "
                        "(put @schedule on a function that also has @task)", name)
        self._fire = conn.register_script(lua_cron.FIRE)
        self._skip = conn.register_script(lua_cron.SKIP)
        self.next_due = 0.0  # unix time of the earliest next tick seen by the last poll
        self.next_publish = 0.0
        self.failed: set[tuple[str, float]] = set()  # ticks whose fire raised: logged once
        self.clock_offset_s = 0.0  # Redis's clock minus this machine's, at the last poll
        # (name, cron, every_s, tz, baseline) -> the next tick after it: nothing to compute before then
        self._next_tick: dict[tuple[str, str | None, int | None, str, float], float] = {}

    def wait_s(self, default: float) -> float:
        """How long the supervisor may wait before the next poll."""
        return max(0.005, min(default, self.next_due - (time.time() + self.clock_offset_s)))

    def poll(self, now: float | None = None) -> None:
        """Fire what is due at `now` (Redis's clock; tests pass one); publish this node's code-declared schedules
        once per heartbeat interval. One round trip when nothing is due."""
        if time.monotonic() >= self.next_publish:
            schedules.publish(self.conn, self.node_id, self.declared, self.settings.abandoned_after_s)
            self.next_publish = time.monotonic() + self.settings.heartbeat_interval_s
        pipe = self.conn.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(keys.SCHEDULES)
        pipe.smembers(keys.SCHEDULES_PAUSED)
        (seconds, micros), stored, paused = pipe.execute()
        clock = seconds + micros / 1e6  # every node reads ticks on Redis's clock: no skew between machines
        self.clock_offset_s = clock - time.time()
        now = clock if now is None else now
        active = {s.name: s for s in self.declared}
        active.update(schedules.parse_stored(stored))  # a run-time schedule wins a name clash
        live = [s for s in active.values() if s.enabled and s.name.encode() not in paused]
        next_due = now + 60.0
        if len(self._next_tick) > NEXT_TICK_CACHE:
            self._next_tick.clear()
        for item, state in zip(live, schedules.states(self.conn, [s.name for s in live]), strict=True):
            baseline = state.baseline()
            if baseline is None:  # first sight of a code-declared schedule: it counts from now
                self.conn.hsetnx(keys.schedule_state(item.name), "since", now)
                baseline = now
            key = (item.name, item.cron, item.every_s, item.tz, baseline)
            next_tick = self._next_tick.get(key)
            if next_tick is None or now >= next_tick:  # something may be due: the tick times are computed
                try:
                    self._fire_due(item, state, baseline, now)
                except redis.RedisError:
                    raise  # the supervisor's outage handling
                except Exception:  # a bug must not stop the supervisor (or the other schedules)
                    log.exception("schedule %s: could not fire its due ticks", item.name)
                next_tick = self._next_tick[key] = item.next_after(max(now, baseline))
            next_due = min(next_due, next_tick)
        self.next_due = next_due

    def _fire_due(self, item: Schedule, state: State, baseline: float, now: float) -> None:
        grace_start = now - self.settings.cron_grace_s
        on_time = item.ticks_back(now, max(baseline, grace_start), ON_TIME_MAX)
        missed: list[float] = []
        if baseline < grace_start:
            limit = item.catch_up_max if item.catch_up == "all" else 1
            missed = item.ticks_back(grace_start, baseline, limit)
        if missed:
            if item.catch_up == "skip":
                self._skip(keys=[keys.schedule_state(item.name)], args=[missed[0], len(missed)])
                log.info("schedule %s: missed tick %s skipped (catch_up=skip)", item.name, schedules.iso(missed[0]))
                missed = []
            elif item.catch_up == "latest":
                missed = missed[:1]
        for tick in sorted(missed) + sorted(on_time):
            self._fire_one(item, tick, late=tick <= grace_start)

    def _fire_one(self, item: Schedule, tick: float, late: bool) -> None:
        job_id = item.job_id(tick)
        try:
            script_keys, script_args = self._enqueue_call(item, job_id)
            reply = self._fire(keys=[*script_keys, keys.schedule_state(item.name)], args=[*script_args, int(tick)])
        except FerryError as exc:  # e.g. the args no longer fit the task's code: record the tick as not run
            if (item.name, tick) not in self.failed:
                self.failed.add((item.name, tick))
                log.error("schedule %s: tick %s not run: %s", item.name, schedules.iso(tick), exc.message)
            self._skip(keys=[keys.schedule_state(item.name)], args=[int(tick), 1])
            return
        if reply[0]:
            log.info("schedule %s: tick %s%s -> job %s (%s)", item.name, schedules.iso(tick),
                     " (missed, caught up)" if late else "", job_id, item.task,
                     extra={"job_id": job_id, "task": item.task, "node": self.node_id})

    def _enqueue_call(self, item: Schedule, job_id: str) -> tuple[list[str], list[Any]]:
        """ENQUEUE's keys and args for this tick's job: the submit path's, with the tick's own job id."""
        request = JobRequest(task=item.task, args=item.args, queue=item.queue, allow_unserved=True)
        args = item.args
        if item.task in self.registry.names():  # this node has the code: the worker's own validation
            args = self.registry.get(item.task).validate(item.args).model_dump(mode="json", exclude_unset=True)
        script_keys, script_args = enqueue_call(request, args, self.settings)
        script_keys[0], script_args[0] = keys.job(job_id), job_id  # the tick's id, the same on every node
        return script_keys, script_args
