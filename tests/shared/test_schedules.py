"""Schedules: parsing and clear errors, tick times in zones (DST), storage, and the FIRE gate with fixed clocks.

The cron loops here are real `CronLoop`s on a real Redis, driven with explicit `now` values, so the
missed-tick policies and the exactly-once gate are checked without waiting for a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import redis

from services.worker.cron import CronLoop
from shared import keys, schedules
from shared.client import Client
from shared.errors import Conflict, InvalidArgs, NotFound, TaskNotServed
from shared.schedules import Schedule
from shared.settings import Settings
from shared.tasks import TaskRegistry

PARIS = ZoneInfo("Europe/Paris")


def at(*parts: int, tz: ZoneInfo = PARIS, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=tz, fold=fold).timestamp()  # type: ignore[misc]


def wall(moment: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(moment, tz).isoformat()


def make(**fields: object) -> Schedule:
    return schedules.parse({"name": "s", "task": "test.cron_mark", **fields})


# --- tick times ---
def test_daily_tick_in_a_zone_is_at_its_wall_time() -> None:
    s = make(cron="0 3 * * *", tz="Europe/Paris")
    assert wall(s.next_after(at(2026, 6, 1, 12))) == "2026-06-02T03:00:00+02:00"
    assert s.next_after(at(2026, 6, 1, 12)) == datetime(2026, 6, 2, 1, tzinfo=UTC).timestamp()
    assert wall(s.next_after(at(2026, 12, 1, 12))) == "2026-12-02T03:00:00+01:00"


def test_a_wall_time_skipped_by_spring_forward_runs_once_at_the_jump() -> None:
    s = make(cron="30 2 * * *", tz="Europe/Paris")  # 2026-03-29: 02:00 CET -> 03:00 CEST
    first = s.next_after(at(2026, 3, 28, 12))
    assert wall(first) == "2026-03-29T03:00:00+02:00"
    assert wall(s.next_after(first)) == "2026-03-30T02:30:00+02:00"
    every_half_hour = make(cron="*/30 * * * *", tz="Europe/Paris")
    ticks, t = [], at(2026, 3, 29, 1, 10)
    for _ in range(4):
        t = every_half_hour.next_after(t)
        ticks.append(wall(t))
    # 02:00 and 02:30 do not exist: one tick at the jump (03:00), never two at one instant, never backwards
    assert ticks == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00",
                     "2026-03-29T04:00:00+02:00"]


def test_a_wall_time_repeated_by_fall_back_runs_once_at_its_first_occurrence() -> None:
    s = make(cron="30 2 * * *", tz="Europe/Paris")  # 2026-10-25: 03:00 CEST -> 02:00 CET
    first = s.next_after(at(2026, 10, 24, 12))
    assert wall(first) == "2026-10-25T02:30:00+02:00"
    assert wall(s.next_after(first)) == "2026-10-26T02:30:00+01:00"  # not 02:30 CET the same night
    # from inside the repeated hour, the ticks already passed in its first pass are not due again
    assert s.ticks_back(at(2026, 10, 25, 2, 40, fold=1), first - 1, 5) == [first]


def test_seconds_field_and_intervals() -> None:
    s = make(cron="*/10 * * * * *")
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert s.next_after(base + 1) == base + 10
    assert s.ticks_back(base + 35, base, 10) == [base + 30, base + 20, base + 10]
    every = make(every_s=60)
    assert every.next_after(base + 1) == base + 60  # whole multiples of every_s since the epoch: nodes agree
    assert every.ticks_back(base + 150, base + 30, 10) == [base + 120, base + 60]


@pytest.mark.parametrize(("fields", "message"), [
    ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *'"),
    ({"cron": "* * *"}, "it has 3 fields; give 5"),
    ({"cron": "0 3 * * *", "tz": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
    ({}, "give exactly one of cron"),
    ({"cron": "* * * * *", "every_s": 5}, "give exactly one of cron"),
    ({"every_s": 0}, "every_s"),
    ({"name": "no spaces", "every_s": 5}, "name"),
])
def test_bad_schedules_are_one_clear_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgs, match=None) as caught:
        make(**fields)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


# --- storage ---
def test_add_list_pause_delete(conn: redis.Redis, settings: Settings) -> None:
    assert schedules.add(conn, make(name="a", every_s=60))
    with pytest.raises(Conflict, match="exists"):
        schedules.add(conn, make(name="a", every_s=30))
    assert not schedules.add(conn, make(name="a", every_s=30), replace=True)
    [info] = schedules.listing(conn, now=1_000_005)
    assert (info.schedule.every_s, info.source, info.paused) == (30, "api", False)
    assert info.next_run == datetime.fromtimestamp(1_000_020, UTC)
    schedules.set_paused(conn, "a", True)
    [info] = schedules.listing(conn)
    assert info.paused and info.next_run is None
    schedules.delete(conn, "a")
    assert schedules.listing(conn) == []
    with pytest.raises(NotFound, match="no schedule 'a'"):
        schedules.delete(conn, "a")


# --- the cron loop with explicit clocks ---
# A registry of this module's own (not the process-wide one, so other tests' task lists stay as they are).
local_tasks = TaskRegistry()


@local_tasks.task("test.cron_mark")
def cron_mark(label: str = "") -> int:
    return 0


@schedules.schedule("code-every-second", cron="* * * * * *", args={"label": "code"})
@local_tasks.task("test.cron_code")
def cron_code(label: str = "") -> int:
    return 0


def loop(conn: redis.Redis, settings: Settings, node: str, grace_s: float = 10.0) -> CronLoop:
    return CronLoop(conn, settings.model_copy(update={"cron_grace_s": grace_s}), node, local_tasks)


def tick_jobs(conn: redis.Redis, name: str) -> list[int]:
    return sorted(int(k.decode().rsplit("-", 1)[1]) for k in conn.scan_iter(keys.job(f"cron-{name}-*")))


def add_at(conn: redis.Redis, schedule: Schedule, since: float) -> None:
    schedules.add(conn, schedule)
    conn.hset(keys.schedule_state(schedule.name), "since", since)


def test_many_loops_fire_each_tick_once(conn: redis.Redis, settings: Settings) -> None:
    loops = [loop(conn, settings, f"n{i}") for i in range(3)]
    add_at(conn, make(name="t", every_s=10, args={"label": "t"}), since=1000)
    for now in (1005, 1010, 1010.2, 1015, 1021, 1029, 1030, 1031):
        for each in loops:  # every node sees the same ticks due; each tick becomes one job
            each.poll(now)
    assert tick_jobs(conn, "t") == [1010, 1020, 1030]
    state = conn.hgetall(keys.schedule_state("t"))
    assert state[b"fired"] == b"3" and state[b"last_tick"] == b"1030"
    queued = [i.decode() for i in conn.lrange(keys.queue("default"), 0, -1)]
    assert [i for i in queued if i.startswith("cron-t-")] == ["cron-t-1010", "cron-t-1020", "cron-t-1030"]
    assert conn.hget(keys.job("cron-t-1020"), "ferry_task") == b"test.cron_mark"


@pytest.mark.parametrize(("catch_up", "expected"), [
    ("latest", [1050, 1060]),  # one job for the missed ticks (the latest), then on time
    ("skip", [1060]),
    ("all", [1030, 1040, 1050, 1060]),  # catch_up_max=3 most recent missed ticks
])
def test_missed_ticks_follow_the_policy(conn: redis.Redis, settings: Settings, catch_up: str,
                                        expected: list[int]) -> None:
    add_at(conn, make(name="m", every_s=10, catch_up=catch_up, catch_up_max=3), since=1000)
    loop(conn, settings, "n1", grace_s=10).poll(1065)  # no node ran from 1000 to 1065: 1010..1050 missed
    assert tick_jobs(conn, "m") == expected
    loop(conn, settings, "n2", grace_s=10).poll(1066)
    assert tick_jobs(conn, "m") == expected  # nothing fires twice


def test_a_paused_schedule_does_not_fire_and_resumes_from_then(conn: redis.Redis, settings: Settings) -> None:
    add_at(conn, make(name="p", every_s=10), since=1000)
    schedules.set_paused(conn, "p", True)
    node = loop(conn, settings, "n1")
    node.poll(1012)
    assert tick_jobs(conn, "p") == []
    schedules.set_paused(conn, "p", False)  # resumes at the real clock: ticks before it are not caught up
    node.poll(1035)
    assert tick_jobs(conn, "p") == []


def test_code_declared_schedules_are_published_and_fired(conn: redis.Redis, settings: Settings) -> None:
    conn.zadd(keys.NODES, {"n1": 1})
    node = loop(conn, settings, "n1")
    node.poll(2000.5)  # first sight: it counts from now
    node.poll(2002.2)
    assert tick_jobs(conn, "code-every-second") == [2001, 2002]
    [info] = schedules.listing(conn, now=2002.2)
    assert (info.source, info.nodes, info.schedule.task, info.fired) == ("code", ["n1"], "test.cron_code", 2)
    assert info.last_job_id == "cron-code-every-second-2002" and info.last_status == "queued"
    with pytest.raises(Conflict, match="declared in code"):
        schedules.delete(conn, "code-every-second")
    with pytest.raises(Conflict, match="declared in code"):
        schedules.add(conn, make(name="code-every-second", every_s=5))


def test_a_tick_whose_args_no_longer_fit_is_recorded_not_retried(conn: redis.Redis, settings: Settings) -> None:
    add_at(conn, make(name="bad", every_s=10, args={"nope": 1}), since=1000)
    node = loop(conn, settings, "n1")
    node.poll(1011)
    node.poll(1012)
    assert tick_jobs(conn, "bad") == []
    assert conn.hget(keys.schedule_state("bad"), "last_tick") == b"1010"


def test_the_client_checks_a_schedule_like_a_submit(client: Client, conn: redis.Redis) -> None:
    with pytest.raises(TaskNotServed, match="no live worker node serves task 'echo'"):
        client.add_schedule("later", "echo", {"value": 1}, every_s=60)  # no node runs
    added = client.add_schedule("later", "echo", {"value": 1}, every_s=60, allow_unserved=True)
    assert (added.schedule.args, added.source, added.fired) == ({"value": 1}, "api", 0)
    assert [s.schedule.name for s in client.schedules()] == ["later"]
    assert client.pause_schedule("later").paused
    assert not client.resume_schedule("later").paused
    assert client.pause_schedule("later").paused
    client.delete_schedule("later")
    assert client.schedules() == []


def test_a_schedule_on_a_function_that_is_not_a_task_is_reported() -> None:
    @schedules.schedule("orphan", every_s=5)
    def not_a_task() -> None: ...

    assert "orphan" in schedules.orphans(local_tasks)
    assert "orphan" not in [s.name for s in schedules.declared(local_tasks)]
