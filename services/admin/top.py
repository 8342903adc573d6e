"""`ferry top`: `ferry info`'s picture (queues, throughput, nodes and their caches, workers), refreshed in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from services.admin.common import ago, command, console, esc, open_client, styled_status, table
from services.admin.queues import cache_table, node_table
from services.admin.schedules import schedule_table
from shared import views
from shared.client import Client
from shared.redis_conn import redact

SPARK = "▁▂▃▄▅▆▇█"


@command
def top(
    interval_s: Annotated[float, typer.Option("--interval-s", min=0.2, max=3600,
                                              help="Seconds between refreshes.")] = 2.0,
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=0,
                                            help="Stop after this many refreshes (0: until Ctrl-C).")] = 0,
) -> None:
    """Watch queues, throughput, nodes (shared-memory caches) and workers, refreshed every --interval-s. Ctrl-C quits.

    On a terminal the picture is redrawn in place; piped, each refresh is printed after the last.
    """
    with open_client() as client:
        try:
            if console.is_terminal:
                with Live(picture(client), console=console, auto_refresh=False, screen=False) as live:
                    _loop(lambda: live.update(picture(client), refresh=True), interval_s, iterations)
            else:
                console.print(picture(client))
                _loop(lambda: console.print(picture(client)), interval_s, iterations)
        except KeyboardInterrupt:
            pass


def _loop(refresh: Callable[[], None], interval_s: float, iterations: int) -> None:
    """`refresh` every interval_s; the first picture is already on screen, so `iterations` counts it."""
    shown = 1
    while iterations == 0 or shown < iterations:
        time.sleep(interval_s)
        refresh()
        shown += 1


def picture(client: Client) -> RenderableType:
    """One frame: the same tables as `ferry info`, plus jobs finished and failed over the last 5 minutes."""
    admin = client.admin
    queues, nodes, workers = admin.queues(), admin.nodes(), admin.workers()
    rate = views.throughput(client.conn, client.settings, window_s=300, step_s=10)
    header = Text.from_markup(f"[bold]Ferry[/bold]  {esc(redact(client.url))}  [dim]{time.strftime('%H:%M:%S')}[/dim]")
    queue_table = table("queue", "queued", "started", "finished", "failed", "canceled", "scheduled", title="Queues")
    for q in queues:
        queue_table.add_row(esc(q.name), str(q.queued), str(q.started), str(q.finished),
                            f"[red]{q.failed}[/red]" if q.failed else "0", str(q.canceled), str(q.scheduled))
    parts: list[RenderableType] = [header, queue_table, _rate_line(rate)]
    if nodes:
        parts += [node_table(nodes), cache_table(nodes)]
    else:
        parts.append(Text("no worker node has registered; start one with `ferry worker`"))
    worker_table = table("worker process", "node", "state", "current job", "ok", "failed", "heartbeat",
                         title="Worker processes")
    for w in workers:
        worker_table.add_row(esc(w.name), esc(w.node or "-"), styled_status(w.state), esc(w.current_job or "-"),
                             str(w.successful), str(w.failed), ago(w.last_heartbeat))
    parts.append(worker_table)
    found = client.schedules()
    if found:  # periodic jobs, when there are any
        parts.append(schedule_table(found, title="Schedules"))
    return Group(*parts)


def _rate_line(rate: views.Throughput) -> Text:
    """Last 5 minutes as sparklines, 10 s a character."""
    top_value = max([1, *rate.finished, *rate.failed])

    def spark(values: list[int]) -> str:
        return "".join(SPARK[min(len(SPARK) - 1, v * (len(SPARK) - 1) // top_value)] if v else " " for v in values)

    return Text.from_markup(
        f"[bold]Last 5 min[/bold] (10 s a mark)  finished [green]{spark(rate.finished)}[/green] {sum(rate.finished)}"
        f"  failed [red]{spark(rate.failed)}[/red] {sum(rate.failed)}"
    )
