"""One job at a time: `ferry submit`, `status`, `result`, `cancel`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from services.admin.common import (
    command,
    console,
    err_console,
    esc,
    fail,
    invalid,
    note,
    open_client,
    print_json,
    styled_status,
)
from shared.client import Client
from shared.errors import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_NOT_READY, EXIT_OK, InvalidRequest
from shared.models import Dependency, JobInfo, JobRequest, JobResult, JobStatus

OBJECT_ARG_PREFIX = "@obj:"  # `--arg data=@obj:<id>` passes a stored object by id

# Options every command that enqueues a task shares (`ferry submit`, `ferry schedules add`).
ArgsJson = Annotated[
    str | None,
    typer.Option("--args", metavar="JSON", help="All arguments as one JSON object; --arg values override its keys."),
]
TargetQueue = Annotated[str | None, typer.Option("--queue", "-q", help="Queue (default: FERRY_DEFAULT_QUEUE).")]


def parse_args(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    """Task args from `--args '{...}'` and `--arg k=v` (v as JSON when it parses, else the string); --arg wins."""
    args: dict[str, Any] = {}
    if args_json is not None:
        try:
            args = json.loads(args_json)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"--args is not valid JSON ({exc.msg} at character {exc.pos})") from exc
        if not isinstance(args, dict):
            raise InvalidRequest(f"--args must be a JSON object like '{{\"value\": 1}}', not a {type(args).__name__}")
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidRequest(f"--arg {pair!r}: write it as NAME=VALUE, e.g. --arg n=3 or --arg text=hello")
        try:
            args[name] = json.loads(raw)
        except json.JSONDecodeError:
            args[name] = raw
    return args


def parse_meta(meta_json: str | None) -> dict[str, Any] | None:
    """`--meta '{...}'` as a dict; one clear line when it is not a JSON object."""
    if meta_json is None:
        return None
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"--meta is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(meta, dict):
        raise InvalidRequest(f"--meta must be a JSON object like '{{\"customer\": \"acme\"}}', not a "
                             f"{type(meta).__name__}")
    return meta


def resolve_objects(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    """Replace `@obj:<id>` values by the stored object's reference (ObjectNotFound if it does not exist)."""
    resolved = {}
    for name, value in args.items():
        if isinstance(value, str) and value.startswith(OBJECT_ARG_PREFIX):
            value = client.objects.ref(value[len(OBJECT_ARG_PREFIX) :].strip()).model_dump(mode="json")
        resolved[name] = value
    return resolved


@command
def submit(
    task: Annotated[str, typer.Argument(help="Registered task name (see `ferry tasks`).")],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", "-a", metavar="NAME=VALUE",
            help=("A task argument; VALUE is JSON when it parses (3, [1,2], true), else a string; @obj:ID passes a "
                  "stored object.")),
    ] = None,
    args_json: ArgsJson = None,
    queue: TargetQueue = None,
    timeout_s: Annotated[
        int | None,
        typer.Option("--timeout-s", min=1,
            help="Seconds the job may run before it is interrupted (default: FERRY_JOB_TIMEOUT_S)."),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option("--retries", min=0, help="Extra attempts after a failure (default: FERRY_DEFAULT_RETRIES)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key",
                     help=("Submitting the same key and job again returns the first job; the same key with "
                  "other args is a conflict (exit 5); a key is given back when its job fails for good or is "
                  "canceled.")),
    ] = None,
    wait_s: Annotated[
        float | None,
        typer.Option("--wait-s", "-w", min=0, help="Wait up to this many seconds for the result and print it."),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print JSON: the submission, or the result with --wait-s."),
    ] = False,
    allow_unserved: Annotated[
        bool,
        typer.Option("--allow-unserved",
            help="Queue it even if no live node serves the task on that queue (it waits for one)."),
    ] = False,
    delay_s: Annotated[
        float | None,
        typer.Option("--delay-s", min=0,
            help="Run it no earlier than this many seconds from now (it waits as `scheduled`; see `ferry status`)."),
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option("--run-at", metavar="ISO-8601",
            help="Run it no earlier than this moment, with a zone, e.g. 2026-11-29T21:00:00Z (not with --delay-s)."),
    ] = None,
    retry_delay_s: Annotated[
        float | None,
        typer.Option("--retry-delay-s", min=0,
            help="Wait this long before a retry (exponential: before the first one). Default: the task's, else 0."),
    ] = None,
    retry_backoff: Annotated[
        str | None,
        typer.Option("--retry-backoff", metavar="fixed|exponential",
            help="fixed: every wait is --retry-delay-s; exponential: it doubles after each retry."),
    ] = None,
    retry_max_delay_s: Annotated[
        float | None, typer.Option("--retry-max-delay-s", min=0, help="Cap on any one wait between attempts."),
    ] = None,
    retry_jitter: Annotated[
        float | None,
        typer.Option("--retry-jitter", min=0, max=1,
            help="Fraction taken off each wait at random (0.5: a wait d becomes 0.5d to d)."),
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", metavar="JOB_ID[:run]",
            help=("Wait for this job to end first (repeatable). If it fails, this one fails at once; "
                  "with the suffix :run it runs anyway.")),
    ] = None,
    limit_key: Annotated[
        str | None,
        typer.Option("--limit-key", help="The key jobs sharing --concurrency-limit / --rate-limit have in common "
                     "(e.g. a customer id)."),
    ] = None,
    concurrency_limit: Annotated[
        int | None,
        typer.Option("--concurrency-limit", help="At most this many jobs with this --limit-key run at once, "
                     "cluster-wide; the others wait in Redis (not in a worker)."),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option("--rate-limit", metavar="STARTS/PERIOD",
                     help="At most STARTS jobs with this --limit-key start per PERIOD, e.g. 100/60s, 5/s."),
    ] = None,
    result_ttl_s: Annotated[
        int | None,
        typer.Option("--result-ttl-s", min=1,
            help="Seconds the finished job and its result are kept (default: FERRY_RESULT_TTL_S)."),
    ] = None,
    failure_ttl_s: Annotated[
        int | None,
        typer.Option("--failure-ttl-s", min=1,
            help="Seconds a failed or canceled job is kept (default: FERRY_FAILURE_TTL_S)."),
    ] = None,
    meta_json: Annotated[
        str | None,
        typer.Option("--meta", metavar="JSON",
            help="A small JSON object kept with the job (RQ's `meta`; at most 4096 bytes)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="A label to list jobs by (`ferry jobs --tag`); repeat for more."),
    ] = None,
) -> None:
    """Submit a job and print its id; with --wait-s, print its result (exit 1: failed or canceled; 7: not ended)."""
    with open_client() as client:
        args = resolve_objects(client, parse_args(arg or [], args_json))
        try:
            request = JobRequest(task=task, args=args, queue=queue, timeout_s=timeout_s, retries=retries,
                                 idempotency_key=idempotency_key, allow_unserved=allow_unserved, delay_s=delay_s,
                                 run_at=run_at,  # type: ignore[arg-type]  # pydantic parses the ISO-8601 text
                                 retry_delay_s=retry_delay_s, retry_backoff=retry_backoff,  # type: ignore[arg-type]
                                 retry_max_delay_s=retry_max_delay_s, retry_jitter=retry_jitter,
                                 depends_on=[_dependency(d) for d in depends_on or []],
                                 limit_key=limit_key, concurrency_limit=concurrency_limit, rate_limit=rate_limit,
                                 result_ttl_s=result_ttl_s, failure_ttl_s=failure_ttl_s,
                                 meta=parse_meta(meta_json), tags=tag or [])
        except ValidationError as exc:
            raise invalid(exc, "job") from exc
        submitted = client.submit_request(request)
        if wait_s is None:
            if json_output:
                print_json(submitted)
            else:
                print(submitted.id)
                if submitted.duplicate:
                    status = _status_text(submitted.status)
                    note(f"idempotency key {idempotency_key!r} matched this earlier job ({status})")
            return
        if json_output:
            raise typer.Exit(show_result(client.result(submitted.id, wait_s=wait_s), json_output, waited_s=wait_s))
        note(f"job {submitted.id} submitted to queue {submitted.queue}; waiting up to {wait_s:g}s")
        raise typer.Exit(show_result(wait_showing_progress(client, submitted.id, wait_s), False, waited_s=wait_s))


@command
def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Show a job: task, queue, status, attempts, times, worker process, error."""
    with open_client() as client:
        info = client.status(job_id)
        if json_output:
            print_json(info)
            return
        console.print(job_table(info))
        if info.status == JobStatus.FAILED:
            trace = client.jobs.traceback(job_id)
            if trace and trace.strip() != (info.error or "").strip():
                console.print("[bold]traceback[/bold]")
                console.print(trace.rstrip(), highlight=False, markup=False)


@command
def result(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    wait_s: Annotated[
        float,
        typer.Option("--wait-s", "-w", min=0, help="Wait up to this many seconds for the job to end."),
    ] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Print a job's result (exit 1 if it failed or was canceled, 7 if it has not ended yet)."""
    with open_client() as client:
        res = client.result(job_id, wait_s=wait_s) if json_output else wait_showing_progress(client, job_id, wait_s)
        raise typer.Exit(show_result(res, json_output, waited_s=wait_s))


@command
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the job as JSON after the request.")] = False,
) -> None:
    """Cancel a queued job, or interrupt a started one (exit 5 if it already ended)."""
    with open_client() as client:
        info = client.cancel(job_id)
    if json_output:
        print_json(info)
    elif info.status == JobStatus.CANCELED:
        console.print(f"job {job_id} canceled", highlight=False)
    else:
        console.print(f"job {job_id} is started; its worker process was told to stop it "
                      f"(`ferry status {job_id}` shows when it is canceled)", highlight=False)


def progress_text(info: JobInfo) -> str | None:
    """`40% step 4 of 10` (and its data as JSON), or None when the job reported no progress."""
    if info.progress is None:
        return None
    parts = [f"{info.progress.fraction:.0%}", info.progress.message or ""]
    if info.progress.data is not None:
        parts.append(json.dumps(info.progress.data))
    return " ".join(p for p in parts if p)


def wait_showing_progress(client: Client, job_id: str, wait_s: float) -> JobResult:
    """Wait up to `wait_s` for the job to end, then its result; once the job reports progress, a progress bar on
    stderr (live on a terminal; elsewhere its last state, printed once). A job that reports none shows nothing."""
    res = client.result(job_id)
    if res.ready or wait_s <= 0:
        return res
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[note]}"))
    bar = Progress(*columns, console=err_console)
    shown = None
    try:
        for info in client.watch(job_id, wait_s):
            if info.progress is None:
                continue
            if shown is None:
                bar.start()
                shown = bar.add_task("", total=1.0, note="")
            bar.update(shown, completed=info.progress.fraction, description=_status_text(info.status),
                       note=esc(info.progress.message or ""))
    finally:
        if shown is not None:
            bar.stop()
    return client.result(job_id)


def show_result(res: JobResult, json_output: bool, waited_s: float = 0) -> int:
    """Print a result and return the exit code: 0 finished, 1 failed or canceled, 4 result expired, 7 not ended yet."""
    code = result_exit_code(res)
    if json_output:
        print_json(res)
        return code
    if code == EXIT_OK:
        ref = res.object_ref()
        if ref is None:
            print_json(res.value)
        else:
            shape = "x".join(str(n) for n in ref.shape) or "scalar"
            print(f"object {ref.id} ({ref.kind.value}, {ref.dtype}, shape {shape}, {ref.nbytes} bytes)")
            note(f"the result is a stored object; fetch it with: ferry objects get {ref.id} -o result.npy")
        return code
    if code == EXIT_NOT_READY:
        after = f" after waiting {waited_s:g}s" if waited_s else ""
        fail(f"job {res.id} is still {_status(res)}{after}; try `ferry result {res.id} --wait-s 30`",
             EXIT_NOT_READY, style="yellow", prefix="not ready: ")
    if code == EXIT_NOT_FOUND:
        fail(f"job {res.id} finished but its result has expired (FERRY_RESULT_TTL_S)", code)
    fail(f"job {res.id} {_status(res)}: {res.error or 'no error recorded'}", code)


def result_exit_code(res: JobResult) -> int:
    status = JobStatus(res.status) if res.status in JobStatus._value2member_map_ else None
    if res.ready:
        return EXIT_OK if status is JobStatus.FINISHED else EXIT_FAILED
    if status is JobStatus.FINISHED:
        return EXIT_NOT_FOUND
    if status in (JobStatus.FAILED, JobStatus.CANCELED):
        return EXIT_FAILED
    return EXIT_NOT_READY


def job_table(info: JobInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("id", info.id), ("task", info.task), ("queue", info.queue), ("status", styled_status(info.status)),
        ("attempts", str(info.attempts)), ("retries left", _text(info.retries_left)),
        ("timeout", f"{info.timeout_s}s" if info.timeout_s else "-"),
        ("created", _when(info.created_at)), ("enqueued", _when(info.enqueued_at)), ("started", _when(info.started_at)),
        ("ended", _when(info.ended_at)), ("worker process", info.worker), ("error", info.error),
        ("due", _when(info.due_at)),
        *((f"attempt {e.attempt} error", f"{e.error} (at {_when(e.failed_at)})") for e in info.attempt_errors),
        ("waiting for", info.waiting_for),
        ("tags", ", ".join(info.tags)), ("meta", json.dumps(info.meta) if info.meta else None),
        ("progress", progress_text(info)),
    ]
    for name, value in rows:
        if value not in (None, ""):
            grid.add_row(name, value if name == "status" else esc(value))
    return grid


def _dependency(text: str) -> Dependency:
    job_id, _, policy = text.partition(":")
    return Dependency(id=job_id, on_failure="run" if policy == "run" else "fail")


def _status_text(status: JobStatus | str) -> str:
    return status.value if isinstance(status, JobStatus) else str(status)


def _status(res: JobResult) -> str:
    return _status_text(res.status)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _when(moment: Any) -> str | None:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else None
