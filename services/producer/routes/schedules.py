"""/v1/schedules: periodic jobs added at run time (and those declared in code, listed): add, list, pause, delete.

The rules (tick times, zones, missed ticks, exactly-once firing) live in shared/schedules.py; these routes
run in the thread pool on the sync client, as queues and nodes do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import Field

from services.producer.deps import ClientDep
from services.producer.schemas import errors
from shared import schedules
from shared.schedules import NAME_PATTERN, Schedule, ScheduleInfo

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

ScheduleName = Annotated[str, Path(pattern=NAME_PATTERN, description="the schedule's name")]


class ScheduleRequest(Schedule):
    """A schedule to add; `replace` overwrites an existing run-time schedule of that name."""

    replace: bool = Field(False, description="overwrite a run-time schedule of that name")
    allow_unserved: bool = Field(
        False, description="store it even if no live node serves the task on its queue (its jobs wait for one)")


@router.post(
    "",
    status_code=201,
    response_model=ScheduleInfo,
    summary="Add a periodic job",
    description=(
        "Runs `task` with `args` at every tick of `cron` (5 fields, or 6 with seconds first; read in the IANA "
        "zone `tz`, UTC by default) or every `every_s` seconds. Each tick runs exactly once however many nodes "
        "run; a tick missed while no node ran follows `catch_up` (`latest`: one job for the most recent missed "
        "tick; `skip`; `all`: each, at most `catch_up_max`). Checked like a job: an unknown task is 404, a task "
        "no live node serves on the queue 409, bad args, a bad cron expression or an unknown zone 422; a name "
        "already used 409 unless `replace`."
    ),
    responses=errors(404, 409, 422),
)
def add_schedule(body: ScheduleRequest, client: ClientDep) -> ScheduleInfo:
    schedule = Schedule.model_validate(body.model_dump(exclude={"replace", "allow_unserved"}))
    return schedules.create(client.conn, schedule, client.settings, client.tasks, body.replace, body.allow_unserved)


@router.get(
    "",
    response_model=list[ScheduleInfo],
    summary="Schedules, with their next and last runs",
    description="Run-time schedules and those the live nodes declare in code (`source`), each with `next_run`, "
    "`last_tick`, the last tick's job (`last_job_id`, `last_status`), and counts of ticks fired and skipped.",
)
def list_schedules(client: ClientDep) -> list[ScheduleInfo]:
    return client.schedules()


@router.get("/{name}", response_model=ScheduleInfo, summary="One schedule", responses=errors(404))
def get_schedule(name: ScheduleName, client: ClientDep) -> ScheduleInfo:
    return client.schedule(name)


@router.post(
    "/{name}/pause",
    response_model=ScheduleInfo,
    summary="Pause a schedule (no tick runs until resumed)",
    responses=errors(404),
)
def pause_schedule(name: ScheduleName, client: ClientDep) -> ScheduleInfo:
    return client.pause_schedule(name)


@router.post(
    "/{name}/resume",
    response_model=ScheduleInfo,
    summary="Resume a schedule (from now on; ticks during the pause are not caught up)",
    responses=errors(404),
)
def resume_schedule(name: ScheduleName, client: ClientDep) -> ScheduleInfo:
    return client.resume_schedule(name)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a run-time schedule",
    description="Its jobs already queued stay. A schedule declared in code cannot be deleted here (409): "
    "pause it, or remove it from the code.",
    responses=errors(404, 409),
)
def delete_schedule(name: ScheduleName, client: ClientDep) -> Response:
    client.delete_schedule(name)
    return Response(status_code=204)
