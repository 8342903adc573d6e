"""The `ferry` command: the composition root. It assembles the admin command groups (one module each)
and mounts each service's own entry point (`services/<service>/entry.py`); nothing else crosses services.

`ferry worker` is assembled alone (`node_app`): a node's supervisor forks its worker processes, and every
page it holds before the fork counts a third in each of two workers' PSS, so the other groups (rich, the
client, the API's entry) stay out of a node's memory.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import typer

from shared.errors import EXIT_CODES

PIPE_WIDTH = 200  # columns when stdout is not a terminal: no table squeezed to 80, one line per row for grep
NODE_COMMAND = "worker"


def _typer() -> typer.Typer:
    return typer.Typer(
        name="ferry",
        help=(
            "Ferry: a distributed task service on Redis.\n\n"
            "Settings come from FERRY_* environment variables (see README). Exit codes: "
            + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()) + "."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


@functools.cache
def build_app() -> typer.Typer:
    """Every command group, mounted: what `ferry --help` lists."""
    from services.admin import demo, health, jobs, objects, pause, queues, schedules, tasks, top, up, workflows
    from services.admin.common import console, err_console
    from services.producer import entry as producer_entry
    from services.worker import entry as worker_entry

    app = _typer()

    @app.callback()
    def _root() -> None:
        """Ferry's admin CLI."""
        for output in (console, err_console):
            if not output.is_terminal and "COLUMNS" not in os.environ:
                output.width = PIPE_WIDTH

    # Jobs, one at a time.
    app.command("submit")(jobs.submit)
    app.command("status")(jobs.status)
    app.command("result")(jobs.result)
    app.command("cancel")(jobs.cancel)
    # Queues, nodes and many jobs.
    app.command("info")(queues.info)
    app.command("top")(top.top)
    app.command("jobs")(queues.jobs)
    app.command("requeue")(queues.requeue)
    app.command("purge")(queues.purge)
    app.command("pause")(pause.pause)
    app.command("resume")(pause.resume)
    app.command("tasks")(tasks.tasks)
    app.add_typer(objects.app, name="objects")
    app.add_typer(schedules.app, name="schedules")
    app.add_typer(workflows.app, name="workflow")
    app.command("health")(health.health)
    # Running Ferry.
    app.command("up")(up.up)
    app.command("demo")(demo.demo)
    app.command(NODE_COMMAND)(worker_entry.worker)
    app.command("producer")(producer_entry.producer)
    return app


def node_app() -> typer.Typer:
    """The `ferry worker` command with nothing else imported; it parses and runs exactly as in `build_app`."""
    from services.worker import entry as worker_entry

    app = _typer()

    @app.callback()
    def _root() -> None:
        """Ferry's admin CLI."""

    app.command(NODE_COMMAND)(worker_entry.worker)
    return app


def main() -> None:
    # also under `python -m services.admin.cli`, as `ferry up` starts the node
    chosen = node_app() if sys.argv[1:2] == [NODE_COMMAND] else build_app()
    chosen(prog_name="ferry")


def __getattr__(name: str) -> Any:
    """`app`: the whole CLI, for tests and tools that drive it in-process, built on first use."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
