"""`ferry workflow submit FILE.json | status ID | cancel ID`: whole workflows (shared/workflows.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from services.admin.common import command, console, esc, invalid, note, open_client, print_json, styled_status
from shared.errors import EXIT_FAILED, EXIT_NOT_READY, EXIT_OK, InvalidRequest
from shared.models import JobStatus
from shared.workflows import WorkflowInfo, WorkflowRequest

app = typer.Typer(help="Workflows: groups, chains and dependencies, submitted, watched and canceled as one.",
                  no_args_is_help=True)

MAX_FILE_BYTES = 10 * 1024 * 1024
EXAMPLE = '{"workflow": {"chain": [{"group": [{"task": "echo", "args": {"value": 1}}, ' \
          '{"task": "echo", "args": {"value": 2}}]}, {"task": "echo", "input": "value"}]}}'


@app.command("submit")
@command
def submit(
    file: Annotated[Path, typer.Argument(metavar="FILE.json", help=f"The workflow as JSON (`-` for stdin), e.g. "
                                                                   f"{EXAMPLE}")],
    wait_s: Annotated[float | None, typer.Option("--wait-s", "-w", min=0,
                                                 help="Wait up to this many seconds for it to end; print it.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate every job of the workflow, enqueue it all at once (or nothing), and print its id."""
    raw = typer.get_text_stream("stdin").read(MAX_FILE_BYTES + 1) if str(file) == "-" else _read(file)
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidRequest(f"{file} is over {MAX_FILE_BYTES:,} bytes; split the workflow")
    try:
        body = json.loads(raw)
        request = WorkflowRequest.model_validate(body if "workflow" in body else {"workflow": body})
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{file} is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    except (ValidationError, TypeError) as exc:
        if isinstance(exc, TypeError):
            raise InvalidRequest(f"{file} must hold a JSON object, e.g. {EXAMPLE}") from exc
        raise invalid(exc, "workflow") from exc
    with open_client() as client:
        submitted = client.submit_workflow(request)
        if wait_s is None:
            print_json(submitted) if json_output else print(submitted.id)
            return
        note(f"workflow {submitted.id}: {len(submitted.jobs)} jobs; waiting up to {wait_s:g}s")
        raise typer.Exit(_show(client.workflow(submitted.id, wait_s=wait_s), json_output))


@app.command("status")
@command
def status(
    workflow_id: Annotated[str, typer.Argument(metavar="ID")],
    wait_s: Annotated[float, typer.Option("--wait-s", "-w", min=0, help="Wait up to this long for it to end.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the workflow (jobs and results) as JSON.")] = False,
) -> None:
    """Every job's status and the workflow's result, in one call (exit 1 failed or canceled, 7 not ended yet)."""
    with open_client() as client:
        raise typer.Exit(_show(client.workflow(workflow_id, wait_s=wait_s), json_output))


@app.command("cancel")
@command
def cancel(
    workflow_id: Annotated[str, typer.Argument(metavar="ID")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the workflow as JSON after the request.")] = False,
) -> None:
    """Cancel every job of the workflow that has not ended (running ones are interrupted; exit 5 if all ended)."""
    with open_client() as client:
        info = client.cancel_workflow(workflow_id)
    if json_output:
        print_json(info)
    else:
        console.print(f"workflow {workflow_id}: {_counts(info)}", highlight=False)


def _read(file: Path) -> str:
    try:
        with file.open() as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {file}: {exc.strerror}") from exc


def _counts(info: WorkflowInfo) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(info.counts.items()))


def _show(info: WorkflowInfo, json_output: bool) -> int:
    code = EXIT_OK if info.status == JobStatus.FINISHED else EXIT_FAILED if info.ready else EXIT_NOT_READY
    if json_output:
        print_json(info)
        return code
    table = Table("job", "task", "status", "worker process", "error", box=None)
    for job in info.jobs:
        table.add_row(esc(job.id), esc(job.task or "-"), styled_status(job.status), esc(job.worker or "-"),
                      esc(job.error or ""))
    console.print(table)
    console.print(f"workflow {info.id}: {styled_status(info.status)} ({_counts(info)})", highlight=False)
    if info.ready:
        print_json(info.result)
    return code
