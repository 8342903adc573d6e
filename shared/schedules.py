"""Periodic jobs (cron): a schedule's model, its validation, its tick times, and its storage in Redis.

A schedule names a registered task, its JSON args, an optional queue, and either a cron expression
(5 fields; or 6 with seconds first, `*/5 * * * * *`) read in an IANA time zone (UTC unless given), or an
interval `every_s` (ticks at whole multiples of `every_s` since the Unix epoch, so every node agrees).

Where schedules come from:
- run time: `Client.add_schedule`, `POST /v1/schedules`, `ferry schedules add` write `ferry:schedules`
  (hash: name -> JSON); they stay until deleted;
- code: `@schedule("nightly", cron="0 3 * * *")` on a `@task` function; each node that loads that code
  publishes its declared schedules as `ferry:schedules:code:<node>` at every heartbeat (expiring with the
  node, like the task catalog), and its cron loop fires them.

**Exactly once without a leader.** Every node's cron loop (services/worker/cron.py) computes the due
ticks itself and fires each with `FIRE` (shared/lifecycle/lua_cron.py): in one atomic script it checks the
schedule's `last_tick` (`ferry:schedule:<name>` hash) is older than the tick, records the tick, and runs
the lifecycle's ENQUEUE body with the job id `cron-<name>-<tick unix seconds>`. A second node firing the
same tick finds `last_tick` already there and does nothing; a node dying anywhere leaves either nothing
done (another node fires it) or everything done. Ticks only move forward.

**Missed ticks.** A tick not fired within FERRY_CRON_GRACE_S of its time (in practice: no node was
running) is *missed*, and the schedule's `catch_up` decides: `latest` (default) runs one job for the
most recent missed tick, `skip` runs none, `all` runs each missed tick, at most `catch_up_max` (the most
recent ones). Ticks within the grace always run, whichever node finds them first. A new schedule (or one
resumed after a pause) counts from that moment: nothing before it is due.

**Time zones and daylight saving.** A cron expression is matched against the zone's wall clock. A wall
time the clock skips (spring forward, e.g. 02:30 on a night going 02:00 -> 03:00) runs once, at the
instant of the jump (03:00 new time); a wall time the clock repeats (fall back) runs once, at its first
occurrence. No tick ever runs twice and ticks never go back. Use `every_s` (or tz UTC) for "every N
minutes whatever the clock does".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys
from shared.catalog import read as read_catalog
from shared.errors import Conflict, InvalidArgs, NotFound
from shared.models import QUEUE_PATTERN, JobRequest
from shared.replies import text, texts
from shared.settings import Settings
from shared.submission import checked_args
from shared.tasks import TaskRegistry

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # part of the tick's job id, so RQ's job id alphabet
CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
MAX_EVERY_S = 366 * 86_400
MAX_CATCH_UP = 1000
CatchUp = Literal["latest", "skip", "all"]
CATCH_UP_HELP = (
    "latest = run once, for the most recent missed tick (default); skip = run none; "
    "all = run each missed tick, at most catch_up_max (the most recent)"
)


class Schedule(BaseModel):
    """A periodic job: run `task` with `args` at every tick of `cron` (in `tz`) or every `every_s` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, examples=["nightly-report"],
                      description="unique; letters, digits, '_' and '-' (it is part of each tick's job id)")
    task: str = Field(min_length=1, max_length=200, examples=["echo"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"value": "hello"}])
    queue: str | None = Field(None, pattern=QUEUE_PATTERN, description="default: FERRY_DEFAULT_QUEUE")
    cron: str | None = Field(None, max_length=200, examples=["0 3 * * *"],
                             description="5 fields (minute hour day month weekday), 6 with seconds first, "
                             "or @hourly/@daily/@weekly/@monthly/@yearly; give cron or every_s")
    every_s: int | None = Field(None, ge=1, le=MAX_EVERY_S,
                                description="an interval: ticks at whole multiples of it since the Unix epoch")
    tz: str = Field("UTC", max_length=64, examples=["Europe/Paris"],
                    description="IANA time zone the cron expression is read in")
    enabled: bool = Field(True, description="false: declared but never fires (see also pause/resume)")
    catch_up: CatchUp = Field("latest", description="ticks missed while no node ran (not fired within "
                              f"FERRY_CRON_GRACE_S of their time): {CATCH_UP_HELP}")
    catch_up_max: int = Field(10, ge=1, le=MAX_CATCH_UP, description="for catch_up=all: the most missed ticks run")

    def check(self) -> Schedule:
        """This schedule, or InvalidArgs naming what is wrong and how to write it."""
        if (self.cron is None) == (self.every_s is None):
            raise InvalidArgs(f"schedule {self.name!r}: give exactly one of cron (e.g. '0 3 * * *') or every_s "
                              f"(e.g. 60)", field="cron")
        try:
            zone(self.tz)
            if self.cron is not None:
                _check_cron(self.cron)
        except InvalidArgs as exc:
            exc.message = f"schedule {self.name!r}: {exc.message}"
            exc.args = (exc.message,)
            raise
        return self

    def expression(self) -> str:
        return self.cron if self.cron is not None else f"every {self.every_s}s"

    def job_id(self, tick: float) -> str:
        """The job of one tick: the same on every node, so a tick is one job."""
        return f"cron-{self.name}-{int(tick)}"

    # --- tick times (unix seconds) ---
    def next_after(self, after: float) -> float:
        """The first tick strictly after `after`."""
        if self.every_s is not None:
            return float((int(after // self.every_s) + 1) * self.every_s)
        assert self.cron is not None
        tz = zone(self.tz)
        wall = _wall(after, tz)
        it = _croniter(self.cron, wall)
        while True:
            tick = _instant(it.get_next(datetime), tz)
            if tick > after:
                return tick

    def ticks_back(self, now: float, after: float, limit: int) -> list[float]:
        """Up to `limit` ticks in (`after`, `now`], most recent first."""
        if limit <= 0 or now <= after:
            return []
        if self.every_s is not None:
            last = int(now // self.every_s) * self.every_s
            every: list[float] = []
            while last > after and len(every) < limit:
                every.append(float(last))
                last -= self.every_s
            return every
        assert self.cron is not None
        tz = zone(self.tz)
        # Start past `now` by the size of any clock change near it, so a repeated hour's ticks are seen.
        shift = abs(_offset(now - 4 * 3600, tz) - _offset(now + 4 * 3600, tz))
        it = _croniter(self.cron, _wall(now, tz) + timedelta(seconds=shift + 1))
        found: list[float] = []
        while len(found) < limit:
            tick = _instant(it.get_prev(datetime), tz)
            if tick <= after:
                break
            if tick <= now and (not found or tick < found[-1]):
                found.append(tick)
        return found


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or InvalidArgs naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgs(f"unknown time zone {name!r}: give an IANA name such as 'UTC', 'Europe/Paris' or "
                          f"'America/New_York'", field="tz") from None


def _croniter(expression: str, start: datetime) -> Any:
    """croniter over `expression` from `start`. Imported here, not with this module: a node's worker processes
    never compute ticks, and each would carry a share of croniter and dateutil in memory (~0.4 MB)."""
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter(expression, start, **_cron_options(expression))


def _check_cron(expression: str) -> None:
    fields = expression.split()
    example = "e.g. '0 3 * * *' (03:00 daily) or '*/10 * * * * *' (every 10 seconds)"
    if not (len(fields) in (5, 6) or (len(fields) == 1 and fields[0].lower() in CRON_ALIASES)):
        raise InvalidArgs(f"bad cron expression {expression!r}: it has {len(fields)} fields; give 5 (minute hour "
                          f"day month weekday) or 6 (seconds first), {example}", field="cron")
    try:
        _croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors; keep its reason
        raise InvalidArgs(f"bad cron expression {expression!r}: {exc}; {example}", field="cron") from None


def _cron_options(expression: str) -> dict[str, Any]:
    return {"second_at_beginning": True} if len(expression.split()) == 6 else {}


def _wall(moment: float, tz: ZoneInfo) -> datetime:
    """The zone's wall-clock time at `moment`, naive (cron matches wall clocks)."""
    return datetime.fromtimestamp(moment, tz).replace(tzinfo=None)


def _offset(moment: float, tz: ZoneInfo) -> float:
    offset = datetime.fromtimestamp(moment, tz).utcoffset()
    return offset.total_seconds() if offset else 0.0


def _instant(wall: datetime, tz: ZoneInfo) -> float:
    """The instant a wall time happens: its first occurrence if the clock repeats it; the jump if it skips it."""
    moment = wall.replace(tzinfo=tz, fold=0).timestamp()
    if _wall(moment, tz) == wall:
        return moment
    # Skipped by a spring-forward: find the jump (the offset changes between these two instants).
    low, high = wall.replace(tzinfo=tz, fold=1).timestamp(), moment
    low, high = min(low, high), max(low, high)
    before = _offset(low, tz)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, tz) == before:
            low = middle
        else:
            high = middle
    return float(high)


def parse(fields: dict[str, Any]) -> Schedule:
    """A checked Schedule from plain fields (the CLI's, the client's), or one InvalidArgs line."""
    try:
        schedule = Schedule.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'schedule'}: {e['msg']}" for e in exc.errors())
        raise InvalidArgs(f"invalid schedule: {problems}") from None
    return schedule.check()


# --- declared in code ---
@dataclass(frozen=True)
class _Declared:
    func: Callable[..., Any]
    fields: dict[str, Any]


_declared: list[_Declared] = []


def schedule(name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
             args: dict[str, Any] | None = None, queue: str | None = None, enabled: bool = True,
             catch_up: CatchUp = "latest", catch_up_max: int = 10,
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a registered task periodically; put it on (above or below) the function's `@task`:

        @schedule("nightly-report", cron="0 3 * * *", tz="Europe/Paris")
        @task("report")
        def report() -> str: ...

    Checked at import (a bad expression or zone fails the node's start with one line). The nodes that load
    this code fire it; `ferry schedules` lists it with source `code`.
    """
    fields = {"name": name, "cron": cron, "every_s": every_s, "tz": tz, "args": args or {}, "queue": queue,
              "enabled": enabled, "catch_up": catch_up, "catch_up_max": catch_up_max}
    parse({**fields, "task": "-"})  # fail at import, not at the first tick

    def declare(func: Callable[..., Any]) -> Callable[..., Any]:
        _declared.append(_Declared(func, fields))
        return func

    return declare


def declared(registry: TaskRegistry) -> list[Schedule]:
    """The schedules declared in code on tasks registered in `registry` (by function, so decorator order is free)."""
    names = {spec.func: spec.name for spec in registry.specs()}
    found = {}
    for item in _declared:
        task = names.get(item.func)
        if task is not None:
            found[item.fields["name"]] = parse({**item.fields, "task": task})
    return [found[name] for name in sorted(found)]


def orphans(registry: TaskRegistry) -> list[str]:
    """Schedules declared on functions that are not registered tasks (they never run: the node warns)."""
    tasks = {spec.func for spec in registry.specs()}
    return sorted({item.fields["name"] for item in _declared if item.func not in tasks})


# --- the views ---
class ScheduleInfo(BaseModel):
    """A schedule as `ferry schedules` and `GET /v1/schedules` show it."""

    schedule: Schedule
    source: Literal["api", "code"] = Field(description="api: added at run time; code: declared with @schedule")
    nodes: list[str] = Field(default_factory=list, description="for source=code: the live nodes declaring it")
    paused: bool = False
    next_run: datetime | None = Field(None, description="the next tick (ISO-8601 UTC); null when paused or disabled")
    last_tick: datetime | None = Field(None, description="the latest tick fired (or skipped as missed)")
    last_job_id: str | None = None
    last_status: str | None = Field(None, description="the last tick's job status (null once it expired)")
    fired: int = Field(0, description="ticks this schedule has run")
    skipped: int = Field(0, description="times a due tick was passed over without a job (catch_up=skip, or its "
                         "args no longer fit the task: see the node's log)")


@dataclass
class State:
    """The schedule's progress (`ferry:schedule:<name>`): written only by lua_cron's scripts and `reset`."""

    since: float | None = None
    last_tick: float | None = None
    last_job: str | None = None
    fired: int = 0
    skipped: int = 0

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> State:
        num = lambda name: float(raw[name]) if raw.get(name) else None  # noqa: E731
        return cls(since=num(b"since"), last_tick=num(b"last_tick"),
                   last_job=raw[b"last_job"].decode() if raw.get(b"last_job") else None,
                   fired=int(raw.get(b"fired", 0)), skipped=int(raw.get(b"skipped", 0)))

    def baseline(self) -> float | None:
        """Ticks after this are due (the last fired tick, or when the schedule was added or resumed)."""
        points = [p for p in (self.since, self.last_tick) if p is not None]
        return max(points) if points else None


# --- storage ---
def add(conn: redis.Redis, schedule: Schedule, replace: bool = False) -> bool:
    """Store a run-time schedule (checked); Conflict if the name is taken and not `replace`. True if new."""
    schedule.check()
    code = code_schedules(conn)
    if schedule.name in code:
        raise Conflict(f"schedule {schedule.name!r} is declared in code on nodes {', '.join(code[schedule.name][1])}; "
                       "pick another name", name=schedule.name)
    created = bool(conn.hsetnx(keys.SCHEDULES, schedule.name, schedule.model_dump_json()))
    if not created:
        if not replace:
            raise Conflict(f"schedule {schedule.name!r} exists: delete it first (`ferry schedules delete "
                           f"{schedule.name}`) or replace it (--replace, API \"replace\": true)", name=schedule.name)
        conn.hset(keys.SCHEDULES, schedule.name, schedule.model_dump_json())
    pipe = conn.pipeline(transaction=True)
    if created:
        pipe.delete(keys.schedule_state(schedule.name))  # a new schedule counts from now, whatever an old one did
    pipe.hset(keys.schedule_state(schedule.name), "since", clock(conn))
    pipe.execute()
    return created


def create(conn: redis.Redis, schedule: Schedule, settings: Settings, local: TaskRegistry | None,
           replace: bool = False, allow_unserved: bool = False) -> ScheduleInfo:
    """Check a run-time schedule as a submit checks a job (the task is served, the args fit), then store it.

    UnknownTask / TaskNotServed / InvalidArgs as for a job (`allow_unserved`: store it even if no live node
    serves the task on its queue; its jobs wait for one); Conflict for a taken name.
    """
    schedule.check()
    request = JobRequest(task=schedule.task, args=schedule.args, queue=schedule.queue, allow_unserved=allow_unserved)
    args = checked_args(request, read_catalog(conn), local, settings)
    add(conn, schedule.model_copy(update={"args": args}), replace)
    return info(conn, schedule.name)


def info(conn: redis.Redis, name: str) -> ScheduleInfo:
    """One schedule's view; NotFound if there is none by that name."""
    for item in listing(conn):
        if item.schedule.name == name:
            return item
    raise NotFound(f"no schedule {name!r}; `ferry schedules` lists them")


def delete(conn: redis.Redis, name: str) -> None:
    """Remove a run-time schedule and its state; NotFound if there is none, Conflict if it is declared in code."""
    if not conn.hdel(keys.SCHEDULES, name):
        code = code_schedules(conn)
        if name in code:
            raise Conflict(f"schedule {name!r} is declared in code (nodes {', '.join(code[name][1])}): remove it from "
                           f"the code, or stop it with `ferry schedules pause {name}`", name=name)
        raise NotFound(f"no schedule {name!r}; `ferry schedules` lists them")
    conn.delete(keys.schedule_state(name))
    conn.srem(keys.SCHEDULES_PAUSED, name)


def set_paused(conn: redis.Redis, name: str, paused: bool) -> None:
    """Pause (no tick fires) or resume (ticks from now on; those during the pause are not caught up)."""
    if not conn.hexists(keys.SCHEDULES, name) and name not in code_schedules(conn):
        raise NotFound(f"no schedule {name!r}; `ferry schedules` lists them")
    pipe = conn.pipeline(transaction=True)
    if paused:
        pipe.sadd(keys.SCHEDULES_PAUSED, name)
    else:
        pipe.srem(keys.SCHEDULES_PAUSED, name)
        pipe.hset(keys.schedule_state(name), "since", clock(conn))
    pipe.execute()


def clock(conn: redis.Redis) -> float:
    """Redis's clock (unix seconds): every node and client reads ticks and `since` on the same clock."""
    seconds, micros = conn.time()
    return seconds + micros / 1e6


def runtime_schedules(conn: redis.Redis) -> dict[str, Schedule]:
    return parse_stored(conn.hgetall(keys.SCHEDULES))


def parse_stored(stored: dict[Any, Any]) -> dict[str, Schedule]:
    """The `ferry:schedules` hash's entries as Schedules (an unreadable entry is skipped, not fatal)."""
    found = {}
    for name, raw in stored.items():
        try:
            found[text(name)] = Schedule.model_validate_json(raw)
        except ValueError:
            continue  # written by an incompatible version: ignored, not fatal
    return found


def publish(conn: redis.Redis, node_id: str, declared_here: Iterable[Schedule], ttl_s: float) -> None:
    """This node's code-declared schedules, for listings; expires with the node (like its catalog entry)."""
    payload = json.dumps([s.model_dump(mode="json") for s in declared_here])
    conn.set(keys.schedules_code(node_id), payload, px=max(1, int(ttl_s * 1000)))


def code_schedules(conn: redis.Redis) -> dict[str, tuple[Schedule, list[str]]]:
    """Code-declared schedules of the live nodes: name -> (schedule, nodes declaring it)."""
    ids = texts(conn.zrange(keys.NODES, 0, -1))
    found: dict[str, tuple[Schedule, list[str]]] = {}
    for node_id, raw in zip(ids, conn.mget([keys.schedules_code(i) for i in ids]) if ids else [], strict=True):
        if not raw:
            continue
        try:
            items = [Schedule.model_validate(item) for item in json.loads(raw)]
        except ValueError:
            continue
        for item in items:
            found.setdefault(item.name, (item, []))[1].append(node_id)
    return found


def paused_names(conn: redis.Redis) -> set[str]:
    return set(texts(conn.smembers(keys.SCHEDULES_PAUSED)))


def states(conn: redis.Redis, names: list[str]) -> list[State]:
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.schedule_state(name))
    return [State.from_hash(raw) for raw in pipe.execute()]


def listing(conn: redis.Redis, now: float | None = None) -> list[ScheduleInfo]:
    """Every schedule (run-time and code-declared by live nodes) with its next run and its last tick's job."""
    now = clock(conn) if now is None else now
    runtime, code, paused = runtime_schedules(conn), code_schedules(conn), paused_names(conn)
    entries: dict[str, tuple[Schedule, Literal["api", "code"], list[str]]] = {
        name: (item, "code", nodes) for name, (item, nodes) in code.items()}
    entries.update({name: (item, "api", []) for name, item in runtime.items()})
    names = sorted(entries)
    found_states = states(conn, names)
    pipe = conn.pipeline(transaction=False)
    for state in found_states:
        pipe.hget(keys.job(state.last_job or "-"), "status")
    statuses = pipe.execute()
    infos = []
    for name, state, status in zip(names, found_states, statuses, strict=True):
        item, source, nodes = entries[name]
        stopped = name in paused or not item.enabled
        infos.append(ScheduleInfo(
            schedule=item, source=source, nodes=nodes, paused=name in paused,
            next_run=None if stopped else _utc(item.next_after(max(now, state.last_tick or 0))),
            last_tick=_utc(state.last_tick), last_job_id=state.last_job,
            last_status=text(status) if status else None, fired=state.fired, skipped=state.skipped))
    return infos


def _utc(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


__all__ = ["Schedule", "ScheduleInfo", "State", "add", "create", "declared", "delete", "info", "listing", "parse",
           "schedule", "set_paused", "zone"]
