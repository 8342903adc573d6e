"""The `ferry` command: the composition root. It assembles the admin command groups (one module each)
and mounts each service's own entry point (`services/<service>/entry.py`); nothing else crosses services."""

from __future__ import annotations

import typer

from services.producer import entry as producer_entry
from services.worker import entry as worker_entry

app = typer.Typer(
    name="ferry",
    help=(
        "Ferry: a distributed task service on Redis.\n\n"
        "Settings come from FERRY_* environment variables (see README). Exit codes: 0 ok, 1 job failed or "
        "unexpected error, 2 bad input or settings, 3 Redis unreachable, 4 not found, 5 conflict, "
        "6 shared memory full, 7 still pending after --wait."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Ferry's admin CLI."""


app.command("worker")(worker_entry.worker)
app.command("producer")(producer_entry.producer)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
