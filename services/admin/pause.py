"""`ferry pause` and `ferry resume`: hold a queue's jobs (or every queue's) without stopping any worker."""

from __future__ import annotations

from typing import Annotated

import typer

from services.admin.common import command, console, esc, open_client, print_json, table
from shared.models import QueueInfo

QUEUES_ARG = typer.Argument(metavar="QUEUE", help="Queues to act on; none: every queue.", show_default=False)


@command
def pause(
    queues: Annotated[list[str] | None, QUEUES_ARG] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the queues as JSON afterwards.")] = False,
) -> None:
    """Pause queues (every queue when none is named): queued jobs stay queued, running jobs finish, no worker claims.

    Pausing everything sets RQ's own `rq:suspended`, exactly as `rq suspend` does (and `rq resume` ends it).
    Jobs can still be submitted to a paused queue.
    """
    with open_client() as client:
        _show(client.pause(*(queues or [])), queues, json_output)


@command
def resume(
    queues: Annotated[list[str] | None, QUEUES_ARG] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the queues as JSON afterwards.")] = False,
) -> None:
    """Resume queues (everything, including an `rq suspend`, when none is named); idle workers wake at once."""
    with open_client() as client:
        _show(client.resume(*(queues or [])), queues, json_output)


def _show(queues: list[QueueInfo], named: list[str] | None, json_output: bool) -> None:
    shown = [q for q in queues if not named or q.name in named]
    if json_output:
        print_json(shown)
        return
    rows = table("queue", "queued", "waiting", "started", "paused", title="Queues")
    for q in shown:
        rows.add_row(esc(q.name), str(q.queued), str(q.waiting), str(q.started),
                     "[yellow]paused[/yellow]" if q.paused else "-")
    console.print(rows)
