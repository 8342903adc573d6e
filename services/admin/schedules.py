"""`ferry schedules`: periodic jobs (cron). List them with their next runs; add, pause, resume, delete.

The rules (tick times, zones and daylight saving, missed ticks, exactly-once firing) live in shared/schedules.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from services.admin.common import command, console, empty, esc, note, open_client, print_json, styled_status, table
from services.admin.jobs import ArgsJson, TargetQueue, parse_args
from shared.schedules import CATCH_UP_HELP, ScheduleInfo

HELP = (
    "Periodic jobs (cron): `ferry schedules` lists them with their next runs; add, pause, resume or delete them.\n\n"
    "Each tick runs exactly once however many nodes run (every node's cron loop tries, one atomic step lets one "
    "enqueue it), and keeps running when any node is lost. Cron expressions are read in the schedule's zone "
    "(--tz, UTC by default): a local time skipped by a daylight-saving jump runs once at the jump, a repeated "
    "one once at its first occurrence. Missed ticks (none fired within FERRY_CRON_GRACE_S of their time, "
    f"e.g. no node ran): {CATCH_UP_HELP}."
)

app = typer.Typer(help=HELP, invoke_without_command=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON output.")]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name (see `ferry schedules`).")]


@app.callback()
def schedules(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the schedules (with no sub-command)."""
    if ctx.invoked_subcommand is None:
        list_schedules(json_output)


@app.command("list")
@command
def list_schedules(
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print every schedule with its next run, last tick and last job as JSON."),
    ] = False,
) -> None:
    """List the schedules: when each runs next, its last tick and that tick's job and status."""
    with open_client() as client:
        found = client.schedules()
    if json_output:
        print_json(found)
        return
    if not found:
        empty("schedules", "(add one with `ferry schedules add NAME TASK --cron '0 3 * * *'`)")
        return
    console.print(schedule_table(found))


def schedule_table(found: list[ScheduleInfo], title: str | None = None) -> Table:
    """One row per schedule: when it runs, next, its last tick and that tick's job (also in `ferry top`)."""
    t = table("schedule", "task", "when", "next run", "last tick", "last job", "status", "source", title=title)
    for item in found:
        s = item.schedule
        when = s.expression() + (f" ({s.tz})" if s.cron is not None and s.tz != "UTC" else "")
        t.add_row(esc(s.name), esc(s.task), esc(when), next_text(item), stamp(item.last_tick),
                  esc(item.last_job_id or "-"), styled_status(item.last_status) if item.last_status else "-",
                  esc(item.source if item.source == "api" else f"code ({', '.join(item.nodes)})"))
    return t


def next_text(item: ScheduleInfo) -> str:
    if item.paused:
        return "paused"
    if not item.schedule.enabled:
        return "disabled"
    return stamp(item.next_run)


def stamp(moment: datetime | None) -> str:
    """An ISO-8601 UTC time to the second, `-` when there is none."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


@app.command("add")
@command
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A unique name: letters, digits, '_' and '-'.")],
    task: Annotated[str, typer.Argument(help="Registered task name (see `ferry tasks`).")],
    cron: Annotated[
        str | None,
        typer.Option("--cron", metavar="EXPR",
                     help="A cron expression: 5 fields (minute hour day month weekday, e.g. '0 3 * * *'), 6 with "
                     "seconds first ('*/10 * * * * *'), or @hourly/@daily/@weekly/@monthly/@yearly."),
    ] = None,
    every_s: Annotated[
        int | None,
        typer.Option("--every-s", min=1, metavar="SECONDS",
                     help="Instead of --cron: every this many seconds (at whole multiples since the Unix epoch)."),
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone --cron is read in, e.g. Europe/Paris.")] = "UTC",
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", "-a", metavar="NAME=VALUE",
                     help="A task argument; VALUE is JSON when it parses (3, [1,2], true), else a string."),
    ] = None,
    args_json: ArgsJson = None,
    queue: TargetQueue = None,
    catch_up: Annotated[
        str,
        typer.Option("--catch-up", metavar="latest|skip|all",
                     help=f"Ticks missed while no node ran (not fired within FERRY_CRON_GRACE_S): {CATCH_UP_HELP}."),
    ] = "latest",
    catch_up_max: Annotated[
        int, typer.Option("--catch-up-max", min=1, help="With --catch-up all: at most this many missed ticks run.")
    ] = 10,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Store it, but fire no tick (see pause/resume).")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a schedule of that name.")] = False,
    allow_unserved: Annotated[
        bool,
        typer.Option("--allow-unserved",
                     help="Store it even if no live node serves the task on that queue (its jobs wait for one)."),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Add a periodic job; its args are checked like a submit's. Prints the schedule and its next run."""
    with open_client() as client:
        item = client.add_schedule(name, task, parse_args(arg or [], args_json), cron=cron, every_s=every_s, tz=tz,
                                   queue=queue, catch_up=catch_up, catch_up_max=catch_up_max, enabled=not disabled,
                                   replace=replace, allow_unserved=allow_unserved)
    if json_output:
        print_json(item)
        return
    print(item.schedule.name)
    note(f"{item.schedule.expression()} -> {item.schedule.task}; next run {next_text(item)}")


@app.command("pause")
@command
def pause(name: NameArgument, json_output: JsonOption = False) -> None:
    """Pause a schedule: no tick runs until it is resumed (a schedule declared in code too)."""
    _show(_toggle(name, True), json_output)


@app.command("resume")
@command
def resume(name: NameArgument, json_output: JsonOption = False) -> None:
    """Resume a paused schedule from now on (ticks during the pause are not caught up)."""
    _show(_toggle(name, False), json_output)


@app.command("delete")
@command
def delete(name: NameArgument) -> None:
    """Delete a schedule added at run time (jobs already queued stay). One declared in code: pause it instead."""
    with open_client() as client:
        client.delete_schedule(name)
    note(f"schedule {name} deleted")


def _toggle(name: str, paused: bool) -> ScheduleInfo:
    with open_client() as client:
        return client.pause_schedule(name, paused)


def _show(item: ScheduleInfo, json_output: bool) -> None:
    if json_output:
        print_json(item)
        return
    print(item.schedule.name)
    note(f"next run {next_text(item)}")
